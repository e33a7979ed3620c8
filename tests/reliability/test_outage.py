"""A PostgreSQL outage seen by a real ``migval serve`` process that is never restarted.

One temporary PostgreSQL cluster for this module (own data directory, free port; run as
the ``postgres`` user when the tests run as root, like tests/conftest.py), a database
built by ``alembic upgrade head``, and one server (tests/reliability/server.py) with a
pool of 3 connections, no overflow, pre-ping on and a 2 s write retry deadline.

``test_outage_and_recovery`` (deterministic: no request races the stop itself):

1. Normal operation: writes (createValidationSession) and reads succeed; concurrent
   reads fill the pool (3 migval backends in pg_stat_activity).
2. Outage (``pg_ctl stop -m fast``): ``/healthz`` stays 200; ``/readyz`` answers 503
   within a few seconds; writes answer HTTP 200 with the top-level, retryable
   ``SERVICE_UNAVAILABLE`` error, within the retry deadline (never a 500, never a
   masked ``INTERNAL_SERVER_ERROR``); reads answer the same error.
3. Recovery (``pg_ctl start``): ``/readyz`` is 200 again within 15 s and a burst of
   concurrent writes and reads (4x the pool) all succeed.
4. Quick bounce (``pg_ctl stop -m immediate``, then start, no request in between: every
   pooled connection is dead): the very next burst, which checks out every pooled
   connection, succeeds entirely: pre-ping hands out nothing poisoned.
5. Accounting: every acknowledged write is stored, no refused write is stored, nothing
   is stored that was not sent; same server process; no unexpected error in its log.

``test_traffic_in_flight_across_shutdowns``: writers and a reader run without pause
while PostgreSQL goes through a slow shutdown (``-m smart`` held open by a client, with
migval's connections terminated: new connections are refused with SQLSTATE 57P03 "the
database system is shutting down", as in the window of every real shutdown and of crash
recovery), a full stop, a start, and an immediate stop with requests in flight. Every
answer must be a success, a retryable SERVICE_UNAVAILABLE or COMMIT_OUTCOME_UNKNOWN,
and the same accounting must hold.

``test_write_whose_backend_dies_mid_statement_is_retried`` and
``test_read_whose_backend_dies_mid_statement_fails_cleanly``: the migval backend running
a statement (held on a table lock) is terminated, as a stop or crash does to requests in
flight. The write is run again on a new connection (acknowledged, stored once); the read
must answer the retryable SERVICE_UNAVAILABLE.

``test_committed_write_whose_payload_read_fails_is_not_reported_as_retryable``: the
payload of a committed recordValidationResult (read after the commit) loses its
connection; the client must get the result or a non-retryable error, never "safe to
retry" (that writes twice without an idempotency key): RESPONSE_INCOMPLETE.

No outcome depends on timing: each step waits for a lock or for a state seen in
pg_stat_activity/pg_locks or /readyz; the sleeps only let traffic run.

PostgreSQL only (its own cluster, never the shared server). Without the server binaries
the module is skipped, except under ``CI=true`` where it fails.
"""

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command

from persistence.schema_version import alembic_config
from tests.conftest import ClusterUnavailable, _free_port, new_cluster
from tests.reliability.server import (
    CREATE_SESSION,
    ServerProcess,
    gql_body,
    session_input,
    start_server,
)

pytestmark = pytest.mark.timeout(180)

DATABASE = "migval_outage"
POOL_SIZE = 3
RETRY_DEADLINE_S = 2.0
READY_AFTER_START_S = 15.0
NOT_READY_AFTER_STOP_S = 4.0
BURST = 4 * POOL_SIZE  # concurrent writes, and as many concurrent reads
LEAK_MARKERS = ("Traceback", "SELECT", "INSERT", "sqlalchemy", "asyncpg", 'File "')
SERVER_ENV = {
    "DB_POOL_SIZE": str(POOL_SIZE),
    "DB_MAX_OVERFLOW": "0",
    "DB_POOL_PRE_PING": "true",
    "DB_POOL_TIMEOUT": "10",
    "DB_RETRY_DEADLINE": str(RETRY_DEADLINE_S),
    "MIGVAL_ANONYMOUS_ROLE": "admin",
}

READ = """
query Read($rid: String!, $id: ID!) {
  session(requestId: $rid) { id requestId status }
  node(id: $id) { id }
  sessions(first: 5) { totalCount nodes { id requestId } }
}"""


# ------------------------------------------------------------------------- cluster


@dataclass
class Cluster:
    """A throw-away PostgreSQL cluster that can be stopped and started again on the
    same data directory and port."""

    base: Path
    port: int
    pg_ctl: str
    run_as: list[str]
    running: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database=database, timeout=5
        )

    def start(self) -> None:
        self._pg_ctl("-w", "-l", str(self.log), "-t", "60", "start")
        self.running = True

    def stop(self, mode: str) -> None:
        """Stop and wait until the postmaster is gone (no connection is accepted)."""
        self._pg_ctl("-w", "-m", mode, "-t", "60", "stop")
        self.running = False

    def begin_smart_stop(self) -> None:
        """Smart shutdown, not waited for: new connections are refused (57P03) while
        existing sessions go on, until the last client leaves."""
        self._pg_ctl("-W", "-m", "smart", "stop")

    def wait_stopped(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._pg_ctl("status", check=False) != 3:  # 3: not running
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster still running after {timeout_s} s")
            time.sleep(0.05)
        self.running = False

    def destroy(self) -> None:
        self._pg_ctl("-w", "-m", "immediate", "stop", check=False)
        self.running = False
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*self.run_as, self.pg_ctl, "-D", str(self.data), *args],
            check=False,
            capture_output=True,
            timeout=90,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')}\n{self.log_tail()}"
            )
        return done.returncode


def create_cluster() -> Cluster:
    made = new_cluster("migval-outage-")
    base = made.base
    cluster = Cluster(base, _free_port(), made.pg_ctl, made.run_as)
    try:
        with (cluster.data / "postgresql.conf").open("a") as conf:
            # In the config file, so that every later `pg_ctl start` gets the same server.
            # synchronous_commit stays ON: with it off an immediate stop loses commits
            # already acknowledged, which would be this harness's fault, not migval's.
            # fsync=off only matters for an OS crash, which no test here makes.
            conf.write(
                f"\nport = {cluster.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base}'\n"
                "fsync = off\nfull_page_writes = off\n"
            )
        cluster.start()
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        detail = (getattr(error, "stderr", b"") or b"").decode(errors="replace")
        tail = cluster.log_tail()
        cluster.destroy()
        raise RuntimeError(
            f"temporary cluster failed to start: {error}\n{detail}\n{tail}"
        ) from error
    return cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        made = create_cluster()
    except ClusterUnavailable as error:
        reason = f"PostgreSQL outage tests NOT run: {error}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield made
    finally:
        made.destroy()


@pytest.fixture(scope="module")
async def database_url(cluster: Cluster) -> str:
    conn = await cluster.connect()
    try:
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    url = cluster.url(DATABASE)
    # migrations/env.py calls asyncio.run: run Alembic in a worker thread.
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    return url


@pytest.fixture(scope="module")
async def server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    made = await start_server(database_url, tmp_path_factory.mktemp("outage"), env=SERVER_ENV)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
async def healthy(cluster: Cluster, server: ServerProcess) -> ServerProcess:
    """The shared cluster running and the shared server ready (whatever a failed test
    before this one left behind)."""
    if not cluster.running:
        await asyncio.to_thread(cluster.start)
    assert server.alive(), server.log_text()[-3000:]
    await server.wait_ready(READY_AFTER_START_S)
    return server


# ------------------------------------------------------------------ client & ledger


@dataclass
class Ledger:
    """What the server answered, write by write (by requestId), and what went wrong."""

    acked: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # SERVICE_UNAVAILABLE: not written
    unknown: set[str] = field(default_factory=set)  # outcome not known to the client
    ids: dict[str, str] = field(default_factory=dict)  # requestId -> global ID
    problems: list[str] = field(default_factory=list)
    sent: int = 0

    def bad(self, what: str, response: httpx.Response) -> str:
        self.problems.append(f"{what}: HTTP {response.status_code} {response.text[:600]}")
        return "bad"


def _retryable_unavailable(errors: list[dict[str, Any]]) -> bool:
    return bool(errors) and all(
        (e.get("extensions") or {}).get("code") == "SERVICE_UNAVAILABLE"
        and (e.get("extensions") or {}).get("retryable") is True
        for e in errors
    )


def _leaks(response: httpx.Response) -> bool:
    return any(marker in response.text for marker in LEAK_MARKERS)


async def write(client: httpx.AsyncClient, ledger: Ledger, rid: str) -> str:
    """createValidationSession; returns ok | unavailable | unknown | bad."""
    ledger.sent += 1
    try:
        response = await client.post(
            "/graphql", json=gql_body(CREATE_SESSION, {"input": session_input(rid)})
        )
    except httpx.TransportError as error:  # the server itself must never drop us
        ledger.problems.append(f"write {rid}: transport error {error!r}")
        ledger.unknown.add(rid)
        return "bad"
    outcome = _write_outcome(response, rid)
    if outcome == "ok":
        ledger.acked.add(rid)
        ledger.ids[rid] = response.json()["data"]["createValidationSession"]["session"]["id"]
    elif outcome == "unavailable":
        ledger.refused.add(rid)
    else:  # a 500 or a masked error says nothing about the commit
        ledger.unknown.add(rid)
    if outcome == "bad":
        ledger.bad(f"write {rid}", response)
    return outcome


def _write_outcome(response: httpx.Response, rid: str) -> str:
    if response.status_code != 200 or _leaks(response):
        return "bad"
    body = response.json()
    errors = body.get("errors") or []
    if errors:
        if _retryable_unavailable(errors):
            return "unavailable"
        codes = {(e.get("extensions") or {}).get("code") for e in errors}
        return "unknown" if codes == {"COMMIT_OUTCOME_UNKNOWN"} else "bad"
    payload = (body.get("data") or {}).get("createValidationSession") or {}
    session = payload.get("session") or {}
    ok = not payload.get("errors") and session.get("requestId") == rid
    return "ok" if ok else "bad"


async def read(client: httpx.AsyncClient, ledger: Ledger, rid: str) -> str:
    """session(requestId:), node(id:) and a sessions page for an acknowledged write,
    which must be found; returns ok | unavailable | bad."""
    variables = {"rid": rid, "id": ledger.ids[rid]}
    try:
        response = await client.post("/graphql", json=gql_body(READ, variables))
    except httpx.TransportError as error:
        ledger.problems.append(f"read {rid}: transport error {error!r}")
        return "bad"
    if response.status_code != 200 or _leaks(response):
        return ledger.bad(f"read {rid}", response)
    body = response.json()
    errors = body.get("errors") or []
    if errors:
        if _retryable_unavailable(errors):
            return "unavailable"
        return ledger.bad(f"read {rid}", response)
    data = body.get("data") or {}
    if not (
        (data.get("session") or {}).get("requestId") == rid
        and (data.get("node") or {}).get("id") == ledger.ids[rid]
        and data["sessions"]["totalCount"] >= 1
    ):
        return ledger.bad(f"read {rid} (acknowledged write not found)", response)
    return "ok"


async def burst(client: httpx.AsyncClient, ledger: Ledger, tag: str) -> list[str]:
    """BURST concurrent writes and BURST concurrent reads of acknowledged writes."""
    known = sorted(ledger.acked)
    writes = [write(client, ledger, f"{tag}-{i}") for i in range(BURST)]
    reads = [read(client, ledger, known[i % len(known)]) for i in range(BURST)]
    return list(await asyncio.gather(*writes, *reads))


async def poll_readyz(client: httpx.AsyncClient, want: int, timeout_s: float) -> float:
    """Seconds until /readyz answers ``want``; fails after ``timeout_s``."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout_s:
        response = await client.get("/readyz")
        last = f"{response.status_code} {response.text}"
        if response.status_code == want:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    pytest.fail(f"/readyz not {want} within {timeout_s} s; last answer: {last}")


async def assert_live(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def migval_backends(cluster: Cluster) -> int:
    conn = await cluster.connect()
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'migval' AND datname = $1",
            DATABASE,
        )
    finally:
        await conn.close()
    return int(count)


async def fill_pool(client: httpx.AsyncClient, ledger: Ledger, cluster: Cluster) -> None:
    """Concurrent reads until every pooled connection is open."""
    known = sorted(ledger.acked)
    for _ in range(10):
        outcomes = await asyncio.gather(
            *(read(client, ledger, known[i % len(known)]) for i in range(BURST))
        )
        assert set(outcomes) == {"ok"}, ledger.problems
        if await migval_backends(cluster) == POOL_SIZE:
            return
    pytest.fail(f"the pool never held {POOL_SIZE} connections")


async def stored_request_ids(cluster: Cluster, prefix: str) -> list[str]:
    conn = await cluster.connect(DATABASE)
    try:
        rows = await conn.fetch(
            "SELECT request_id FROM validation_sessions WHERE request_id LIKE $1",
            prefix + "%",
        )
    finally:
        await conn.close()
    return [r["request_id"] for r in rows]


async def check_accounting(cluster: Cluster, ledger: Ledger, prefix: str) -> set[str]:
    stored_list = await stored_request_ids(cluster, prefix)
    stored = set(stored_list)
    assert len(stored_list) == len(stored), "a requestId is stored twice"
    assert ledger.acked - stored == set(), "acknowledged writes lost"
    assert ledger.refused & stored == set(), "writes refused as SERVICE_UNAVAILABLE stored"
    assert stored - ledger.acked - ledger.unknown == set(), "stored, never acknowledged"
    return stored


# ---------------------------------------------------------------------------- tests


async def test_outage_and_recovery(cluster: Cluster, healthy: ServerProcess) -> None:
    server = healthy
    ledger = Ledger()
    pid, log_from = server.pid, len(server.log_text())
    async with server.client(timeout=30.0) as client:
        # 1. Normal operation.
        assert [await write(client, ledger, f"outage-before-{i}") for i in range(4)] == [
            "ok"
        ] * 4, ledger.problems
        reads = [await read(client, ledger, f"outage-before-{i}") for i in range(4)]
        assert reads == ["ok"] * 4, ledger.problems
        await fill_pool(client, ledger, cluster)

        # 2. Outage: the postmaster is gone once stop() returns.
        await asyncio.to_thread(cluster.stop, "fast")
        await assert_live(client)
        became_unready = await poll_readyz(client, 503, NOT_READY_AFTER_STOP_S)
        body = (await client.get("/readyz")).json()
        assert body["status"] == "unavailable"
        assert body["reason"].startswith("database unreachable"), body

        async def timed_write(rid: str) -> tuple[str, float]:
            started = time.monotonic()
            outcome = await write(client, ledger, rid)
            return outcome, time.monotonic() - started

        timed = await asyncio.gather(*(timed_write(f"outage-down-{i}") for i in range(4)))
        assert [o for o, _ in timed] == ["unavailable"] * 4, ledger.problems
        # Refused within the retry deadline (plus slack), not after a long hang.
        assert max(s for _, s in timed) < RETRY_DEADLINE_S + 3.0, timed
        reads = await asyncio.gather(
            *(read(client, ledger, f"outage-before-{i}") for i in range(4))
        )
        assert reads == ["unavailable"] * 4, ledger.problems
        await assert_live(client)

        # 3. Recovery, same server process.
        await asyncio.to_thread(cluster.start)
        became_ready = await poll_readyz(client, 200, READY_AFTER_START_S)
        outcomes = await burst(client, ledger, "outage-after-fast")
        assert set(outcomes) == {"ok"}, (outcomes, ledger.problems)

        # 4. Quick bounce: every pooled connection dies, no request sees the outage.
        await fill_pool(client, ledger, cluster)
        await asyncio.to_thread(cluster.stop, "immediate")
        await asyncio.to_thread(cluster.start)
        outcomes = await burst(client, ledger, "outage-after-immediate")
        assert set(outcomes) == {"ok"}, (outcomes, ledger.problems)
        assert await migval_backends(cluster) == POOL_SIZE
        assert await poll_readyz(client, 200, 1.0) < 1.0
        await assert_live(client)

    # 5. Accounting, straight from the table.
    stored = await check_accounting(cluster, ledger, "outage-")
    assert ledger.problems == []
    assert ledger.refused == {f"outage-down-{i}" for i in range(4)}
    assert ledger.unknown == set()
    assert len(stored) == len(ledger.acked) == 4 + 2 * BURST
    assert server.alive(), server.log_text()[-3000:]
    assert server.pid == pid
    log = server.log_text()[log_from:]
    assert "unexpected error" not in log.lower(), log[-5000:]
    print(  # shown with -s or -rP
        f"\n/readyz 503 {became_unready:.2f} s after the stop, 200 {became_ready:.2f} s "
        f"after the start; writes sent {ledger.sent}, acknowledged {len(ledger.acked)}, "
        f"refused {len(ledger.refused)}; stored {len(stored)}"
    )


READ_ONE = """
query ReadOne($rid: String!) {
  session(requestId: $rid) { id requestId }
}"""


@asynccontextmanager
async def sessions_table_locked(cluster: Cluster) -> AsyncIterator[asyncpg.Connection]:
    """validation_sessions locked ACCESS EXCLUSIVE: any statement on it waits."""
    holder = await cluster.connect(DATABASE)
    transaction = holder.transaction()
    await transaction.start()
    try:
        await holder.execute("LOCK TABLE validation_sessions IN ACCESS EXCLUSIVE MODE")
        yield holder
    finally:
        await transaction.rollback()
        await holder.close()


async def terminate_waiting_backend(holder: asyncpg.Connection) -> None:
    """Kill the migval backend waiting on the lock, in the middle of its statement."""
    deadline = time.monotonic() + 10
    while True:
        pid = await holder.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'migval' "
            "AND wait_event_type = 'Lock' LIMIT 1"
        )
        if pid is not None:
            assert await holder.fetchval("SELECT pg_terminate_backend($1)", pid)
            return
        assert time.monotonic() < deadline, "no migval statement ever waited on the lock"
        await asyncio.sleep(0.02)


async def test_write_whose_backend_dies_mid_statement_is_retried(
    cluster: Cluster, healthy: ServerProcess
) -> None:
    """The whole transaction runs again on a new connection: one row, acknowledged."""
    ledger = Ledger()
    async with healthy.client(timeout=30.0) as client:
        async with sessions_table_locked(cluster) as holder:
            pending = asyncio.create_task(write(client, ledger, "killed-write"))
            await terminate_waiting_backend(holder)
            await asyncio.sleep(0.2)  # the retry waits on the lock again, or is backing off
        assert await pending == "ok", ledger.problems
    assert await stored_request_ids(cluster, "killed-") == ["killed-write"]


async def test_read_whose_backend_dies_mid_statement_fails_cleanly(
    cluster: Cluster, healthy: ServerProcess
) -> None:
    """A read has no retry: a lost connection is the retryable SERVICE_UNAVAILABLE."""
    ledger = Ledger()
    async with healthy.client(timeout=30.0) as client:
        assert await write(client, ledger, "killed-read") == "ok", ledger.problems
        async with sessions_table_locked(cluster) as holder:
            pending = asyncio.create_task(
                client.post("/graphql", json=gql_body(READ_ONE, {"rid": "killed-read"}))
            )
            await terminate_waiting_backend(holder)
        response = await pending
    assert response.status_code == 200, response.text
    assert not _leaks(response), response.text
    errors = response.json().get("errors") or []
    assert _retryable_unavailable(errors), response.text


RECORD_SMALL = """
mutation Record($input: RecordValidationResultInput!) {
  recordValidationResult(input: $input) {
    errors { field code message }
    result { id databaseId summary discrepancies { id } }
  }
}"""


async def wait_for_lock_waiter(conn: asyncpg.Connection, relation: str, who: str) -> int:
    """pid of the backend (``who``: an application_name, '' for ours) waiting for a lock
    on ``relation``."""
    deadline = time.monotonic() + 10
    while True:
        pid = await conn.fetchval(
            "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND l.relation = $1::regclass AND a.application_name = $2 "
            "LIMIT 1",
            relation,
            who,
        )
        if pid is not None:
            return int(pid)
        assert time.monotonic() < deadline, f"nobody ({who!r}) ever waited on {relation}"
        await asyncio.sleep(0.02)


async def test_committed_write_whose_payload_read_fails_is_not_reported_as_retryable(
    cluster: Cluster, healthy: ServerProcess
) -> None:
    """recordValidationResult commits, then its payload (result.discrepancies, through
    a loader, on another pooled connection) loses its connection. Choreography, all
    with locks so nothing depends on timing: the write is held just before its last
    INSERT (audit_log locked); a second lock request on validation_discrepancies queues
    behind the write; the write is let go and commits; that lock is granted, so the
    payload's SELECT waits on it; its backend is terminated. The client must not hear
    "failed, safe to retry" (a retry without an idempotency key writes the result
    twice) nor a masked error: either the result, or a non-retryable error."""
    ledger = Ledger()
    async with healthy.client(timeout=30.0) as client:
        assert await write(client, ledger, "payload-after-commit") == "ok", ledger.problems
        audit = await cluster.connect(DATABASE)
        discrepancies = await cluster.connect(DATABASE)
        try:
            held = audit.transaction()
            await held.start()
            await audit.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
            variables = {
                "input": {
                    "requestId": "payload-after-commit",
                    "overallStatus": "APPROVED",
                    "fidelityScore": 0.5,
                    "summary": "payload after commit",
                    "discrepancies": [
                        {"discrepancyType": "layout", "severity": "INFO", "description": "d"}
                    ],
                }
            }
            pending = asyncio.create_task(
                client.post("/graphql", json=gql_body(RECORD_SMALL, variables))
            )
            await wait_for_lock_waiter(audit, "audit_log", "migval")
            queued = discrepancies.transaction()
            await queued.start()
            lock = asyncio.create_task(
                discrepancies.execute(
                    "LOCK TABLE validation_discrepancies IN ACCESS EXCLUSIVE MODE"
                )
            )
            await wait_for_lock_waiter(audit, "validation_discrepancies", "")
            await held.rollback()  # the write goes on and commits
            await lock  # granted once the write committed
            victim = await wait_for_lock_waiter(audit, "validation_discrepancies", "migval")
            assert await audit.fetchval("SELECT pg_terminate_backend($1)", victim)
            await queued.rollback()
            response = await pending
        finally:
            await audit.close()
            await discrepancies.close()
    stored = await cluster.connect(DATABASE)
    try:
        count = await stored.fetchval(
            "SELECT count(*) FROM validation_results WHERE summary = 'payload after commit'"
        )
    finally:
        await stored.close()
    assert count == 1, "the write committed exactly once"
    assert response.status_code == 200, response.text
    errors = response.json().get("errors") or []
    codes = {(e.get("extensions") or {}).get("code") for e in errors}
    retryable = any((e.get("extensions") or {}).get("retryable") for e in errors)
    assert not retryable, f"committed, yet told it is safe to retry: {response.text}"
    assert "INTERNAL_SERVER_ERROR" not in codes, response.text


class Traffic:
    """Writers (and a reader) running back to back until stopped, whatever the
    database does; outcomes are counted per kind."""

    def __init__(self, client: httpx.AsyncClient, ledger: Ledger, writers: int) -> None:
        self.client, self.ledger = client, ledger
        self.outcomes: dict[str, list[str]] = {"write": [], "read": []}
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._writer(w)) for w in range(writers)]
        self._tasks.append(asyncio.create_task(self._reader()))

    async def _writer(self, w: int) -> None:
        i = 0
        while not self._stop.is_set():
            rid = f"inflight-{w}-{i}"
            self.outcomes["write"].append(await write(self.client, self.ledger, rid))
            i += 1
            await asyncio.sleep(0.01)

    async def _reader(self) -> None:
        i = 0
        while not self._stop.is_set():
            known = sorted(self.ledger.acked)
            if known:
                rid = known[i % len(known)]
                self.outcomes["read"].append(await read(self.client, self.ledger, rid))
            i += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> dict[str, list[str]]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


@asynccontextmanager
async def smart_shutdown_held(cluster: Cluster) -> AsyncIterator[None]:
    """A smart shutdown kept pending by one of our connections, with migval's backends
    terminated: every new connection is refused with 57P03 until the block ends; then
    the shutdown completes and the cluster is stopped."""
    holder = await cluster.connect()
    try:
        await asyncio.to_thread(cluster.begin_smart_stop)
        deadline = time.monotonic() + 10
        while True:  # until new connections are refused
            try:
                probe = await cluster.connect()
            except asyncpg.CannotConnectNowError:
                break
            await probe.close()
            assert time.monotonic() < deadline, "smart shutdown never began"
            await asyncio.sleep(0.05)
        await holder.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'migval'"
        )
        yield
    finally:
        await holder.close()
        await asyncio.to_thread(cluster.wait_stopped)


async def test_traffic_in_flight_across_shutdowns(cluster: Cluster, healthy: ServerProcess) -> None:
    server = healthy
    ledger = Ledger()
    async with server.client(timeout=30.0) as client:
        traffic = Traffic(client, ledger, writers=3)
        await asyncio.sleep(0.5)
        # A slow shutdown: new connections refused (57P03) for 1.5 s, then stopped.
        async with smart_shutdown_held(cluster):
            await asyncio.sleep(1.5)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.start)
        await poll_readyz(client, 200, READY_AFTER_START_S)
        await asyncio.sleep(0.5)
        # A crash with requests in flight, and crash recovery at the start.
        await asyncio.to_thread(cluster.stop, "immediate")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.start)
        await poll_readyz(client, 200, READY_AFTER_START_S)
        await asyncio.sleep(0.5)
        outcomes = await traffic.stop()
        assert outcomes["write"][-3:] == ["ok"] * 3, outcomes["write"][-10:]
        assert set(await burst(client, ledger, "inflight-after")) == {"ok"}, ledger.problems
        await assert_live(client)

    assert ledger.problems == []
    assert ledger.refused, "no write met the outage"
    await check_accounting(cluster, ledger, "inflight-")
    assert "unexpected error" not in server.log_text().lower()
