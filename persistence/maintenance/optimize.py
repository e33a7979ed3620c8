"""``migval db optimize``: reclaim space and refresh planner statistics.

PostgreSQL: ``VACUUM (ANALYZE)`` per table. VACUUM cannot run inside a transaction
block, so it runs on an AUTOCOMMIT connection. SQLite: ``VACUUM`` (rewrites the file),
``ANALYZE``, ``PRAGMA optimize`` and ``PRAGMA wal_checkpoint(TRUNCATE)`` (empties the
WAL file), with no transaction open. Both are safe while the server runs: they wait
for locks (PostgreSQL VACUUM takes no lock that blocks reads or writes; SQLite's VACUUM
waits for busy_timeout for the write lock and fails rather than corrupt anything).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.maintenance.tables import TABLE_NAMES, unbounded


@dataclass(frozen=True, slots=True)
class OptimizeStep:
    statement: str
    seconds: float
    note: str | None = None


@dataclass(slots=True)
class OptimizeReport:
    dialect: str
    steps: list[OptimizeStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "steps": [
                {"statement": s.statement, "seconds": round(s.seconds, 3), "note": s.note}
                for s in self.steps
            ],
        }

    def summary(self) -> str:
        total = sum(s.seconds for s in self.steps)
        notes = [s.note for s in self.steps if s.note]
        tail = f" ({'; '.join(notes)})" if notes else ""
        return f"{len(self.steps)} statements in {total:.2f}s{tail}"


Progress = Callable[[OptimizeStep], None]


async def optimize(db: DatabaseManager, progress: Progress | None = None) -> OptimizeReport:
    report = OptimizeReport(db.dialect)
    # read_session: AUTOCOMMIT on PostgreSQL and no BEGIN on SQLite, which is exactly
    # what VACUUM needs on both (it refuses to run inside a transaction).
    async with db.read_session() as session, unbounded(session):
        if db.dialect == "postgresql":
            for table in TABLE_NAMES:
                await _run(session, f"VACUUM (ANALYZE) {table}", report, progress)
        else:
            await _run(session, "VACUUM", report, progress)
            await _run(session, "ANALYZE", report, progress)
            await _run(session, "PRAGMA optimize", report, progress)
            await _run(session, "PRAGMA wal_checkpoint(TRUNCATE)", report, progress)
    return report


async def _run(
    session: AsyncSession, statement: str, report: OptimizeReport, progress: Progress | None
) -> None:
    started = time.perf_counter()
    result = await session.execute(sa.text(statement))
    note = None
    if statement.startswith("PRAGMA wal_checkpoint"):
        busy, log_frames, checkpointed = result.one()
        if busy:
            note = (
                f"WAL checkpoint incomplete: another connection is reading "
                f"({checkpointed}/{log_frames} frames copied)"
            )
    step = OptimizeStep(statement, time.perf_counter() - started, note)
    report.steps.append(step)
    if progress is not None:
        progress(step)
