"""`migval db rollup` as a subprocess: closed periods are stored once, re-runs write
nothing, and the open period is never stored."""

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from persistence.database import DatabaseManager
from tests.operations.conftest import Rows
from tests.operations.test_cli_db import METRICS, explain, run_cli


async def test_rollup_command_materializes_closed_periods_idempotently(
    db: DatabaseManager, database_url: str
) -> None:
    rows = Rows()
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    old = today - timedelta(days=3)
    rows.session(old, status="completed")
    rows.session(old, status="failed")
    rows.session(today)  # the open day: computed live, never stored
    await rows.write(db)

    first = run_cli("db", "rollup", "--json", database_url=database_url)
    assert first.returncode == 0, explain(first)
    assert json.loads(first.stdout)["written"] >= 1

    async with db.read_session() as s:
        stored = (
            await s.execute(
                sa.select(
                    METRICS.c.metric_date,
                    METRICS.c.total_sessions,
                    METRICS.c.completed_sessions,
                    METRICS.c.failed_sessions,
                ).where(METRICS.c.metric_period == "daily")
            )
        ).all()
    assert [(r.total_sessions, r.completed_sessions, r.failed_sessions) for r in stored] == [
        (2, 1, 1)
    ]
    assert stored[0].metric_date.date() == old.date()

    again = run_cli("db", "rollup", database_url=database_url)
    assert again.returncode == 0, explain(again)
    assert "rollup: 0 rows written" in again.stdout


def test_rollup_command_rejects_a_negative_window(database_url: str) -> None:
    result = run_cli("db", "rollup", "--days", "-1", database_url=database_url)
    assert result.returncode == 2, explain(result)


async def test_maintenance_never_shrinks_what_cleanup_touched(
    db: DatabaseManager, database_url: str
) -> None:
    """Nightly `migval maintenance` (rollup, then cleanup) and a later `db rollup
    --full`: a day holding a deleted row (the late result of a session past the
    retention) keeps the figures stored before the deletion; it used to be recomputed
    from what was left."""
    rows = Rows()
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    expired = rows.session(noon - timedelta(days=31), status="completed")
    rows.result(expired, noon - timedelta(days=29), "approved", 0.9)  # deleted with it
    rows.session(noon - timedelta(days=29), status="failed")  # kept: the day is not emptied
    await rows.write(db)

    async def that_day() -> tuple[int, int]:
        async with db.read_session() as s:
            found = await s.execute(
                sa.select(METRICS.c.metric_date, METRICS.c.total_sessions, METRICS.c.approved_count)
                .where(METRICS.c.metric_period == "daily")
                .order_by(METRICS.c.metric_date)
            )
            day = (noon - timedelta(days=29)).date()
            (row,) = [r for r in found if r.metric_date.date() == day]
            return row.total_sessions, row.approved_count

    rolled = run_cli("db", "rollup", "--full", database_url=database_url)
    assert rolled.returncode == 0, explain(rolled)
    assert await that_day() == (1, 1)

    nightly = run_cli("maintenance", "--days", "30", database_url=database_url)
    assert nightly.returncode == 0, explain(nightly)
    assert "deleted 1 sessions, 1 results" in nightly.stdout
    full = run_cli("db", "rollup", "--full", database_url=database_url)
    assert full.returncode == 0, explain(full)
    assert "kept as stored before" in full.stdout
    assert "rollup: 0 rows written" in full.stdout
    assert await that_day() == (1, 1)
