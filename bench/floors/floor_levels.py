"""Floor B: raw ASGI + asyncpg, one flat SELECT per nesting level, assembled in
Python and serialized with orjson (stdlib json if orjson is not importable).

Five statements, one after the other on one pooled connection: the sessions page with
the total, then for the page's session ids: latest results (DISTINCT ON), results,
discrepancy pages (ROW_NUMBER window with the per-session total), behavioral tests.
Only the columns the query asks for are read.

Run: uvicorn bench.floors.floor_levels:app  (BENCH_PG_DSN=postgresql://...)
"""

import asyncpg

from bench.floors.asgi import dumps, raw_app
from bench.floors.assemble import assemble, envelope
from bench.floors.pg import create_pool
from bench.query import DISCREPANCIES_FIRST, SESSIONS_FIRST

SESSIONS_SQL = """
SELECT id, request_id, status, source_technology::text, target_technology::text,
       created_at, (SELECT count(*) FROM validation_sessions) AS total
FROM validation_sessions ORDER BY created_at DESC, id DESC LIMIT $1
"""
COUNT_SQL = "SELECT count(*) FROM validation_sessions"
LATEST_SQL = """
SELECT DISTINCT ON (session_id) session_id, id, fidelity_score, overall_status
FROM validation_results WHERE session_id = ANY($1::int[])
ORDER BY session_id, created_at DESC, id DESC
"""
RESULTS_SQL = """
SELECT session_id, id, fidelity_score, summary
FROM validation_results WHERE session_id = ANY($1::int[])
ORDER BY session_id, created_at, id
"""
DISCREPANCIES_SQL = """
SELECT session_id, id, severity::text, discrepancy_type, description, is_resolved,
       version, total
FROM (
    SELECT session_id, id, severity, discrepancy_type, description, is_resolved, version,
           row_number() OVER (PARTITION BY session_id ORDER BY id) AS rn,
           count(*) OVER (PARTITION BY session_id) AS total
    FROM validation_discrepancies WHERE session_id = ANY($1::int[])
) d
WHERE rn <= $2 ORDER BY session_id, id
"""
TESTS_SQL = """
SELECT session_id, id, scenario_name, execution_status
FROM behavioral_test_results WHERE session_id = ANY($1::int[])
ORDER BY session_id, id
"""


_pool: asyncpg.Pool | None = None


async def _startup() -> None:
    global _pool  # noqa: PLW0603 - one pool per process, set by the lifespan
    _pool = await create_pool("bench-floor-levels")


async def _shutdown() -> None:
    if _pool is not None:
        await _pool.close()


async def answer() -> bytes:
    assert _pool is not None
    async with _pool.acquire() as conn:
        sessions = await conn.fetch(SESSIONS_SQL, SESSIONS_FIRST)
        if not sessions:
            return dumps(envelope(await conn.fetchval(COUNT_SQL), []))
        ids = [s[0] for s in sessions]
        latest = await conn.fetch(LATEST_SQL, ids)
        results = await conn.fetch(RESULTS_SQL, ids)
        discrepancies = await conn.fetch(DISCREPANCIES_SQL, ids, DISCREPANCIES_FIRST)
        tests = await conn.fetch(TESTS_SQL, ids)
    return dumps(assemble(sessions, latest, results, discrepancies, tests))


app = raw_app(answer, _startup, _shutdown)
