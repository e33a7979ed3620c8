"""Floor A: raw ASGI + asyncpg, ONE SQL statement builds the whole response.

PostgreSQL assembles the JSON (json_build_object / json_agg, correlated subqueries
per session); Python only forwards the text. The bytes differ from migval's (the json
type writes ``"key" : value`` with spaces) but parse to the same JSON, key order and
number types included.

Run: uvicorn bench.floors.floor_json_agg:app  (BENCH_PG_DSN=postgresql://...)
"""

import asyncpg

from bench.floors.asgi import raw_app
from bench.floors.pg import create_pool, global_id, iso_timestamp, py_float
from bench.query import DISCREPANCIES_FIRST, SESSIONS_FIRST

SQL = f"""
WITH page AS (
    SELECT id, request_id, status, source_technology, target_technology, created_at
    FROM validation_sessions
    ORDER BY created_at DESC, id DESC
    LIMIT $1
)
SELECT json_build_object('data', json_build_object('sessions', json_build_object(
  'totalCount', (SELECT count(*) FROM validation_sessions),
  'edges', coalesce((SELECT json_agg(json_build_object('node', json_build_object(
    'id', {global_id("ValidationSession", "p.id")},
    'requestId', p.request_id,
    'status', upper(p.status),
    'sourceTechnology', p.source_technology,
    'targetTechnology', p.target_technology,
    'createdAt', {iso_timestamp("p.created_at")},
    'latestResult', (
      SELECT json_build_object(
        'id', {global_id("ValidationResult", "r.id")},
        'fidelityScore', {py_float("r.fidelity_score")},
        'overallStatus', upper(r.overall_status))
      FROM validation_results r WHERE r.session_id = p.id
      ORDER BY r.created_at DESC, r.id DESC LIMIT 1),
    'results', coalesce((
      SELECT json_agg(json_build_object(
        'id', {global_id("ValidationResult", "r.id")},
        'fidelityScore', {py_float("r.fidelity_score")},
        'summary', r.summary) ORDER BY r.created_at, r.id)
      FROM validation_results r WHERE r.session_id = p.id), '[]'::json),
    'discrepancies', json_build_object(
      'totalCount', (SELECT count(*) FROM validation_discrepancies d WHERE d.session_id = p.id),
      'edges', coalesce((
        SELECT json_agg(json_build_object('node', json_build_object(
          'id', {global_id("Discrepancy", "d.id")},
          'severity', d.severity,
          'discrepancyType', d.discrepancy_type,
          'description', d.description,
          'isResolved', d.is_resolved,
          'version', d.version)) ORDER BY d.id)
        FROM (SELECT id, severity, discrepancy_type, description, is_resolved, version
              FROM validation_discrepancies WHERE session_id = p.id
              ORDER BY id LIMIT $2) d), '[]'::json)),
    'behavioralTests', coalesce((
      SELECT json_agg(json_build_object(
        'id', {global_id("BehavioralTestResult", "b.id")},
        'scenarioName', b.scenario_name,
        'executionStatus', upper(b.execution_status)) ORDER BY b.id)
      FROM behavioral_test_results b WHERE b.session_id = p.id), '[]'::json)
  )) ORDER BY p.created_at DESC, p.id DESC) FROM page p), '[]'::json)
)))::text
"""  # noqa: S608 - built from constant fragments

_pool: asyncpg.Pool | None = None


async def _startup() -> None:
    global _pool  # noqa: PLW0603 - one pool per process, set by the lifespan
    _pool = await create_pool("bench-floor-json-agg")


async def _shutdown() -> None:
    if _pool is not None:
        await _pool.close()


async def answer() -> bytes:
    assert _pool is not None
    async with _pool.acquire() as conn:
        text: str = await conn.fetchval(SQL, SESSIONS_FIRST, DISCREPANCIES_FIRST)
    return text.encode()


app = raw_app(answer, _startup, _shutdown)
