"""BehavioralTestResult: one scenario executed against source and target."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from graph.context import Context
from graph.types.common import JSON, ExecutionStatus, FromRow, Node, desc

if TYPE_CHECKING:
    from graph.types.session import ValidationSession

Info = strawberry.Info[Context, None]
SessionRef = Annotated["ValidationSession", strawberry.lazy("graph.types.session")]


@strawberry.type(description="One behavioral scenario run against source and target.")
class BehavioralTestResult(Node, FromRow):
    database_id: int = desc("Database primary key.")
    session_id: strawberry.Private[int]
    scenario_name: str = desc("Name of the scenario.")
    scenario_description: str | None = desc("What the scenario does.")
    source_url: str = desc("URL the scenario ran against on the source.")
    target_url: str = desc("URL the scenario ran against on the target.")
    execution_status: ExecutionStatus = desc("Outcome.")
    source_result: JSON | None = desc("What the source produced.")
    target_result: JSON | None = desc("What the target produced.")
    comparison_result: JSON | None = desc("Comparison of both.")
    source_screenshots: JSON | None = desc("Screenshots taken on the source.")
    target_screenshots: JSON | None = desc("Screenshots taken on the target.")
    interaction_log: JSON | None = desc("Log of the interactions performed.")
    source_load_time: float | None = desc("Source page load time, in seconds.")
    target_load_time: float | None = desc("Target page load time, in seconds.")
    execution_duration: float | None = desc("Duration of the scenario, in seconds.")
    error_message: str | None = desc("Error, if the scenario failed to run.")
    error_stack_trace: str | None = desc("Stack trace of that error.")
    created_at: datetime = desc("When it was recorded (UTC).")
    updated_at: datetime = desc("When it last changed (UTC).")

    @strawberry.field(description="The session it belongs to.")
    async def session(self, info: Info) -> SessionRef:
        from graph.types.session import ValidationSession

        row = await info.context.loaders.session_by_id.load(self.session_id)
        if row is None:
            raise LookupError("session not found")
        return ValidationSession.from_row(row)
