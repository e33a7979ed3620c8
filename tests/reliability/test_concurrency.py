"""Fifty concurrent writers, each creating a session and recording a result with
discrepancies, in process (httpx ASGI transport on ``build_graphql_app(db)``) and
against a real ``migval serve`` process (a few httpx clients, each its own connection
pool), on SQLite and PostgreSQL.

Afterwards the database holds exactly what was acknowledged: 50 sessions, 50 results,
50 x N discrepancies, each discrepancy on its writer's result and session, one audit
entry per write, no duplicate; every response succeeded; no "database is locked" (nor
any retried transient error) in a response or in the log.
"""

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from graph.schema import build_graphql_app
from persistence.database import DatabaseManager
from tests.conftest import DbFactory
from tests.reliability.server import (
    CREATE_SESSION,
    RECORD_RESULT,
    discrepancy_inputs,
    gql_body,
    record_input,
    running_server,
    session_input,
    table_counts,
)

pytestmark = pytest.mark.timeout(120)

WRITERS = 50
PER_RESULT = 20  # discrepancies per result
CLIENTS = 5  # httpx clients against the real server
# Never in a response or a log line: a writer that failed on, or retried after, a lock.
LOCK_MARKERS = ("database is locked", "database is busy", "transient database error")


async def _write(client: httpx.AsyncClient, path: str, writer: int) -> list[httpx.Response]:
    """One writer: create its session, then record a result on it."""
    request_id = f"writer-{writer:02d}"
    created = await client.post(
        path, json=gql_body(CREATE_SESSION, {"input": session_input(request_id)})
    )
    items = discrepancy_inputs(PER_RESULT, tag=f"{request_id}/")
    recorded = await client.post(
        path, json=gql_body(RECORD_RESULT, {"input": record_input(request_id, items)})
    )
    return [created, recorded]


def _check_responses(responses: list[list[httpx.Response]]) -> list[int]:
    """Every response a success without errors; returns the recorded result ids."""
    result_ids: list[int] = []
    for writer, (created, recorded) in enumerate(responses):
        for response in (created, recorded):
            text = response.text.lower()
            assert not any(m in text for m in LOCK_MARKERS), (writer, response.text)
            assert response.status_code == 200, (writer, response.text)
            assert "errors" not in response.json(), (writer, response.text)
        session_payload = created.json()["data"]["createValidationSession"]
        assert session_payload["errors"] == [], (writer, session_payload)
        assert session_payload["created"] is True, (writer, session_payload)
        assert session_payload["session"]["requestId"] == f"writer-{writer:02d}"
        result_payload = recorded.json()["data"]["recordValidationResult"]
        assert result_payload["errors"] == [], (writer, result_payload)
        result_ids.append(int(result_payload["result"]["databaseId"]))
    return result_ids


async def _check_database(db: DatabaseManager, result_ids: list[int]) -> None:
    """Exact counts, and every row where its writer put it, once."""
    counts = await table_counts(db)
    assert counts["validation_sessions"] == WRITERS
    assert counts["validation_results"] == WRITERS
    assert counts["validation_discrepancies"] == WRITERS * PER_RESULT
    assert len(set(result_ids)) == WRITERS
    async with db.read_session() as session:
        stored = (
            await session.execute(
                sa.text(
                    "SELECT s.request_id, r.id, d.description, d.session_id = s.id"
                    " FROM validation_discrepancies d"
                    " JOIN validation_results r ON r.id = d.result_id"
                    " JOIN validation_sessions s ON s.id = r.session_id"
                )
            )
        ).all()
        audit = dict(
            (
                await session.execute(
                    sa.text("SELECT operation, count(*) FROM audit_log GROUP BY operation")
                )
            ).all()
        )
    assert all(same_session for *_, same_session in stored)
    by_writer: dict[str, set[str]] = {}
    result_of: dict[str, set[int]] = {}
    for request_id, result_id, description, _ in stored:
        by_writer.setdefault(request_id, set()).add(description)
        result_of.setdefault(request_id, set()).add(result_id)
    assert len(stored) == WRITERS * PER_RESULT  # every discrepancy joins its result
    expected = {
        f"writer-{w:02d}": {f"writer-{w:02d}/difference {i}" for i in range(PER_RESULT)}
        for w in range(WRITERS)
    }
    assert by_writer == expected  # no duplicate, none lost, none on another writer's result
    assert {rid for ids in result_of.values() for rid in ids} == set(result_ids)
    assert all(len(ids) == 1 for ids in result_of.values())
    assert audit.get("createValidationSession") == WRITERS
    assert audit.get("recordValidationResult") == WRITERS


async def test_fifty_concurrent_writers_in_process(
    db: DatabaseManager, db_factory: DbFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # One process runs all 100 write transactions one after the other on SQLite's lock,
    # and every request's CPU work between them: on a loaded machine the last writers
    # can wait past the default 5 s busy timeout. What is tested is that they queue
    # and all succeed, not how fast this machine is: a timeout no queue here reaches.
    manager = db_factory(sqlite_busy_timeout_ms=60_000)
    transport = httpx.ASGITransport(app=build_graphql_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://migval.test") as client:
        responses = await asyncio.gather(*(_write(client, "/", w) for w in range(WRITERS)))
    result_ids = _check_responses(list(responses))
    await _check_database(db, result_ids)
    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged if any(k in m.lower() for k in LOCK_MARKERS)], logged
    assert manager.pool_stats().checked_out == 0


async def test_fifty_concurrent_writers_on_a_real_server(
    db: DatabaseManager, database_url: str, tmp_path: Path
) -> None:
    async with running_server(database_url, tmp_path) as server:
        clients = [server.client() for _ in range(CLIENTS)]
        try:
            responses = await asyncio.gather(
                *(_write(clients[w % CLIENTS], "/graphql", w) for w in range(WRITERS))
            )
        finally:
            for client in clients:
                await client.aclose()
        result_ids = _check_responses(list(responses))
        await _check_database(db, result_ids)
        async with server.client() as client:
            assert (await client.get("/readyz")).status_code == 200
        assert server.alive()
    log = server.log_text()
    assert log.count('"POST /graphql HTTP/1.1" 200') == 2 * WRITERS, log[-3000:]
    problems = server.log_problems((*LOCK_MARKERS, "Traceback", "ERROR"))
    assert problems == [], "\n".join(problems)
