"""A real ``migval serve`` subprocess for the reliability tests, and what they share.

Server::

    async with running_server(database_url, tmp_path) as server:
        async with server.client() as client:
            response = await client.post("/graphql", json={"query": "{ __typename }"})
        server.kill()            # SIGKILL, e.g. in the middle of a mutation
    # here it is stopped (SIGTERM, then SIGKILL after a grace period) whatever happened

``start_server`` / ``running_server`` run ``python -m graph.cli serve --port 0`` with
``DATABASE_URL`` set and ``MIGVAL_ENV=development`` (anonymous admin, no tokens); every
other ``MIGVAL_*``, ``DB_*``, ``SQLITE_*`` and ``SSL_*`` variable of the test process is
dropped, ``env=`` adds or overrides variables. The port comes from uvicorn's own
"Uvicorn running on ..." line (no race for a free port), then ``/readyz`` must answer
200. stdout and stderr go to a log file (``server.log_text()``); ``log_problems()`` lists
the lines that must never appear ("database is locked", tracebacks, ERROR lines). On
Linux the server also gets SIGKILL if the test process dies (PR_SET_PDEATHSIG).

Also here, for the tests of this package: the GraphQL documents and inputs of the
write workload, row counts, PostgreSQL backend inspection (pg_stat_activity) and the
SQLite write-lock probe, and ``run_cli`` (``migval ...`` as a subprocess).
"""

import asyncio
import contextlib
import ctypes
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from persistence.database import DatabaseManager
from persistence.maintenance.tables import row_counts

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 45.0  # importing strawberry & co. takes seconds on a busy 2-core box
STOP_TIMEOUT_S = 10.0
_DROPPED_ENV_PREFIXES = ("MIGVAL_", "DB_", "SQLITE_", "SSL_", "DATABASE_URL")
_LISTENING = re.compile(r"Uvicorn running on http://([0-9.]+):(\d+)")
# Lines of the server log that mean something went wrong.
LOG_PROBLEM_MARKERS = ("database is locked", "Traceback", "ERROR")
_counter = itertools.count(1)
_PR_SET_PDEATHSIG = 1


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message carries its log."""


@dataclass
class ServerProcess:
    """One ``migval serve`` process (started by ``start_server``)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    base_url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_problems(self, markers: Sequence[str] = LOG_PROBLEM_MARKERS) -> list[str]:
        """Log lines containing any of ``markers`` (case-insensitive)."""
        lowered = [m.lower() for m in markers]
        return [
            line for line in self.log_text().splitlines() if any(m in line.lower() for m in lowered)
        ]

    def client(self, timeout: float = 60.0, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client on this server (its own connection pool)."""
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, **kwargs)

    def kill(self) -> None:
        """SIGKILL, now: no shutdown, no rollback, nothing flushed."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful shutdown), SIGKILL if still running after ``timeout``.
        Returns the exit status (negative: the signal that ended it)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)

    async def astop(self, within_s: float = STOP_TIMEOUT_S) -> int:
        """``stop()`` without blocking the event loop while the server shuts down (its
        last requests may be waiting on clients served by this very loop)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await asyncio.to_thread(self.process.wait)
        self.kill()  # if still running; reaps it either way
        return int(self.process.returncode)

    async def wait_ready(self, within_s: float = STARTUP_TIMEOUT_S) -> None:
        """Until ``/readyz`` answers 200 (the port is read from the log first)."""
        deadline = time.monotonic() + within_s
        while not self.base_url:
            match = _LISTENING.search(self.log_text())
            if match:
                self.base_url = f"http://{match.group(1)}:{match.group(2)}"
                break
            self._check_running(deadline, "never listened")
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as client:
            while True:
                try:
                    response = await client.get("/readyz")
                    if response.status_code == 200:
                        return
                    last = f"/readyz answered {response.status_code}: {response.text}"
                except httpx.TransportError as error:
                    last = f"/readyz: {type(error).__name__}: {error}"
                self._check_running(deadline, last)
                await asyncio.sleep(0.05)

    def _check_running(self, deadline: float, what: str) -> None:
        if not self.alive():
            raise ServerFailed(
                f"migval serve exited with {self.process.returncode}: {what}\n{self.log_text()}"
            )
        if time.monotonic() > deadline:
            raise ServerFailed(f"migval serve not ready in time: {what}\n{self.log_text()}")


def server_env(database_url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a server or CLI subprocess on ``database_url``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "MIGVAL_ENV": "development",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux/glibc: no safety net, stop() still runs
        return None


# Resolved here, in the parent: between fork and exec the child may take no lock that
# another thread (aiosqlite's, the event loop's) could have held, so no dlopen/dlsym.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn_server(
    database_url: str,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> ServerProcess:
    """Start ``migval serve`` on a free port without waiting for it (then
    ``await server.wait_ready()``); the caller must ``stop()`` it."""
    log_path = log_dir / f"migval-serve-{os.getpid()}-{next(_counter)}.log"
    argv = [
        sys.executable,
        "-m",
        "graph.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-level",
        log_level,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            cwd=ROOT,
            env=server_env(database_url, env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,  # noqa: PLW1509 - one prctl call, no lock taken
        )
    return ServerProcess(process, log_path)


async def start_server(
    database_url: str,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> ServerProcess:
    """Start ``migval serve`` on a free port and wait until ``/readyz`` is 200. The
    caller must ``stop()`` it; prefer ``running_server``, which always does."""
    server = spawn_server(database_url, log_dir, env=env, log_level=log_level)
    try:
        await server.wait_ready(startup_timeout_s)
    except BaseException:
        server.kill()
        raise
    return server


@asynccontextmanager
async def running_server(
    database_url: str,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> AsyncIterator[ServerProcess]:
    """``start_server``, and stop it on the way out whatever happened."""
    server = await start_server(database_url, log_dir, env=env, log_level=log_level)
    try:
        yield server
    finally:
        await server.astop()


def run_cli(
    *args: str, database_url: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``migval ARGS`` as a subprocess on ``database_url``."""
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "graph.cli", *args],
        cwd=ROOT,
        env=server_env(database_url, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------------------- workload

CREATE_SESSION = """
mutation Create($input: CreateValidationSessionInput!) {
  createValidationSession(input: $input) {
    created
    session { id databaseId requestId }
    errors { field code message }
  }
}"""

RECORD_RESULT = """
mutation Record($input: RecordValidationResultInput!) {
  recordValidationResult(input: $input) {
    result { id databaseId }
    errors { field code message }
  }
}"""

READ_SESSIONS = """
query Read {
  sessions(first: 20) {
    totalCount
    nodes { requestId results { databaseId } discrepancies(first: 20) { totalCount } }
  }
}"""


def session_input(request_id: str) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "sourceTechnology": "PYTHON_FLASK",
        "targetTechnology": "JAVA_SPRING",
        "validationScope": "FULL_SYSTEM",
        "sourceInputType": "CODE_FILES",
        "targetInputType": "CODE_FILES",
    }


def discrepancy_inputs(n: int, *, padding: int = 0, tag: str = "") -> list[dict[str, Any]]:
    """``n`` valid discrepancies; ``padding`` characters of recommendation each make a
    large body (about 150 + padding bytes of JSON per item)."""
    severities = ("CRITICAL", "WARNING", "INFO")
    recommendation = "r" * padding if padding else None
    return [
        {
            "discrepancyType": "layout",
            "severity": severities[i % 3],
            "description": f"{tag}difference {i}",
            "recommendation": recommendation,
            "confidence": 0.5,
        }
        for i in range(n)
    ]


def record_input(request_id: str, discrepancies: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "overallStatus": "APPROVED",
        "fidelityScore": 0.9,
        "summary": "reliability run",
        "discrepancies": discrepancies,
    }


def gql_body(query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = dict(variables)
    return body


async def table_counts(db: DatabaseManager) -> dict[str, int]:
    """Rows per table (one statement)."""
    async with db.read_session() as session:
        return await row_counts(session)


async def session_outcome(db: DatabaseManager, request_id: str) -> tuple[int, int, int]:
    """(results, discrepancies, recordValidationResult audit entries) of one session."""
    async with db.read_session() as session:
        row = (
            await session.execute(
                sa.text(
                    "SELECT "
                    " (SELECT count(*) FROM validation_results r WHERE r.session_id = s.id),"
                    " (SELECT count(*) FROM validation_discrepancies d"
                    "   WHERE d.session_id = s.id),"
                    " (SELECT count(*) FROM audit_log a"
                    "   WHERE a.operation = 'recordValidationResult' AND a.entity_id IN"
                    "   (SELECT CAST(r.id AS VARCHAR(64)) FROM validation_results r"
                    "    WHERE r.session_id = s.id))"
                    " FROM validation_sessions s WHERE s.request_id = :rid"
                ),
                {"rid": request_id},
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


# ------------------------------------------------------------------ database probes

BUSY_STATES = ("active", "idle in transaction", "idle in transaction (aborted)")


async def pg_connect(database_url: str) -> asyncpg.Connection:
    """A plain asyncpg connection (not pooled, not 'migval') to the test database."""
    url = make_url(database_url)
    return await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=5,
    )


async def pg_busy_backends(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Other backends on ``conn``'s database that are running a statement or holding a
    transaction open (idle connections in a pool are fine)."""
    rows = await conn.fetch(
        "SELECT pid, application_name, state, wait_event_type, backend_xid::text AS xid,"
        " left(query, 80) AS query FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND state = ANY($1::text[])",
        list(BUSY_STATES),
    )
    return [dict(r) for r in rows]


async def pg_states(conn: asyncpg.Connection) -> list[str]:
    """The state of every other backend on ``conn``'s database."""
    rows = await conn.fetch(
        "SELECT coalesce(state, '?') FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return [str(r[0]) for r in rows]


async def wait_until(
    check: Callable[[], Any], *, within_s: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Await ``check()`` (sync or async) until it returns something truthy; fail with the
    last value after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}: {value!r}")
        await asyncio.sleep(interval)


def sqlite_file(database_url: str) -> str:
    path = make_url(database_url).database
    assert path, database_url
    return path


def sqlite_write_locked(path: str) -> bool:
    """Whether another connection holds the SQLite write lock (a write transaction is
    open): try BEGIN IMMEDIATE without waiting, and give the lock straight back."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return True
            raise
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


def sqlite_integrity(path: str) -> list[str]:
    """``PRAGMA integrity_check`` rows (``["ok"]`` when sound)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
