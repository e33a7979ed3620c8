"""Recording validation results (with discrepancies) and behavioral test results."""

from collections.abc import Sequence

import strawberry

from graph.context import Context
from graph.errors import UserError
from graph.mutations.common import (
    IDEMPOTENCY_KEY_DESCRIPTION,
    REPLAYED_DESCRIPTION,
    InputValues,
    attempt,
    idempotency_request,
    input_values,
    replayed,
    session_db_id,
)
from graph.permissions import IsWriter
from graph.types.behavioral_test import BehavioralTestResult
from graph.types.common import (
    JSON,
    ExecutionStatus,
    OverallStatus,
    ResultType,
    SeverityLevel,
)
from graph.types.common import optional as _f
from graph.types.flat_input import flat_input
from graph.types.result import ValidationResult
from persistence.models import BehavioralTestResult as BehavioralTestRow
from persistence.models import ValidationResult as ValidationResultRow
from persistence.records import Record
from persistence.services import BehavioralTestService, ResultService

Info = strawberry.Info[Context, None]


@flat_input
@strawberry.input(description="One discrepancy of a recorded result.")
class DiscrepancyInput:
    discrepancy_type: str = strawberry.field(description="Kind of difference (max 100 chars).")
    severity: SeverityLevel = strawberry.field(description="How serious it is.")
    description: str = strawberry.field(description="What differs.")
    source_element: str | None = _f("Source element (max 500 chars).")
    target_element: str | None = _f("Target element (max 500 chars).")
    recommendation: str | None = _f("Suggested fix.")
    confidence: float | None = _f("Confidence 0..1 (default 1).")
    component_type: str | None = _f("Component kind (max 50 chars).")
    validation_context: JSON | None = _f("Free-form context.")


@flat_input
@strawberry.input(
    description="A validation result with up to 10,000 discrepancies, stored atomically."
)
class RecordValidationResultInput:
    session_id: strawberry.ID | None = _f("Global ID of the session (or give requestId).")
    request_id: str | None = _f("requestId of the session (or give sessionId).")
    overall_status: OverallStatus = strawberry.field(description="Verdict.")
    fidelity_score: float = strawberry.field(description="Fidelity 0..1.")
    summary: str = strawberry.field(description="Human-readable summary.")
    source_representation: JSON | None = _f("Analysed model of the source.")
    target_representation: JSON | None = _f("Analysed model of the target.")
    execution_time: float | None = _f("Processing time in seconds (>= 0).")
    result_metadata: JSON | None = _f("Free-form metadata.")
    result_type: ResultType | None = _f("How the result was produced (default STATIC).")
    discrepancies: list[DiscrepancyInput] | None = _f("Discrepancies found (max 10,000).")
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.type(description="Result of recordValidationResult.")
class RecordValidationResultPayload:
    result: ValidationResult | None = strawberry.field(description="The stored result.")
    errors: list[UserError] = strawberry.field(description="Why nothing was written, if so.")
    replayed: bool = strawberry.field(default=False, description=REPLAYED_DESCRIPTION)


@flat_input
@strawberry.input(description="One behavioral scenario outcome.")
class BehavioralTestInput:
    scenario_name: str = strawberry.field(description="Scenario name (max 255 chars).")
    source_url: str = strawberry.field(description="Source URL (max 1000 chars).")
    target_url: str = strawberry.field(description="Target URL (max 1000 chars).")
    execution_status: ExecutionStatus = strawberry.field(description="Outcome.")
    scenario_description: str | None = _f("What the scenario does.")
    source_result: JSON | None = _f("What the source produced.")
    target_result: JSON | None = _f("What the target produced.")
    comparison_result: JSON | None = _f("Comparison of both.")
    source_screenshots: JSON | None = _f("Source screenshots.")
    target_screenshots: JSON | None = _f("Target screenshots.")
    interaction_log: JSON | None = _f("Interactions performed.")
    source_load_time: float | None = _f("Source load time, seconds (>= 0).")
    target_load_time: float | None = _f("Target load time, seconds (>= 0).")
    execution_duration: float | None = _f("Duration, seconds (>= 0).")
    error_message: str | None = _f("Error, if the scenario failed to run.")
    error_stack_trace: str | None = _f("Stack trace of that error.")


@flat_input
@strawberry.input(description="Behavioral test results for one session, stored atomically.")
class RecordBehavioralTestResultsInput:
    session_id: strawberry.ID | None = _f("Global ID of the session (or give requestId).")
    request_id: str | None = _f("requestId of the session (or give sessionId).")
    tests: list[BehavioralTestInput] = strawberry.field(description="The results (1..1000).")
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.type(description="Result of recordBehavioralTestResults.")
class RecordBehavioralTestResultsPayload:
    tests: list[BehavioralTestResult] = strawberry.field(description="The stored results.")
    errors: list[UserError] = strawberry.field(description="Why nothing was written, if so.")
    replayed: bool = strawberry.field(default=False, description=REPLAYED_DESCRIPTION)


_SESSION_REF = frozenset({"session_id", "request_id"})


@strawberry.type
class ResultMutations:
    @strawberry.mutation(
        description="Record a result and its discrepancies, all or nothing.",
        permission_classes=[IsWriter],
    )
    async def record_validation_result(
        self, info: Info, input: RecordValidationResultInput
    ) -> RecordValidationResultPayload:
        key = idempotency_request(info, input)

        async def run() -> ValidationResultRow | Record:
            sid = await session_db_id(info.context, input.session_id, input.request_id)
            result = input_values(input, _SESSION_REF | {"discrepancies"})
            items = InputValues(input.discrepancies or ())
            return await ResultService(info.context.db).record(sid, result, items, key)

        row, errors = await attempt(run())
        result = None if row is None else ValidationResult.from_row(row)
        return RecordValidationResultPayload(
            result=result, errors=errors, replayed=replayed(key, errors)
        )

    @strawberry.mutation(
        description="Record behavioral test results, all or nothing.",
        permission_classes=[IsWriter],
    )
    async def record_behavioral_test_results(
        self, info: Info, input: RecordBehavioralTestResultsInput
    ) -> RecordBehavioralTestResultsPayload:
        key = idempotency_request(info, input)

        async def run() -> Sequence[BehavioralTestRow | Record]:
            sid = await session_db_id(info.context, input.session_id, input.request_id)
            tests = [input_values(t) for t in input.tests]
            return await BehavioralTestService(info.context.db).record(sid, tests, key)

        rows, errors = await attempt(run())
        tests = [BehavioralTestResult.from_row(r) for r in rows or []]
        return RecordBehavioralTestResultsPayload(
            tests=tests, errors=errors, replayed=replayed(key, errors)
        )
