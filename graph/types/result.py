"""ValidationResult: the verdict and fidelity score of one validation pass."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from graph.context import Context
from graph.types.common import JSON, FromRow, Node, OverallStatus, ResultType, desc

if TYPE_CHECKING:
    from graph.types.discrepancy import Discrepancy
    from graph.types.session import ValidationSession

Info = strawberry.Info[Context, None]
SessionRef = Annotated["ValidationSession", strawberry.lazy("graph.types.session")]
DiscrepancyRef = Annotated["Discrepancy", strawberry.lazy("graph.types.discrepancy")]


@strawberry.type(description="Outcome of one validation pass over a session.")
class ValidationResult(Node, FromRow):
    database_id: int = desc("Database primary key.")
    session_id: strawberry.Private[int]
    overall_status: OverallStatus = desc("Verdict.")
    fidelity_score: float = desc("How faithful the target is to the source, 0..1.")
    summary: str = desc("Human-readable summary.")
    source_representation: JSON | None = desc("Analysed model of the source.")
    target_representation: JSON | None = desc("Analysed model of the target.")
    execution_time: float | None = desc("Processing time of this pass, in seconds.")
    result_metadata: JSON | None = desc("Free-form metadata.")
    result_type: ResultType = desc("How the result was produced.")
    created_at: datetime = desc("When the result was recorded (UTC).")
    updated_at: datetime = desc("When the result last changed (UTC).")

    @strawberry.field(description="The session this result belongs to.")
    async def session(self, info: Info) -> SessionRef:
        from graph.types.session import ValidationSession

        row = await info.context.loaders.session_by_id.load(self.session_id)
        if row is None:  # cascade makes this impossible short of a concurrent delete
            raise LookupError("session not found")
        return ValidationSession.from_row(row)

    @strawberry.field(description="Discrepancies recorded with this result, oldest first.")
    async def discrepancies(self, info: Info) -> list[DiscrepancyRef]:
        from graph.types.discrepancy import Discrepancy

        rows = await info.context.loaders.discrepancies_by_result_id.load(self.database_id)
        return [Discrepancy.from_row(r) for r in rows]
