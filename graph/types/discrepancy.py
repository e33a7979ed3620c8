"""Discrepancy: one difference between source and target, tracked until resolved."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from graph.context import Context
from graph.types.common import JSON, FromRow, Node, SeverityLevel, desc

if TYPE_CHECKING:
    from graph.types.result import ValidationResult
    from graph.types.session import ValidationSession

Info = strawberry.Info[Context, None]
SessionRef = Annotated["ValidationSession", strawberry.lazy("graph.types.session")]
ResultRef = Annotated["ValidationResult", strawberry.lazy("graph.types.result")]


@strawberry.type(description="A difference found between source and target.")
class Discrepancy(Node, FromRow):
    database_id: int = desc("Database primary key.")
    session_id: strawberry.Private[int]
    result_id: strawberry.Private[int | None]
    discrepancy_type: str = desc("Kind of difference (e.g. missing_field).")
    severity: SeverityLevel = desc("How serious it is.")
    description: str = desc("What differs.")
    source_element: str | None = desc("The element on the source side.")
    target_element: str | None = desc("The element on the target side.")
    recommendation: str | None = desc("Suggested fix.")
    confidence: float = desc("Validator's confidence, 0..1.")
    component_type: str | None = desc("Kind of component concerned.")
    validation_context: JSON | None = desc("Free-form context.")
    is_resolved: bool = desc("Whether it has been resolved.")
    resolution_notes: str | None = desc("Notes of the last resolve or reopen.")
    resolved_at: datetime | None = desc("When it was resolved (UTC).")
    resolved_by: str | None = desc("Who resolved it.")
    version: int = desc("Incremented on every change; pass as expectedVersion for safe updates.")
    created_at: datetime = desc("When it was recorded (UTC).")
    updated_at: datetime = desc("When it last changed (UTC).")

    @strawberry.field(description="The session it belongs to.")
    async def session(self, info: Info) -> SessionRef:
        from graph.types.session import ValidationSession

        row = await info.context.loaders.session_by_id.load(self.session_id)
        if row is None:
            raise LookupError("session not found")
        return ValidationSession.from_row(row)

    @strawberry.field(
        description="The result it was recorded with (null if that result was deleted)."
    )
    async def result(self, info: Info) -> ResultRef | None:
        from graph.types.result import ValidationResult

        if self.result_id is None:
            return None
        row = await info.context.loaders.result_by_id.load(self.result_id)
        return None if row is None else ValidationResult.from_row(row)
