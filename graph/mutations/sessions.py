"""Session mutations: create (idempotent on requestId), status changes, delete."""

import strawberry

from graph.context import Context
from graph.errors import UserError
from graph.ids import expect_global_id, to_global_id
from graph.mutations.common import (
    IDEMPOTENCY_KEY_DESCRIPTION,
    REPLAYED_DESCRIPTION,
    attempt,
    idempotency_request,
    input_values,
    replayed,
    session_db_id,
)
from graph.permissions import IsAdmin, IsWriter
from graph.types.common import (
    JSON,
    InputType,
    SessionStatus,
    TechnologyType,
    ValidationScope,
)
from graph.types.common import optional as _f
from graph.types.session import ValidationSession
from persistence.services import SessionService

Info = strawberry.Info[Context, None]


@strawberry.input(
    description="A new validation session. Same requestId and same content returns the existing session."
)
class CreateValidationSessionInput:
    request_id: str = strawberry.field(
        description="Unique key chosen by the caller (max 255 chars)."
    )
    source_technology: TechnologyType = strawberry.field(description="Source stack.")
    target_technology: TechnologyType = strawberry.field(description="Target stack.")
    validation_scope: ValidationScope = strawberry.field(description="What is validated.")
    source_input_type: InputType = strawberry.field(description="Kind of source input.")
    target_input_type: InputType = strawberry.field(description="Kind of target input.")
    source_technology_version: str | None = _f("Source stack version (max 100 chars).")
    target_technology_version: str | None = _f("Target stack version (max 100 chars).")
    source_framework_details: JSON | None = _f("Source framework details.")
    target_framework_details: JSON | None = _f("Target framework details.")
    source_files: JSON | None = _f("Source files.")
    source_screenshots: JSON | None = _f("Source screenshots.")
    source_urls: JSON | None = _f("Source URLs.")
    source_metadata: JSON | None = _f("Source metadata.")
    target_files: JSON | None = _f("Target files.")
    target_screenshots: JSON | None = _f("Target screenshots.")
    target_urls: JSON | None = _f("Target URLs.")
    target_metadata: JSON | None = _f("Target metadata.")
    validation_scenarios: JSON | None = _f("Behavioral scenarios to run.")
    behavioral_timeout: int | None = _f("Behavioral timeout in seconds (default 300).")
    processing_log: JSON | None = _f("Processing log.")
    execution_time: float | None = _f("Processing time in seconds (>= 0).")
    session_metadata: JSON | None = _f("Free-form metadata.")
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.type(description="Result of createValidationSession.")
class CreateValidationSessionPayload:
    session: ValidationSession | None = strawberry.field(
        description="The session (new or existing)."
    )
    created: bool = strawberry.field(description="False when an identical session already existed.")
    errors: list[UserError] = strawberry.field(description="Why nothing was written, if so.")
    replayed: bool = strawberry.field(default=False, description=REPLAYED_DESCRIPTION)


@strawberry.input(description="Move a session to another status (allowed transitions only).")
class UpdateSessionStatusInput:
    session_id: strawberry.ID | None = _f("Global ID of the session (or give requestId).")
    request_id: str | None = _f("requestId of the session (or give sessionId).")
    status: SessionStatus = strawberry.field(description="The new status.")
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.type(description="Result of updateSessionStatus.")
class UpdateSessionStatusPayload:
    session: ValidationSession | None = strawberry.field(
        description="The session after the change."
    )
    errors: list[UserError] = strawberry.field(description="Why nothing was written, if so.")
    replayed: bool = strawberry.field(default=False, description=REPLAYED_DESCRIPTION)


@strawberry.input(description="Delete a session with its results, discrepancies and tests.")
class DeleteSessionInput:
    session_id: strawberry.ID | None = _f("Global ID of the session (or give requestId).")
    request_id: str | None = _f("requestId of the session (or give sessionId).")
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.type(description="Result of deleteSession.")
class DeleteSessionPayload:
    deleted_session_id: strawberry.ID | None = strawberry.field(
        description="Global ID of the deleted session."
    )
    errors: list[UserError] = strawberry.field(description="Why nothing was deleted, if so.")
    replayed: bool = strawberry.field(default=False, description=REPLAYED_DESCRIPTION)


@strawberry.type
class SessionMutations:
    @strawberry.mutation(
        description="Create a validation session; idempotent on requestId.",
        permission_classes=[IsWriter],
    )
    async def create_validation_session(
        self, info: Info, input: CreateValidationSessionInput
    ) -> CreateValidationSessionPayload:
        key = idempotency_request(info, input)
        outcome, errors = await attempt(
            SessionService(info.context.db).create(input_values(input), key)
        )
        if outcome is None:
            return CreateValidationSessionPayload(session=None, created=False, errors=errors)
        return CreateValidationSessionPayload(
            session=ValidationSession.from_row(outcome.session),
            created=outcome.created,
            errors=[],
            replayed=replayed(key, errors),
        )

    @strawberry.mutation(
        description="Change a session's status: PENDING -> PROCESSING -> COMPLETED | FAILED, or CANCELLED.",
        permission_classes=[IsWriter],
    )
    async def update_session_status(
        self, info: Info, input: UpdateSessionStatusInput
    ) -> UpdateSessionStatusPayload:
        key = idempotency_request(info, input)

        async def run() -> object:
            sid = await session_db_id(info.context, input.session_id, input.request_id)
            return await SessionService(info.context.db).update_status(sid, input.status, key)

        row, errors = await attempt(run())
        session = None if row is None else ValidationSession.from_row(row)
        return UpdateSessionStatusPayload(
            session=session, errors=errors, replayed=replayed(key, errors)
        )

    @strawberry.mutation(
        description="Delete a session and everything recorded for it.",
        permission_classes=[IsAdmin],
    )
    async def delete_session(self, info: Info, input: DeleteSessionInput) -> DeleteSessionPayload:
        key = idempotency_request(info, input)

        async def run() -> int:
            # The service resolves a requestId inside its transaction, so a keyed
            # retry replays the deletion although the session is gone.
            sid = (
                None
                if input.session_id is None
                else expect_global_id(input.session_id, "ValidationSession", "session_id")
            )
            return await SessionService(info.context.db).delete(
                sid, request_id=input.request_id, idempotency=key
            )

        sid, errors = await attempt(run())
        deleted = None if sid is None else strawberry.ID(to_global_id("ValidationSession", sid))
        return DeleteSessionPayload(
            deleted_session_id=deleted, errors=errors, replayed=replayed(key, errors)
        )


__all__ = ["SessionMutations"]
