"""Resolving and reopening discrepancies, with optimistic concurrency."""

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.errors import NotFound, StaleVersion, ValidationFailed
from persistence.models import ValidationDiscrepancy
from persistence.repositories import DiscrepancyRepository
from persistence.validation import check_value

TABLE = ValidationDiscrepancy.__table__  # type: ignore[attr-defined]
MAX_BATCH = 1_000


class DiscrepancyService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def resolve(
        self,
        discrepancy_id: int,
        resolved_by: str,
        notes: str | None = None,
        expected_version: int | None = None,
    ) -> ValidationDiscrepancy:
        """Mark resolved (by whom, when, why). With ``expected_version`` a concurrent
        change since the caller read the row raises StaleVersion."""
        _check_resolver(resolved_by, notes)
        return await self._set(
            discrepancy_id, True, resolved_by, notes, datetime.now(UTC), expected_version
        )

    async def reopen(
        self,
        discrepancy_id: int,
        reopened_by: str,
        notes: str | None = None,
        expected_version: int | None = None,
    ) -> ValidationDiscrepancy:
        """Mark unresolved again; resolved_by/resolved_at are cleared and the notes
        record who reopened it and why."""
        _check_resolver(reopened_by, notes)
        reason = f"reopened by {reopened_by}" + (f": {notes}" if notes else "")
        return await self._set(discrepancy_id, False, None, reason, None, expected_version)

    async def resolve_many(
        self, ids: Sequence[int], resolved_by: str, notes: str | None = None
    ) -> list[ValidationDiscrepancy]:
        """Resolve every id in one transaction; an unknown id fails the whole call.
        Rows already resolved keep their original resolution."""
        _check_resolver(resolved_by, notes)
        unique = list(dict.fromkeys(ids))
        if not unique:
            raise ValidationFailed("ids", "must contain at least one id")
        if len(unique) > MAX_BATCH:
            raise ValidationFailed("ids", f"at most {MAX_BATCH} per call; got {len(unique)}")

        async def work(session: AsyncSession) -> list[ValidationDiscrepancy]:
            repo = DiscrepancyRepository(session)
            existing = await repo.existing_ids(unique)
            for i, did in enumerate(ids):  # index into the caller's list
                if did not in existing:
                    raise NotFound(f"ids[{i}]", f"no discrepancy with id {did}")
            await repo.set_resolution(
                unique, resolved=True, resolved_by=resolved_by, notes=notes,
                at=datetime.now(UTC), only_if_resolved=False,
            )
            rows = await repo.list_by_ids(unique)
            return [row for row in rows if row is not None]

        return await self.db.run_write(work)

    async def _set(
        self,
        discrepancy_id: int,
        resolved: bool,
        resolved_by: str | None,
        notes: str | None,
        at: datetime | None,
        expected_version: int | None,
    ) -> ValidationDiscrepancy:
        if expected_version is not None and expected_version < 1:
            raise ValidationFailed("expected_version", "must be at least 1")

        async def work(session: AsyncSession) -> ValidationDiscrepancy:
            repo = DiscrepancyRepository(session)
            changed = await repo.set_resolution(
                [discrepancy_id], resolved=resolved, resolved_by=resolved_by, notes=notes,
                at=at, expected_version=expected_version,
            )
            if changed:
                return changed[0]
            current = await repo.get(discrepancy_id)
            if current is None:
                raise NotFound("id", f"no discrepancy with id {discrepancy_id}")
            raise StaleVersion(
                "expected_version",
                f"discrepancy {discrepancy_id} is at version {current.version}, "
                f"not {expected_version}",
            )

        return await self.db.run_write(work)


def _check_resolver(who: str, notes: str | None) -> None:
    if not who.strip():
        raise ValidationFailed("resolved_by", "must not be empty")
    check_value(TABLE.c.resolved_by, who, "resolved_by")
    check_value(TABLE.c.resolution_notes, notes, "notes")
