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
