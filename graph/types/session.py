"""ValidationSession: one validation run of a source application against its target."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from graph.context import Context
from graph.loaders import ChildPageKey
from graph.types.common import (
    JSON,
    Connection,
    FromRow,
    InputType,
    Node,
    SessionStatus,
    TechnologyType,
    ValidationScope,
    connection_from_page,
    desc,
    row_id,
)
from graph.types.inputs import DiscrepancyFilterInput, to_discrepancy_filter
from graph.types.pagination import After, First, page_args
from persistence.filters import IdOrder

if TYPE_CHECKING:
    from graph.types.behavioral_test import BehavioralTestResult
    from graph.types.discrepancy import Discrepancy
    from graph.types.result import ValidationResult

Info = strawberry.Info[Context, None]
ResultRef = Annotated["ValidationResult", strawberry.lazy("graph.types.result")]
DiscrepancyRef = Annotated["Discrepancy", strawberry.lazy("graph.types.discrepancy")]
TestRef = Annotated["BehavioralTestResult", strawberry.lazy("graph.types.behavioral_test")]


_BY_ID = IdOrder()  # a session's discrepancies always page by id


def session_discrepancies_key(
    session_id: int, filter: DiscrepancyFilterInput | None, first: int, after: str | None
) -> ChildPageKey:
    """Loader key of ValidationSession.discrepancies (graph.plan uses it too)."""
    size, keyset = page_args(first, after)
    return ChildPageKey(session_id, to_discrepancy_filter(filter), _BY_ID, size, keyset)


@strawberry.type(
    description="One validation run comparing a source application with its migrated target."
)
class ValidationSession(Node, FromRow):
    database_id: int = desc("Database primary key.")
    request_id: str = desc(
        "Caller-chosen unique key of the run (natural key; idempotency key of create)."
    )
    status: SessionStatus = desc("Lifecycle state.")
    source_technology: TechnologyType = desc("Stack of the source application.")
    source_technology_version: str | None = desc("Version of the source stack.")
    source_framework_details: JSON | None = desc("Free-form details of the source framework.")
    target_technology: TechnologyType = desc("Stack of the target application.")
    target_technology_version: str | None = desc("Version of the target stack.")
    target_framework_details: JSON | None = desc("Free-form details of the target framework.")
    validation_scope: ValidationScope = desc("What is validated.")
    source_input_type: InputType = desc("Kind of input provided for the source.")
    source_files: JSON | None = desc("Source files (names, contents or references).")
    source_screenshots: JSON | None = desc("Source screenshots (references).")
    source_urls: JSON | None = desc("URLs of the running source application.")
    source_metadata: JSON | None = desc("Free-form metadata about the source input.")
    target_input_type: InputType = desc("Kind of input provided for the target.")
    target_files: JSON | None = desc("Target files (names, contents or references).")
    target_screenshots: JSON | None = desc("Target screenshots (references).")
    target_urls: JSON | None = desc("URLs of the running target application.")
    target_metadata: JSON | None = desc("Free-form metadata about the target input.")
    validation_scenarios: JSON | None = desc("Behavioral scenarios to run.")
    behavioral_timeout: int | None = desc("Timeout of behavioral testing, in seconds.")
    processing_log: JSON | None = desc("Log of the validator's processing steps.")
    execution_time: float | None = desc("Total processing time, in seconds.")
    session_metadata: JSON | None = desc("Free-form metadata about the run.")
    created_at: datetime = desc("When the session was created (UTC).")
    updated_at: datetime = desc("When the session last changed (UTC).")

    @strawberry.field(description="All results of this session, oldest first.")
    async def results(self, info: Info) -> list[ResultRef]:
        from graph.types.result import ValidationResult

        rows = await info.context.loaders.results_by_session_id.load(self.database_id)
        return [ValidationResult.from_row(r) for r in rows]

    @strawberry.field(description="The newest result of this session, if any.")
    async def latest_result(self, info: Info) -> ResultRef | None:
        from graph.types.result import ValidationResult

        row = await info.context.loaders.latest_result_by_session_id.load(self.database_id)
        return None if row is None else ValidationResult.from_row(row)

    @strawberry.field(description="Discrepancies of this session (paginated, oldest first).")
    async def discrepancies(
        self,
        info: Info,
        filter: Annotated[
            DiscrepancyFilterInput | None,
            strawberry.argument(description="Conditions discrepancies must meet."),
        ] = None,
        first: First = 20,
        after: After = None,
    ) -> Connection[DiscrepancyRef]:
        from graph.types.discrepancy import Discrepancy

        key = session_discrepancies_key(self.database_id, filter, first, after)
        page = await info.context.loaders.discrepancy_page_by_session.load(key)
        return connection_from_page(page, Discrepancy.from_row, row_id, after is not None)

    @strawberry.field(description="Behavioral test results of this session, oldest first.")
    async def behavioral_tests(self, info: Info) -> list[TestRef]:
        from graph.types.behavioral_test import BehavioralTestResult

        rows = await info.context.loaders.behavioral_tests_by_session_id.load(self.database_id)
        return [BehavioralTestResult.from_row(r) for r in rows]
