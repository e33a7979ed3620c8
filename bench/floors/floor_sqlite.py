"""Floor C: raw ASGI + sqlite3, the SQLite twin of floor B (one flat SELECT per
nesting level, assembled in Python, serialized with orjson or json).

One connection, queried synchronously on the event loop: no thread hop per statement
(migval's aiosqlite makes one), the least CPU a request can cost. Timestamps are
formatted by the SQL from the text SQLAlchemy stores ('YYYY-MM-DD HH:MM:SS.ffffff').

Run: uvicorn bench.floors.floor_sqlite:app  (BENCH_SQLITE_PATH=/path/to.db)
"""

import os
import sqlite3

from bench.floors.asgi import dumps, raw_app
from bench.floors.assemble import assemble, envelope
from bench.query import DISCREPANCIES_FIRST, SESSIONS_FIRST

_ISO = "replace(replace({0}, ' ', 'T'), '.000000', '') || '+00:00'"

SESSIONS_SQL = f"""
SELECT id, request_id, status, source_technology, target_technology,
       {_ISO.format("created_at")}, (SELECT count(*) FROM validation_sessions)
FROM validation_sessions ORDER BY created_at DESC, id DESC LIMIT ?
"""  # noqa: S608 - constant SQL
COUNT_SQL = "SELECT count(*) FROM validation_sessions"
LATEST_SQL = """
SELECT session_id, id, fidelity_score, overall_status FROM (
    SELECT session_id, id, fidelity_score, overall_status,
           row_number() OVER (PARTITION BY session_id ORDER BY created_at DESC, id DESC) AS rn
    FROM validation_results WHERE session_id IN ({ids})
) WHERE rn = 1
"""
RESULTS_SQL = """
SELECT session_id, id, fidelity_score, summary
FROM validation_results WHERE session_id IN ({ids})
ORDER BY session_id, created_at, id
"""
DISCREPANCIES_SQL = """
SELECT session_id, id, severity, discrepancy_type, description, is_resolved, version, total
FROM (
    SELECT session_id, id, severity, discrepancy_type, description, is_resolved, version,
           row_number() OVER (PARTITION BY session_id ORDER BY id) AS rn,
           count(*) OVER (PARTITION BY session_id) AS total
    FROM validation_discrepancies WHERE session_id IN ({ids})
) WHERE rn <= ? ORDER BY session_id, id
"""
TESTS_SQL = """
SELECT session_id, id, scenario_name, execution_status
FROM behavioral_test_results WHERE session_id IN ({ids})
ORDER BY session_id, id
"""


def connect(path: str) -> sqlite3.Connection:
    """A reading connection set up like migval's (WAL is a property of the file)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(os.environ.get('SQLITE_BUSY_TIMEOUT_MS', '5000'))}")
    return conn


def dashboard(conn: sqlite3.Connection) -> bytes:
    """The response bytes (also called in-process by the harness to count statements)."""
    sessions = conn.execute(SESSIONS_SQL, (SESSIONS_FIRST,)).fetchall()
    if not sessions:
        return dumps(envelope(conn.execute(COUNT_SQL).fetchone()[0], []))
    ids = [row[0] for row in sessions]
    marks = ",".join("?" * len(ids))
    latest = conn.execute(LATEST_SQL.format(ids=marks), ids).fetchall()
    results = conn.execute(RESULTS_SQL.format(ids=marks), ids).fetchall()
    discrepancies = conn.execute(
        DISCREPANCIES_SQL.format(ids=marks), [*ids, DISCREPANCIES_FIRST]
    ).fetchall()
    tests = conn.execute(TESTS_SQL.format(ids=marks), ids).fetchall()
    return dumps(assemble(sessions, latest, results, discrepancies, tests))


_conn: sqlite3.Connection | None = None


async def _startup() -> None:
    global _conn  # noqa: PLW0603 - one connection per process, set by the lifespan
    _conn = connect(os.environ["BENCH_SQLITE_PATH"])


async def _shutdown() -> None:
    if _conn is not None:
        _conn.close()


async def answer() -> bytes:
    assert _conn is not None
    return dashboard(_conn)


app = raw_app(answer, _startup, _shutdown)
