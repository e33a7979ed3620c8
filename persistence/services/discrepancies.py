"""Resolving and reopening discrepancies, with optimistic concurrency.

Each change appends its audit_log entry in the same transaction (persistence.audit):
the resolution fields and version before and after; one entry per resolve_many call
(ids and count). A resolve_many that changes nothing (all already resolved) appends
none. Every method takes an optional ``idempotency`` request
(persistence.idempotency): a replay of a keyed request writes nothing.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.audit import AuditOperation, EntityType, audit_entry, snapshot
from persistence.database import DatabaseManager
from persistence.errors import NotFound, StaleVersion, ValidationFailed
from persistence.idempotency import IdempotencyRequest, Outcome, replayed_row, run_idempotent
from persistence.models import ValidationDiscrepancy
from persistence.records import Record
from persistence.repositories import DiscrepancyRepository
from persistence.repositories.audit import AuditRepository
from persistence.validation import check_value

TABLE = ValidationDiscrepancy.__table__  # type: ignore[attr-defined]
MAX_BATCH = 1_000
# What the audit entry of a resolve or reopen shows of the row, before and after.
RESOLUTION_FIELDS = ("is_resolved", "resolved_by", "resolution_notes", "resolved_at", "version")
# Compare-and-set attempts (on version) before giving up on a racing writer.
_CAS_ATTEMPTS = 10


class DiscrepancyService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def resolve(
        self,
        discrepancy_id: int,
        resolved_by: str,
        notes: str | None = None,
        expected_version: int | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> ValidationDiscrepancy:
        """Mark resolved (by whom, when, why). With ``expected_version`` a concurrent
        change since the caller read the row raises StaleVersion."""
        _check_resolver(resolved_by, notes)
        return await self._set(
            AuditOperation.RESOLVE_DISCREPANCY,
            discrepancy_id,
            True,
            resolved_by,
            notes,
            datetime.now(UTC),
            expected_version,
            idempotency,
        )

    async def reopen(
        self,
        discrepancy_id: int,
        reopened_by: str,
        notes: str | None = None,
        expected_version: int | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> ValidationDiscrepancy:
        """Mark unresolved again; resolved_by/resolved_at are cleared and the notes
        record who reopened it and why."""
        _check_resolver(reopened_by, notes, field="reopened_by")
        reason = f"reopened by {reopened_by}" + (f": {notes}" if notes else "")
        return await self._set(
            AuditOperation.REOPEN_DISCREPANCY,
            discrepancy_id,
            False,
            None,
            reason,
            None,
            expected_version,
            idempotency,
        )

    async def resolve_many(
        self,
        ids: Sequence[int],
        resolved_by: str,
        notes: str | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> list[Record]:
        """Resolve every id in one transaction; an unknown id fails the whole call.
        Rows already resolved keep their original resolution."""
        _check_resolver(resolved_by, notes)
        unique = list(dict.fromkeys(ids))
        if not unique:
            raise ValidationFailed("ids", "must contain at least one id")
        if len(unique) > MAX_BATCH:
            raise ValidationFailed("ids", f"at most {MAX_BATCH} per call; got {len(unique)}")

        async def work(session: AsyncSession) -> list[Record]:
            repo = DiscrepancyRepository(session)
            existing = await repo.existing_ids(unique)
            for i, did in enumerate(ids):  # index into the caller's list
                if did not in existing:
                    raise NotFound(f"ids[{i}]", f"no discrepancy with id {did}")
            at = datetime.now(UTC)
            changed = await repo.set_resolution(
                unique,
                resolved=True,
                resolved_by=resolved_by,
                notes=notes,
                at=at,
                only_if_resolved=False,
            )
            if changed:
                changed_ids = sorted(row.id for row in changed if row.id is not None)
                await AuditRepository(session).append(
                    audit_entry(
                        AuditOperation.RESOLVE_DISCREPANCIES,
                        EntityType.DISCREPANCY,
                        None,
                        before={"ids": changed_ids, "is_resolved": False},
                        after={
                            "ids": changed_ids,
                            "count": len(changed_ids),
                            "requested_count": len(unique),
                            "is_resolved": True,
                            "resolved_by": resolved_by,
                            "resolution_notes": notes,
                            "resolved_at": at,
                        },
                    )
                )
            rows = await repo.list_by_ids(unique)
            return [row for row in rows if row is not None]

        return await run_idempotent(
            self.db,
            idempotency,
            work,
            outcome=lambda rows: Outcome.of(_MANY, [row.id for row in rows]),
            replay=_replay_many,
        )

    async def _set(
        self,
        operation: AuditOperation,
        discrepancy_id: int,
        resolved: bool,
        resolved_by: str | None,
        notes: str | None,
        at: datetime | None,
        expected_version: int | None,
        idempotency: IdempotencyRequest | None,
    ) -> ValidationDiscrepancy:
        if expected_version is not None and expected_version < 1:
            raise ValidationFailed("expected_version", "must be at least 1")

        async def work(session: AsyncSession) -> ValidationDiscrepancy:
            repo = DiscrepancyRepository(session)
            for _ in range(_CAS_ATTEMPTS):
                current = await repo.get(discrepancy_id)
                if current is None:
                    raise NotFound("id", f"no discrepancy with id {discrepancy_id}")
                if expected_version is not None and current.version != expected_version:
                    raise StaleVersion(
                        "expected_version",
                        f"discrepancy {discrepancy_id} is at version {current.version}, "
                        f"not {expected_version}",
                    )
                before = snapshot(current, RESOLUTION_FIELDS)
                version = current.version
                # Forget the loaded row so RETURNING (or the next read) loads it fresh.
                session.expunge(current)
                # Compare-and-set on the version just read: when it wins, ``before`` is
                # exactly the state it replaced.
                changed = await repo.set_resolution(
                    [discrepancy_id],
                    resolved=resolved,
                    resolved_by=resolved_by,
                    notes=notes,
                    at=at,
                    expected_version=version,
                )
                if changed:
                    await AuditRepository(session).append(
                        audit_entry(
                            operation,
                            EntityType.DISCREPANCY,
                            discrepancy_id,
                            before=before,
                            after=snapshot(changed[0], RESOLUTION_FIELDS),
                        )
                    )
                    return changed[0]
            raise StaleVersion(
                "expected_version",
                f"discrepancy {discrepancy_id} is changing concurrently; read it again and retry",
            )

        return await run_idempotent(
            self.db,
            idempotency,
            work,
            outcome=lambda row: Outcome.of(_ONE, [row.id]),
            replay=_replay_one,
        )


# Stored outcomes (persistence.idempotency.Outcome.result_type) of the methods above.
_ONE = "discrepancy"
_MANY = "discrepancies"


async def _replay_one(session: AsyncSession, stored: Outcome) -> ValidationDiscrepancy:
    return replayed_row(await DiscrepancyRepository(session).get(stored.result_ids[0]))


async def _replay_many(session: AsyncSession, stored: Outcome) -> list[Record]:
    rows = await DiscrepancyRepository(session).list_by_ids(stored.result_ids)
    return [replayed_row(row) for row in rows]


def _check_resolver(who: str, notes: str | None, field: str = "resolved_by") -> None:
    if not who.strip():
        raise ValidationFailed(field, "must not be empty")
    check_value(TABLE.c.resolved_by, who, field)
    check_value(TABLE.c.resolution_notes, notes, "notes")
