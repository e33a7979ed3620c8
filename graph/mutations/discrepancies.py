"""Resolving and reopening discrepancies (optimistic concurrency via expectedVersion)."""

import strawberry

from graph.context import Context
from graph.errors import UserError
from graph.ids import expect_global_id
from graph.mutations.common import (
    IDEMPOTENCY_KEY_DESCRIPTION,
    REPLAYED_DESCRIPTION,
    attempt,
    idempotency_request,
    replayed,
)
from graph.permissions import IsWriter
from graph.types.common import optional as _f
from graph.types.discrepancy import Discrepancy
from persistence.idempotency import IdempotencyRequest
from persistence.models import ValidationDiscrepancy
from persistence.records import Record
from persistence.services import DiscrepancyService

Info = strawberry.Info[Context, None]


@strawberry.input(description="Resolve one discrepancy.")
class ResolveDiscrepancyInput:
    id: strawberry.ID = strawberry.field(description="Global ID of the discrepancy.")
    resolved_by: str = strawberry.field(description="Who resolves it (max 255 chars).")
    notes: str | None = _f("Why / how it was resolved.")
    expected_version: int | None = _f(
        "Fail with STALE_VERSION unless the discrepancy is at this version."
    )
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.input(description="Reopen one resolved discrepancy.")
class ReopenDiscrepancyInput:
    id: strawberry.ID = strawberry.field(description="Global ID of the discrepancy.")
    reopened_by: str = strawberry.field(description="Who reopens it (max 255 chars).")
    notes: str | None = _f("Why it is reopened.")
    expected_version: int | None = _f(
        "Fail with STALE_VERSION unless the discrepancy is at this version."
    )
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.input(description="Resolve many discrepancies at once (all or nothing).")
class ResolveDiscrepanciesInput:
    ids: list[strawberry.ID] = strawberry.field(description="Global IDs (1..1000).")
    resolved_by: str = strawberry.field(description="Who resolves them (max 255 chars).")
    notes: str | None = _f("Why / how they were resolved.")
    idempotency_key: str | None = _f(IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.type(description="Result of resolveDiscrepancy / reopenDiscrepancy.")
class DiscrepancyPayload:
    discrepancy: Discrepancy | None = strawberry.field(
        description="The discrepancy after the change."
    )
    errors: list[UserError] = strawberry.field(description="Why nothing was written, if so.")
    replayed: bool = strawberry.field(default=False, description=REPLAYED_DESCRIPTION)


@strawberry.type(description="Result of resolveDiscrepancies.")
class ResolveDiscrepanciesPayload:
    discrepancies: list[Discrepancy] = strawberry.field(description="The discrepancies, resolved.")
    errors: list[UserError] = strawberry.field(description="Why nothing was written, if so.")
    replayed: bool = strawberry.field(default=False, description=REPLAYED_DESCRIPTION)


@strawberry.type
class DiscrepancyMutations:
    @strawberry.mutation(description="Mark a discrepancy resolved.", permission_classes=[IsWriter])
    async def resolve_discrepancy(
        self, info: Info, input: ResolveDiscrepancyInput
    ) -> DiscrepancyPayload:
        key = idempotency_request(info, input)

        async def run() -> ValidationDiscrepancy:
            did = expect_global_id(input.id, "Discrepancy")
            return await DiscrepancyService(info.context.db).resolve(
                did, input.resolved_by, input.notes, input.expected_version, key
            )

        return _payload(*await attempt(run()), key)

    @strawberry.mutation(
        description="Mark a discrepancy unresolved again.", permission_classes=[IsWriter]
    )
    async def reopen_discrepancy(
        self, info: Info, input: ReopenDiscrepancyInput
    ) -> DiscrepancyPayload:
        key = idempotency_request(info, input)

        async def run() -> ValidationDiscrepancy:
            did = expect_global_id(input.id, "Discrepancy")
            return await DiscrepancyService(info.context.db).reopen(
                did, input.reopened_by, input.notes, input.expected_version, key
            )

        return _payload(*await attempt(run()), key)

    @strawberry.mutation(
        description="Resolve many discrepancies in one transaction.", permission_classes=[IsWriter]
    )
    async def resolve_discrepancies(
        self, info: Info, input: ResolveDiscrepanciesInput
    ) -> ResolveDiscrepanciesPayload:
        key = idempotency_request(info, input)

        async def run() -> list[Record]:
            ids = [expect_global_id(g, "Discrepancy", f"ids[{i}]") for i, g in enumerate(input.ids)]
            return await DiscrepancyService(info.context.db).resolve_many(
                ids, input.resolved_by, input.notes, key
            )

        rows, errors = await attempt(run())
        return ResolveDiscrepanciesPayload(
            discrepancies=[Discrepancy.from_row(r) for r in rows or []],
            errors=errors,
            replayed=replayed(key, errors),
        )


def _payload(
    row: ValidationDiscrepancy | None, errors: list[UserError], key: IdempotencyRequest | None
) -> DiscrepancyPayload:
    return DiscrepancyPayload(
        discrepancy=None if row is None else Discrepancy.from_row(row),
        errors=errors,
        replayed=replayed(key, errors),
    )
