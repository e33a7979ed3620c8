"""Recording a validation result with its discrepancies, all or nothing."""

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.audit import AuditOperation, EntityType, audit_entry, snapshot
from persistence.database import DatabaseManager
from persistence.errors import NotFound, ValidationFailed
from persistence.idempotency import IdempotencyRequest, Outcome, replayed_row, run_idempotent
from persistence.models import ValidationDiscrepancy, ValidationResult
from persistence.records import Record
from persistence.repositories import DiscrepancyRepository, ResultRepository, SessionRepository
from persistence.repositories.audit import AuditRepository
from persistence.repositories.discrepancies import RESOLUTION_STATE
from persistence.validation import check_row

RESULT_TABLE = ValidationResult.__table__  # type: ignore[attr-defined]
DISCREPANCY_TABLE = ValidationDiscrepancy.__table__  # type: ignore[attr-defined]
MAX_DISCREPANCIES = 10_000
# Set by the service, not by callers of record().
_LINKS = frozenset({"session_id", "result_id"})
# What a recorded discrepancy may not carry: the links and the resolution state.
_NOT_RECORDED = _LINKS | RESOLUTION_STATE


class ResultService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def record(
        self,
        session_id: int,
        result: Mapping[str, Any],
        discrepancies: Collection[Mapping[str, Any]] = (),
        idempotency: IdempotencyRequest | None = None,
    ) -> ValidationResult | Record:
        """Store a result and up to MAX_DISCREPANCIES discrepancies in one transaction:
        any failure (a bad value included) leaves nothing behind. The result and the
        session are checked first; each discrepancy as the insert takes it, so on
        PostgreSQL the checks of one part run while the server inserts the part
        before (COPY streams). The audit entry is part of the same transaction."""
        if len(discrepancies) > MAX_DISCREPANCIES:
            raise ValidationFailed(
                "discrepancies", f"at most {MAX_DISCREPANCIES} per result; got {len(discrepancies)}"
            )
        _reject(result, _LINKS, "")
        result_row = check_row(RESULT_TABLE, {**result, "session_id": session_id})

        def checked(result_id: int | None) -> Iterator[dict[str, Any]]:
            for i, item in enumerate(discrepancies):
                prefix = f"discrepancies[{i}]."
                _reject(item, _NOT_RECORDED, prefix)
                row = check_row(DISCREPANCY_TABLE, {**item, "session_id": session_id}, prefix)
                row["result_id"] = result_id
                yield row

        async def work(session: AsyncSession) -> ValidationResult | Record:
            if await SessionRepository(session).get(session_id) is None:
                raise NotFound("session_id", f"no session with id {session_id}")
            stored = await ResultRepository(session).add(result_row)
            # A new generator per attempt: a retried transaction checks again.
            rows = checked(stored.id)
            count = await DiscrepancyRepository(session).bulk_insert(rows) if discrepancies else 0
            # The result as stored and how many discrepancies came with it (not each
            # of up to 10,000 rows: they are in the database, linked by result_id).
            await AuditRepository(session).append(
                audit_entry(
                    AuditOperation.RECORD_RESULT,
                    EntityType.RESULT,
                    stored.id,
                    after={**snapshot(stored), "discrepancy_count": count},
                )
            )
            return stored

        return await run_idempotent(
            self.db,
            idempotency,
            work,
            outcome=lambda row: Outcome.of(_RESULT, [row.id]),
            replay=_replay,
        )


_RESULT = "result"  # the stored outcome's result_type (persistence.idempotency)


async def _replay(session: AsyncSession, stored: Outcome) -> Record:
    rows = await ResultRepository(session).list_by_ids(stored.result_ids[:1])
    return replayed_row(rows[0])


def _reject(values: Mapping[str, Any], names: frozenset[str], prefix: str) -> None:
    if names.isdisjoint(values):  # the usual case, once per discrepancy
        return
    for name in sorted(names & values.keys()):
        raise ValidationFailed(prefix + name, "is set by the server")
