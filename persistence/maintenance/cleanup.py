"""``migval db cleanup``: retention. Sessions created more than N days ago are
deleted with their results, discrepancies and behavioral tests (ON DELETE CASCADE);
validation_metrics (the rollups that outlive the sessions) and audit_log are kept.

Deletion runs in batches of ``batch_size`` sessions, each batch one transaction that
also appends one audit_log entry (operation ``retentionCleanup``: the deleted session
ids and child counts), so an interrupted run keeps what it committed and simply
continues when run again. ``dry_run`` only counts.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.actor import current_actor
from persistence.audit import AuditEntry, AuditOperation, EntityType, RetentionMark
from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError
from persistence.maintenance.tables import SESSION_CHILDREN, SESSIONS, iso_utc, require_schema
from persistence.repositories.audit import AuditRepository
from persistence.repositories.metrics import MetricRepository
from persistence.settings import env_int

ENV_RETENTION_DAYS = "MIGVAL_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 36_500
DEFAULT_BATCH_SIZE = 500
AUDIT_OPERATION = AuditOperation.RETENTION_CLEANUP.value


@dataclass(slots=True)
class CleanupCounts:
    sessions: int = 0
    results: int = 0
    discrepancies: int = 0
    behavioral_tests: int = 0

    def add(self, other: "CleanupCounts") -> None:
        self.sessions += other.sessions
        self.results += other.results
        self.discrepancies += other.discrepancies
        self.behavioral_tests += other.behavioral_tests

    def as_dict(self) -> dict[str, int]:
        return {
            "sessions": self.sessions,
            "results": self.results,
            "discrepancies": self.discrepancies,
            "behavioral_tests": self.behavioral_tests,
        }

    def describe(self) -> str:
        return (
            f"{self.sessions} sessions, {self.results} results, "
            f"{self.discrepancies} discrepancies, {self.behavioral_tests} behavioral tests"
        )


@dataclass(slots=True)
class CleanupReport:
    days: int
    cutoff: datetime
    dry_run: bool
    counts: CleanupCounts = field(default_factory=CleanupCounts)
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "cutoff": iso_utc(self.cutoff),
            "dry_run": self.dry_run,
            "batches": self.batches,
            ("would_delete" if self.dry_run else "deleted"): self.counts.as_dict(),
        }

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{verb} {self.counts.describe()} (sessions created before "
            f"{iso_utc(self.cutoff)}, older than {self.days} days); "
            "validation_metrics and audit_log kept"
        )


Progress = Callable[[int, CleanupCounts, int], None]  # batch number, batch counts, total


def retention_days(env: Mapping[str, str] | None = None) -> int:
    """MIGVAL_RETENTION_DAYS (default 30); ConfigurationError naming it when malformed."""
    days = env_int(os.environ if env is None else env, ENV_RETENTION_DAYS, DEFAULT_RETENTION_DAYS)
    return check_days(days, ENV_RETENTION_DAYS)


def check_days(days: int, name: str = "--days") -> int:
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise ConfigurationError(name, f"must be between 1 and {MAX_RETENTION_DAYS}, got {days}")
    return days


async def cleanup(
    db: DatabaseManager,
    days: int,
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> CleanupReport:
    check_days(days)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    report = CleanupReport(days=days, cutoff=cutoff, dry_run=dry_run)
    expired = sa.select(SESSIONS.c.id).where(SESSIONS.c.created_at < cutoff)
    async with db.read_session() as session:
        await require_schema(session)
        if dry_run:
            report.counts = await _count(session, expired)
            return report
        total = await session.scalar(sa.select(sa.func.count()).select_from(expired.subquery()))

    async def one_batch(session: AsyncSession) -> CleanupCounts:
        # Not while a rollup runs: it must not aggregate rows this batch is deleting
        # under a watermark read before the batch (SQLite writers queue anyway).
        await MetricRepository(session).lock_for_rollup()
        ids = list((await session.scalars(expired.order_by(SESSIONS.c.id).limit(batch_size))).all())
        if not ids:
            return CleanupCounts()
        batch = sa.select(SESSIONS.c.id).where(SESSIONS.c.id.in_(ids))
        counts = await _count(session, batch)
        audit = AuditRepository(session)
        mark = await _moved_mark(session, batch, await audit.retention_mark())
        deleted = await session.execute(sa.delete(SESSIONS).where(SESSIONS.c.id.in_(ids)))
        counts.sessions = int(deleted.rowcount)  # type: ignore[attr-defined]
        who = current_actor()
        await audit.append(
            AuditEntry(
                operation=AUDIT_OPERATION,
                entity_type=EntityType.SESSION.value,
                entity_id=None,
                actor_name=who.name,
                actor_role=None if who.role is None else who.role.value,
                actor_token_id=who.token_id,
                before={"session_ids": ids, "child_counts": counts.as_dict()},
                # The mark: rollups never recompute the periods it covers (their
                # raw rows are incomplete; persistence.services.metrics).
                after={"retention_days": days, "cutoff": iso_utc(cutoff), **mark.values()},
            )
        )
        return counts

    while True:
        batch = await db.run_write(one_batch)
        if batch.sessions == 0:
            break
        report.batches += 1
        report.counts.add(batch)
        if progress is not None:
            progress(report.batches, batch, int(total or 0))
    return report


async def _moved_mark(
    session: AsyncSession, ids: sa.Select[Any], previous: RetentionMark | None
) -> RetentionMark:
    """``previous`` moved on by deleting the sessions selected by ``ids``: their newest
    created_at, and the days of their children created after that mark's day (a
    result recorded a week after its session: that day's figures lose it too)."""
    id_subquery = ids.scalar_subquery()
    newest = await session.scalar(
        sa.select(sa.func.max(SESSIONS.c.created_at)).where(SESSIONS.c.id.in_(id_subquery))
    )
    mark = (previous or RetentionMark(None)).after_deleting(newest)
    if mark.through is None:
        return mark
    next_day = datetime.combine(mark.through.astimezone(UTC).date(), time(), UTC) + timedelta(
        days=1
    )
    late = sa.union_all(
        *(
            sa.select(table.c.created_at).where(
                table.c.session_id.in_(id_subquery), table.c.created_at >= next_day
            )
            for table in SESSION_CHILDREN
        )
    )
    # created_at comes back as aware UTC datetimes on both databases (the column type).
    days = {moment.astimezone(UTC).date() for moment in (await session.scalars(late)).all()}
    return mark.after_deleting(None, days)


async def _count(session: AsyncSession, ids: sa.Select[Any]) -> CleanupCounts:
    """Sessions selected by ``ids`` and their children, in one statement."""
    id_subquery = ids.scalar_subquery()

    def children(table: sa.Table) -> sa.ScalarSelect[int]:
        return (
            sa.select(sa.func.count())
            .select_from(table)
            .where(table.c.session_id.in_(id_subquery))
            .scalar_subquery()
        )

    results, discrepancies, behavioral = (children(t) for t in SESSION_CHILDREN)
    stmt = sa.select(
        sa.select(sa.func.count()).select_from(ids.subquery()).scalar_subquery(),
        results,
        discrepancies,
        behavioral,
    )
    row = (await session.execute(stmt)).one()
    return CleanupCounts(*(int(v) for v in row))
