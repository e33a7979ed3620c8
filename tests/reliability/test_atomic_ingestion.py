"""A result with 10,000 discrepancies is stored whole or not at all, whatever fails:

- the service's validation (row 5,000 out of range): a typed payload error, nothing
  written, no audit entry;
- the database, mid-batch: row 5,000 violating a CHECK the service is bypassed for
  (repository path inside ``db.run_write``), and through GraphQL row 5,000 refused by
  a trigger the test installs (the result and rows 0..4,999 are already in the
  transaction): nothing written, the connection goes back to the pool clean; text no
  driver can encode (a lone UTF-16 surrogate) is refused up front, naming the field;
- the server process, SIGKILLed while the write transaction is open: after the kill the
  result is either absent with none of its discrepancies, or present with all 10,000 and
  its audit entry; PostgreSQL aborts the orphaned transaction (nothing left active or
  idle in transaction), SQLite passes ``PRAGMA integrity_check``, a restarted server
  serves the same answer, and ``migval db validate`` exits 0.

"The write transaction is open" is observed, not guessed: on PostgreSQL a backend of
the test database has a transaction id (it has written), on SQLite someone holds the
write lock (``BEGIN IMMEDIATE`` without waiting fails). A first, uninterrupted request
measures how long the write stays open on this machine; the kills then land as soon as
it is seen open and about 60% into it (where, on a fast run, it may already have
committed: then the client got its answer and all 10,000 must be there).
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from graph.schema import build_graphql_app
from persistence.database import DatabaseManager
from persistence.repositories import DiscrepancyRepository, ResultRepository
from persistence.services import SessionService
from tests.persistence.factories import discrepancy_input, result_input
from tests.persistence.factories import session_input as service_session_input
from tests.reliability.server import (
    CREATE_SESSION,
    RECORD_RESULT,
    ServerProcess,
    discrepancy_inputs,
    gql_body,
    pg_busy_backends,
    pg_connect,
    record_input,
    run_cli,
    session_input,
    session_outcome,
    sqlite_file,
    sqlite_integrity,
    sqlite_write_locked,
    start_server,
    table_counts,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

N = 10_000
BAD_ROW = 5_000
LONE_SURROGATE = "\ud800"  # valid in JSON ("\\ud800") and Python, not in UTF-8
NOTHING = (0, 0, 0)  # (results, discrepancies, audit entries) of the session
EVERYTHING = (1, N, 1)
# Where the SIGKILLs land, as fractions of the measured time the write stays open: as
# soon as it is seen open, and later in it (on a fast run, possibly just after COMMIT).
KILL_AT = (0.0, 0.6)


@pytest.fixture
async def client(db: DatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_graphql_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://migval.test") as c:
        yield c


async def _post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    # ensure_ascii keeps lone surrogates as "\ud800" escapes, which JSON allows
    content = json.dumps(gql_body(query, variables)).encode()
    response = await client.post("/", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


async def _new_session(client: httpx.AsyncClient, request_id: str) -> None:
    body = await _post(client, CREATE_SESSION, {"input": session_input(request_id)})
    assert body["data"]["createValidationSession"]["errors"] == [], body


async def _pg_idle_in_transaction(db: DatabaseManager) -> list[Any]:
    if db.dialect != "postgresql":
        return []
    async with db.read_session() as session:
        rows = await session.execute(
            sa.text(
                "SELECT pid, state FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            )
        )
        return list(rows.all())


# ------------------------------------------------------------- in-process failures


async def test_service_validation_failure_writes_nothing(
    db: DatabaseManager, client: httpx.AsyncClient
) -> None:
    await _new_session(client, "invalid-row")
    before = await table_counts(db)
    items = discrepancy_inputs(N)
    items[BAD_ROW]["confidence"] = 2.0
    body = await _post(client, RECORD_RESULT, {"input": record_input("invalid-row", items)})
    payload = body["data"]["recordValidationResult"]
    assert payload["result"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID", f"input.discrepancies[{BAD_ROW}].confidence")
    ]
    assert await table_counts(db) == before
    assert await session_outcome(db, "invalid-row") == NOTHING


async def test_database_failure_mid_batch_writes_nothing(db: DatabaseManager) -> None:
    """Row 5,000 breaks the confidence CHECK; only the database sees it (the service's
    validation is bypassed through the repositories inside run_write)."""
    sid = (await SessionService(db).create(service_session_input("db-check"))).session.id
    assert sid is not None
    before = await table_counts(db)
    rows = [{**discrepancy_input(i), "session_id": sid} for i in range(N)]
    rows[BAD_ROW]["confidence"] = 2.0
    attempts = 0

    async def work(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        stored = await ResultRepository(session).add({**result_input(), "session_id": sid})
        for row in rows:
            row["result_id"] = stored.id
        await DiscrepancyRepository(session).bulk_insert(rows)

    with pytest.raises(IntegrityError):
        await db.run_write(work)
    assert attempts == 1  # a constraint violation is not retried
    assert await table_counts(db) == before
    assert await session_outcome(db, "db-check") == NOTHING
    # the failed transaction left no trace on its connection
    assert db.pool_stats().checked_out == 0
    assert await _pg_idle_in_transaction(db) == []
    rows[BAD_ROW]["confidence"] = 1.0
    await db.run_write(work)
    assert await session_outcome(db, "db-check") == (1, N, 0)  # no service, no audit


@asynccontextmanager
async def _database_refuses(db: DatabaseManager, description: str) -> AsyncIterator[None]:
    """A trigger that makes the database, and only it, fail the INSERT of a discrepancy
    with this description (fault injection: no mock, the real statement fails midway).
    Dropped on the way out."""
    literal = description.replace("'", "''")
    if db.dialect == "sqlite":
        create = [
            "CREATE TRIGGER reliability_refuse BEFORE INSERT ON validation_discrepancies"
            f" WHEN NEW.description = '{literal}'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS reliability_refuse"]
    else:
        create = [
            "CREATE FUNCTION reliability_refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF NEW.description = '{literal}' THEN"
            " RAISE EXCEPTION 'refused by the test trigger'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER reliability_refuse BEFORE INSERT ON validation_discrepancies"
            " FOR EACH ROW EXECUTE FUNCTION reliability_refuse()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS reliability_refuse ON validation_discrepancies",
            "DROP FUNCTION IF EXISTS reliability_refuse()",
        ]
    async with db.engine.begin() as conn:
        for statement in create:
            await conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        async with db.engine.begin() as conn:
            for statement in drop:
                await conn.exec_driver_sql(statement)


async def test_database_failure_mid_batch_over_graphql_writes_nothing(
    db: DatabaseManager, client: httpx.AsyncClient
) -> None:
    """recordValidationResult whose row 5,000 the database refuses (a trigger): the
    result and rows 0..4,999 are already inserted in the transaction when the INSERT
    fails. Nothing is left, the client's error leaks nothing, the connection goes back
    clean, and the same request succeeds once the database accepts it."""
    await _new_session(client, "db-refuses")
    before = await table_counts(db)
    items = discrepancy_inputs(N)
    items[BAD_ROW]["description"] = "refused by the database"
    variables = {"input": record_input("db-refuses", items)}
    async with _database_refuses(db, "refused by the database"):
        body = await _post(client, RECORD_RESULT, variables)
    # An unexpected failure: masked, with the request id to find it in the log.
    assert body.get("data") is None, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR", body
    assert error["extensions"]["requestId"] in error["message"], body
    text = json.dumps(body)
    for leak in ("Traceback", "INSERT", "sqlalchemy", "asyncpg", "trigger"):
        assert leak not in text, body
    assert await table_counts(db) == before
    assert await session_outcome(db, "db-refuses") == NOTHING
    assert db.pool_stats().checked_out == 0
    assert await _pg_idle_in_transaction(db) == []
    body = await _post(client, RECORD_RESULT, variables)
    assert body["data"]["recordValidationResult"]["errors"] == [], body
    assert await session_outcome(db, "db-refuses") == EVERYTHING


@pytest.mark.parametrize("field", ["description", "validationContext"])
async def test_unencodable_text_is_a_typed_error(
    db: DatabaseManager, client: httpx.AsyncClient, field: str
) -> None:
    """A lone UTF-16 surrogate is a valid JSON escape that neither driver can store (and
    PostgreSQL's jsonb refuses while SQLite keeps it): validation refuses it, naming the
    field. It used to reach the driver, fail the whole batch and come back as a masked
    INTERNAL_SERVER_ERROR."""
    await _new_session(client, "surrogate")
    items = discrepancy_inputs(10)
    value = f"bad {LONE_SURROGATE}"
    items[7][field] = {"note": value} if field == "validationContext" else value
    body = await _post(client, RECORD_RESULT, {"input": record_input("surrogate", items)})
    assert "errors" not in body, body
    payload = body["data"]["recordValidationResult"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID", f"input.discrepancies[7].{field}")
    ]
    assert await session_outcome(db, "surrogate") == NOTHING


# ------------------------------------------------------------------ SIGKILL mid-write


class WriteProbe:
    """Whether a write transaction is open on the test database, seen from outside."""

    def __init__(self, database_url: str, dialect: str) -> None:
        self.database_url = database_url
        self.dialect = dialect
        self.pg: Any = None

    async def __aenter__(self) -> "WriteProbe":
        if self.dialect == "postgresql":
            self.pg = await pg_connect(self.database_url)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.pg is not None:
            await self.pg.close()

    async def write_open(self) -> bool:
        if self.pg is None:
            return sqlite_write_locked(sqlite_file(self.database_url))
        count = await self.pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
        )
        return bool(count)

    async def settled(self) -> bool:
        """Nothing of the killed server still running or holding a transaction."""
        if self.pg is None:
            return not sqlite_write_locked(sqlite_file(self.database_url))
        return await pg_busy_backends(self.pg) == []


async def _send_large_write(server: ServerProcess, body: bytes) -> httpx.Response:
    """POST ``body`` in 256 KiB chunks (a large upload, as a real client sends it)."""

    async def chunks() -> AsyncIterator[bytes]:
        step = 256 * 1024
        for start in range(0, len(body), step):
            yield body[start : start + step]

    async with server.client(timeout=120) as client:
        return await client.post(
            "/graphql",
            content=chunks(),
            headers={"content-type": "application/json", "content-length": str(len(body))},
        )


async def _until(
    condition: Callable[[], Any], task: asyncio.Task[Any], *, expect: bool = True
) -> bool:
    """Poll ``await condition()`` every ~2 ms until it is ``expect``; False if ``task``
    finished first."""
    deadline = time.monotonic() + 60
    while not task.done():
        if await condition() is expect:
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"{condition} still not {expect} after 60 s")
        await asyncio.sleep(0.002)
    return False


async def test_sigkill_mid_write_is_all_or_nothing(
    db: DatabaseManager, database_url: str, tmp_path: Path
) -> None:
    items = discrepancy_inputs(N, padding=200)  # ~3.5 MB of JSON
    for i in range(len(KILL_AT) + 1):
        await SessionService(db).create(service_session_input(f"kill-{i}"))

    def body_for(request_id: str) -> bytes:
        variables = {"input": record_input(request_id, items)}
        return json.dumps(gql_body(RECORD_RESULT, variables)).encode()

    report: list[str] = []
    async with WriteProbe(database_url, db.dialect) as probe:
        server = await start_server(database_url, tmp_path)
        try:
            # 0. Uninterrupted: how long the write transaction stays open here.
            task = asyncio.create_task(_send_large_write(server, body_for("kill-0")))
            assert await _until(probe.write_open, task), "write too quick to observe"
            opened = time.monotonic()
            await _until(probe.write_open, task, expect=False)
            write_s = time.monotonic() - opened
            response = await task
            assert response.status_code == 200, response.text
            assert response.json()["data"]["recordValidationResult"]["errors"] == []
            assert await session_outcome(db, "kill-0") == EVERYTHING
            report.append(f"write open ~{write_s:.3f} s")
            # 1.. SIGKILL at each point of the write; restart after each kill.
            for n, fraction in enumerate(KILL_AT, start=1):
                if n > 1:
                    server = await start_server(database_url, tmp_path)
                    await _check_served_outcome(server, f"kill-{n - 1}", db)
                body = body_for(f"kill-{n}")
                kill = await _kill_mid_write(server, probe, body, fraction * write_s)
                await server.astop()
                report.append(await _after_kill(db, probe, database_url, f"kill-{n}", kill))
        finally:
            await server.astop()
    # The database as a whole: the migval integrity checks, as an operator runs them.
    checked = await asyncio.to_thread(
        run_cli, "db", "validate", "--json", database_url=database_url
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["ok"] is True, checked.stdout
    counts = await table_counts(db)
    kept = [await session_outcome(db, f"kill-{i}") for i in range(len(KILL_AT) + 1)]
    assert counts["validation_results"] == sum(k[0] for k in kept), (counts, kept)
    assert counts["validation_discrepancies"] == sum(k[1] for k in kept), (counts, kept)
    print("; ".join(report))  # shown with -s: where the kills landed


@dataclass
class Kill:
    delay_s: float
    seen_open: bool  # the write transaction was observed open before the kill
    answered: bool  # the client had its response before the kill
    client: str  # what the client saw


async def _kill_mid_write(
    server: ServerProcess, probe: WriteProbe, body: bytes, delay_s: float
) -> Kill:
    """Send the write, wait until its transaction is open, wait ``delay_s``, SIGKILL."""
    task = asyncio.create_task(_send_large_write(server, body))
    try:
        seen = await _until(probe.write_open, task)
        await asyncio.sleep(delay_s)
        answered = task.done()
    finally:
        server.kill()
    return Kill(delay_s, seen, answered, await _client_outcome(task))


async def _after_kill(
    db: DatabaseManager, probe: WriteProbe, database_url: str, request_id: str, kill: Kill
) -> str:
    """All or nothing, and the database sound, once the killed server's work is over."""
    assert kill.seen_open, f"{request_id}: the write was never seen open ({kill.client})"
    await wait_until(probe.settled, within_s=15, what="the killed server's work to end")
    outcome = await session_outcome(db, request_id)
    line = f"{request_id} at +{kill.delay_s:.3f} s: {outcome} (client: {kill.client})"
    assert outcome in (NOTHING, EVERYTHING), line
    if kill.answered:  # acknowledged before the kill: must have been kept
        assert outcome == EVERYTHING, line
    if db.dialect == "sqlite":
        assert sqlite_integrity(sqlite_file(database_url)) == ["ok"]
    return line


async def _client_outcome(task: asyncio.Task[httpx.Response]) -> str:
    try:
        response = await task
    except httpx.TransportError as error:
        return f"{type(error).__name__} (connection cut by the kill)"
    return f"HTTP {response.status_code}"


async def _check_served_outcome(
    server: ServerProcess, request_id: str, db: DatabaseManager
) -> None:
    """The restarted server serves exactly what the database holds: 0 or all."""
    query = """
    query($rid: String!) {
      session(requestId: $rid) { results { databaseId } discrepancies(first: 1) { totalCount } }
    }"""
    async with server.client() as client:
        response = await client.post("/graphql", json=gql_body(query, {"rid": request_id}))
    assert response.status_code == 200, response.text
    session = response.json()["data"]["session"]
    served = (len(session["results"]), session["discrepancies"]["totalCount"])
    stored = await session_outcome(db, request_id)
    assert served == stored[:2]
    assert served in ((0, 0), (1, N))
