"""Soak: concurrent clients read and write through a real ``migval serve`` for N minutes
while PostgreSQL is restarted in the middle; then every write is accounted for.

    make soak                                  # uv run python -m bench.soak --minutes 3
    uv run python -m bench.soak --minutes 1 --clients 4 --restarts 2

Not a test (nothing here runs under pytest) and never a timed assertion: it prints
figures and exits 1 only when the accounting does not match.

What it does:

1. Starts a temporary PostgreSQL cluster (initdb/pg_ctl from PATH or
   /usr/lib/postgresql/*/bin, as the ``postgres`` user when run as root; own data
   directory, free port; ``synchronous_commit`` on, so a crash never loses what was
   acknowledged), creates ``migval_soak`` and runs ``alembic upgrade head``.
2. Starts ``migval serve`` on it (development mode, anonymous admin, the default pool and
   retry settings unless ``--server-env KEY=VALUE`` says otherwise).
3. Asks the schema (introspection) whether write inputs take an ``idempotencyKey`` and
   payloads say ``replayed``; uses them when they exist.
4. Runs ``--clients`` clients back to back, each its own HTTP connection pool: the
   dashboard query (sessions with latest result and open discrepancies), ``node(id:)``
   lookups of objects it was told exist, ``createValidationSession``,
   ``recordValidationResult`` with a few hundred discrepancies and ``resolveDiscrepancy``.
   A retryable ``SERVICE_UNAVAILABLE`` is retried with exponential backoff and jitter,
   with the same idempotency key. ``COMMIT_OUTCOME_UNKNOWN`` (or a lost HTTP connection)
   is retried when that is safe (an idempotency key, or an operation idempotent by
   itself); a result written without a key is looked up first and sent again only if
   it is not there. ``RESPONSE_INCOMPLETE`` with ``committed: true`` counts as acknowledged
   (the server says the write committed; only its reply could not be read). Any other
   error is final: the write counts as failed.
5. Restarts PostgreSQL ``--restarts`` times, evenly spaced: ``pg_ctl stop -m fast`` (or
   ``--stop-mode immediate``), ``--down`` seconds down, ``pg_ctl start``; a prober
   watches ``/healthz`` and ``/readyz`` meanwhile.
6. Prints requests, errors by code, latency percentiles and the accounting: per kind,
   writes sent, acknowledged, failed, outcome unknown, rows stored, lost (acknowledged,
   not stored), duplicated and unexplained (stored, never acknowledged nor unknown).
   It matches when every write sent was acknowledged and stored exactly once.

Everything it starts is stopped at the end, on errors and on Ctrl-C too; the cluster's
directory is removed; the server log is kept (path printed) when the run fails.
"""

import argparse
import asyncio
import atexit
import base64
import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

DATABASE = "migval_soak"
PREFIX = "soak"  # every requestId, summary and resolver of this run starts with it
READY_TIMEOUT_S = 60.0
_CLEANUPS: list[Callable[[], None]] = []


class SoakError(RuntimeError):
    """Setup failed: the message says why (exit 2)."""


# ------------------------------------------------------------------------- cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_binaries() -> tuple[str, str]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{bindir}/initdb", os.X_OK) and os.access(f"{bindir}/pg_ctl", os.X_OK):
            return f"{bindir}/initdb", f"{bindir}/pg_ctl"
    raise SoakError("no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin")


def _run_as() -> tuple[list[str], int | None]:
    """initdb and postgres refuse to run as root: run them as ``postgres`` then."""
    if os.geteuid() != 0:
        return [], None
    import pwd  # noqa: PLC0415 - POSIX only, needed on this path only

    runuser = shutil.which("runuser")
    try:
        owner = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        raise SoakError("running as root and no 'postgres' user to run initdb") from None
    if runuser is None:
        raise SoakError("running as root and no runuser to run initdb as postgres")
    return [runuser, "-u", "postgres", "--"], owner


@dataclass
class Cluster:
    """A throw-away PostgreSQL cluster, stopped and started on the same port."""

    base: Path
    port: int
    pg_ctl: str
    run_as: list[str]
    running: bool = False

    @classmethod
    def create(cls) -> "Cluster":
        initdb, pg_ctl = _pg_binaries()
        run_as, owner = _run_as()
        base = Path(tempfile.mkdtemp(prefix="migval-soak-pg-"))
        if owner is not None:
            os.chown(base, owner, -1)
        cluster = cls(base, _free_port(), pg_ctl, run_as)
        _CLEANUPS.append(cluster.destroy)
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*run_as, initdb, "-D", str(cluster.data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=False,
            capture_output=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise SoakError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        with (cluster.data / "postgresql.conf").open("a") as conf:
            # synchronous_commit stays on: an acknowledged commit must survive a crash.
            conf.write(
                f"\nport = {cluster.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base}'\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 100\n"
            )
        cluster.start()
        return cluster

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database=database, timeout=10
        )

    def start(self) -> None:
        self._pg_ctl("-w", "-t", "120", "-l", str(self.log), "start")
        self.running = True

    def stop(self, mode: str) -> None:
        self._pg_ctl("-w", "-t", "120", "-m", mode, "stop")
        self.running = False

    def destroy(self) -> None:
        if self.base.exists():
            self._pg_ctl("-w", "-m", "immediate", "stop", check=False)
            shutil.rmtree(self.base, ignore_errors=True)
        self.running = False

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*self.run_as, self.pg_ctl, "-D", str(self.data), *args],
            check=False,
            capture_output=True,
            timeout=180,
        )
        if check and done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise SoakError(
                f"pg_ctl {' '.join(args)}: {done.stderr.decode(errors='replace')}\n{tail}"
            )


# -------------------------------------------------------------------------- server


@dataclass
class Server:
    """``migval serve`` in its own process group (only that group is ever signalled)."""

    database_url: str
    log_path: Path
    extra_env: dict[str, str]
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("MIGVAL_", "DB_", "SSL_", "SQLITE_", "DATABASE_URL"))
        }
        env.update(
            DATABASE_URL=self.database_url,
            MIGVAL_ENV="development",
            MIGVAL_ANONYMOUS_ROLE="admin",
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        argv = [sys.executable, "-m", "graph.cli", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "warning"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv,
                cwd=Path(__file__).resolve().parent.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CLEANUPS.append(self.stop)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise SoakError(f"migval serve exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise SoakError(f"migval serve not ready after {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # the group this script created
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def _cleanup() -> None:
    while _CLEANUPS:
        with contextlib.suppress(Exception):
            _CLEANUPS.pop()()


atexit.register(_cleanup)


# ----------------------------------------------------------------------- documents

FEATURES = """
query Features {
  create: __type(name: "CreateValidationSessionInput") { inputFields { name } }
  record: __type(name: "RecordValidationResultInput") { inputFields { name } }
  resolve: __type(name: "ResolveDiscrepancyInput") { inputFields { name } }
  createPayload: __type(name: "CreateValidationSessionPayload") { fields { name } }
  recordPayload: __type(name: "RecordValidationResultPayload") { fields { name } }
  resolvePayload: __type(name: "DiscrepancyPayload") { fields { name } }
}"""

CREATE = """
mutation Create($input: CreateValidationSessionInput!) {
  createValidationSession(input: $input) {
    created REPLAYED errors { code field message } session { id requestId }
  }
}"""

RECORD = """
mutation Record($input: RecordValidationResultInput!) {
  recordValidationResult(input: $input) {
    REPLAYED errors { code field message }
    result { id databaseId discrepancies { id databaseId } }
  }
}"""

RESOLVE = """
mutation Resolve($input: ResolveDiscrepancyInput!) {
  resolveDiscrepancy(input: $input) {
    REPLAYED errors { code field message } discrepancy { id databaseId isResolved }
  }
}"""

DASHBOARD = """
query Dashboard {
  sessions(first: 20) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes {
      id requestId status createdAt
      latestResult { overallStatus fidelityScore }
      discrepancies(first: 5, filter: {resolved: false}) {
        totalCount nodes { id severity description }
      }
    }
  }
}"""

NODE = """
query Node($id: ID!) {
  node(id: $id) {
    id
    ... on ValidationSession { requestId status }
    ... on ValidationResult { summary fidelityScore }
    ... on Discrepancy { isResolved version }
  }
}"""

RESULTS_OF = """
query ResultsOf($rid: String!) {
  session(requestId: $rid) { results { id databaseId summary } }
}"""

SEVERITIES = ("CRITICAL", "WARNING", "INFO")
STACKS = ("PYTHON_FLASK", "JAVA_SPRING", "JAVASCRIPT_ANGULAR", "TYPESCRIPT_REACT")


@dataclass(frozen=True)
class Features:
    keys: frozenset[str]  # mutations whose input takes idempotencyKey
    replayed: frozenset[str]  # mutations whose payload says replayed

    def document(self, template: str, mutation: str) -> str:
        return template.replace("REPLAYED", "replayed" if mutation in self.replayed else "")


async def detect_features(client: httpx.AsyncClient) -> Features:
    response = await client.post("/graphql", json={"query": FEATURES})
    data = response.json().get("data") or {}

    def names(alias: str, kind: str) -> set[str]:
        return {f["name"] for f in ((data.get(alias) or {}).get(kind) or [])}

    pairs = {
        "createValidationSession": ("create", "createPayload"),
        "recordValidationResult": ("record", "recordPayload"),
        "resolveDiscrepancy": ("resolve", "resolvePayload"),
    }
    keys = {m for m, (i, _) in pairs.items() if "idempotencyKey" in names(i, "inputFields")}
    replayed = {m for m, (_, p) in pairs.items() if "replayed" in names(p, "fields")}
    return Features(frozenset(keys), frozenset(replayed))


# ------------------------------------------------------------------ measurements


@dataclass
class Answer:
    """One HTTP attempt, classified: ok | retry (retryable SERVICE_UNAVAILABLE) |
    unknown (the write may or may not have landed) | failed (nothing was written)."""

    status: str
    code: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False


@dataclass
class Written:
    """One logical write and what the clients were finally told about it."""

    kind: str  # session | result | resolution
    key: str  # requestId | result summary | discrepancy databaseId
    expected: int = 0  # discrepancies sent with a result
    state: str = "pending"  # acked | failed | unknown
    code: str = ""


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    op_latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    retries: Counter[str] = field(default_factory=Counter)
    replayed: Counter[str] = field(default_factory=Counter)
    reconciled: Counter[str] = field(default_factory=Counter)
    final_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    node_misses: int = 0
    written: list[Written] = field(default_factory=list)
    error_times: list[float] = field(default_factory=list)  # s since the start
    t0: float = field(default_factory=time.monotonic)


def classify(response: httpx.Response, field_name: str | None) -> Answer:
    """What an HTTP answer means for the client (``field_name``: the mutation's field,
    whose payload ``errors`` are user errors)."""
    try:
        body = response.json()
    except ValueError:  # not even GraphQL: nothing can be said about a write
        return Answer("unknown", f"HTTP_{response.status_code}")
    errors = body.get("errors") or []
    if errors:
        return _top_level_error(errors[0])
    if response.status_code != 200:
        return Answer("failed", f"HTTP_{response.status_code}")
    data = body.get("data") or {}
    if field_name is None:
        return Answer("ok", data=data)
    payload = data.get(field_name) or {}
    if payload.get("errors"):
        return Answer("failed", f"user:{payload['errors'][0].get('code')}")
    return Answer("ok", data=payload, replayed=bool(payload.get("replayed")))


def _top_level_error(error: dict[str, Any]) -> Answer:
    extensions = error.get("extensions") or {}
    code = str(extensions.get("code") or "NO_CODE")
    if code == "SERVICE_UNAVAILABLE" and extensions.get("retryable") is True:
        return Answer("retry", code)
    if code in ("COMMIT_OUTCOME_UNKNOWN", "TIMEOUT"):  # a TIMEOUT's commit may have landed
        return Answer("unknown", code)
    if code == "RESPONSE_INCOMPLETE" and extensions.get("committed") is True:
        # The server says the write committed; only reading its reply failed.
        return Answer("committed", code)
    return Answer("failed", code)


def _db_id(global_id: str) -> int:
    return int(base64.b64decode(global_id).decode().rsplit(":", 1)[1])


# -------------------------------------------------------------------------- client


class Client:
    """One client: its own HTTP pool, its own sessions and discrepancies to resolve."""

    def __init__(
        self, number: int, server_url: str, features: Features, stats: Stats,
        args: argparse.Namespace,
    ) -> None:
        self.name = f"{PREFIX}-{number}"
        self.http = httpx.AsyncClient(base_url=server_url, timeout=args.request_timeout)
        self.features, self.stats, self.args = features, stats, args
        self.rng = random.Random(args.seed * 1000 + number)
        self.sessions: list[str] = []  # acknowledged requestIds
        self.unresolved: list[str] = []  # global ids of discrepancies to resolve
        self.known: list[str] = []  # global ids the server said exist
        self.serial = 0

    async def run(self, until: float) -> None:
        try:
            while time.monotonic() < until:
                await self.step()
        finally:
            await self.http.aclose()

    async def step(self) -> None:
        roll = self.rng.random()
        if not self.sessions or roll < 0.15:
            await self.create_session()
        elif roll < 0.27:
            await self.record_result()
        elif roll < 0.45 and self.unresolved:
            await self.resolve()
        elif roll < 0.75 or not self.known:
            await self.dashboard()
        else:
            await self.node()

    # -- one HTTP attempt, and one operation with its retries

    async def attempt(
        self, kind: str, query: str, variables: dict[str, Any] | None, field_name: str | None
    ) -> Answer:
        self.stats.requests[kind] += 1
        started = time.perf_counter()
        try:
            response = await self.http.post(
                "/graphql", json={"query": query, "variables": variables or {}}
            )
        except httpx.TransportError as error:
            answer = Answer("unknown", f"TRANSPORT:{type(error).__name__}")
        else:
            answer = classify(response, field_name)
        self.stats.latency[kind].append(time.perf_counter() - started)
        if answer.status != "ok":
            self.stats.errors[kind, answer.code] += 1
            self.stats.error_times.append(time.monotonic() - self.stats.t0)
        return answer

    async def operation(
        self,
        kind: str,
        query: str,
        variables: dict[str, Any] | None = None,
        field_name: str | None = None,
        *,
        resend_safe: bool = True,
        reconcile: Callable[[], Awaitable[Answer | None]] | None = None,
    ) -> Answer:
        """Attempts until success or a final answer; retryable errors are retried with
        backoff (a resend carries the same input, so the same idempotency key)."""
        started = time.monotonic()
        deadline = started + self.args.op_budget
        tries = 0
        while True:
            answer = await self.attempt(kind, query, variables, field_name)
            if answer.status in ("ok", "committed"):
                break
            again = answer.status == "retry" or (answer.status == "unknown" and resend_safe)
            if answer.status == "unknown" and not resend_safe and reconcile is not None:
                found = await reconcile()
                if found is not None:
                    self.stats.reconciled[kind] += 1
                    answer = found
                    break
                again = True  # not there: it was not written, send it again
            if not again or time.monotonic() > deadline:
                self.stats.final_errors[kind, answer.code] += 1
                break
            self.stats.retries[kind] += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**tries) * self.rng.uniform(0.5, 1.0))
            tries += 1
        if answer.replayed:
            self.stats.replayed[kind] += 1
        self.stats.op_latency[kind].append(time.monotonic() - started)
        return answer

    def _with_key(self, mutation: str, values: dict[str, Any], key: str) -> dict[str, Any]:
        if mutation in self.features.keys:
            return {**values, "idempotencyKey": key}
        return values

    @staticmethod
    def _settle(written: Written, answer: Answer) -> None:
        # A final retryable refusal (out of budget) was not written either.
        states = {"ok": "acked", "committed": "acked", "failed": "failed", "retry": "failed"}
        written.state = states.get(answer.status, "unknown")
        written.code = answer.code

    # -- writes

    async def create_session(self) -> None:
        self.serial += 1
        rid = f"{self.name}-s{self.serial}"
        values = {
            "requestId": rid,
            "sourceTechnology": self.rng.choice(STACKS),
            "targetTechnology": self.rng.choice(STACKS),
            "validationScope": "FULL_SYSTEM",
            "sourceInputType": "CODE_FILES",
            "targetInputType": "CODE_FILES",
            "sessionMetadata": {"soak": True, "client": self.name},
        }
        mutation = "createValidationSession"
        written = Written("session", rid)
        self.stats.written.append(written)
        # Idempotent by itself: the same requestId and content returns the same session.
        answer = await self.operation(
            mutation, self.features.document(CREATE, mutation),
            {"input": self._with_key(mutation, values, f"{rid}/create")}, mutation,
        )
        self._settle(written, answer)
        if answer.status == "ok":
            self.sessions.append(rid)
            self.known.append(answer.data["session"]["id"])

    async def record_result(self) -> None:
        self.serial += 1
        rid = self.rng.choice(self.sessions)
        summary = f"{PREFIX} result {self.name}-r{self.serial}"
        n = self.rng.randint(
            self.args.discrepancies - self.args.discrepancies // 3,
            self.args.discrepancies + self.args.discrepancies // 3,
        )
        values = {
            "requestId": rid,
            "overallStatus": self.rng.choice(("APPROVED", "APPROVED_WITH_WARNINGS", "REJECTED")),
            "fidelityScore": round(self.rng.random(), 3),
            "summary": summary,
            "discrepancies": [
                {
                    "discrepancyType": self.rng.choice(("layout", "behavior", "api", "data")),
                    "severity": SEVERITIES[i % 3],
                    "description": f"{summary}: difference {i}",
                    "sourceElement": f"#source-{i}",
                    "targetElement": f"#target-{i}",
                    "confidence": 0.5,
                    "componentType": "widget",
                }
                for i in range(n)
            ],
        }
        mutation = "recordValidationResult"
        keyed = mutation in self.features.keys
        written = Written("result", summary, expected=n)
        self.stats.written.append(written)

        async def reconcile() -> Answer | None:
            # Without a key a resend could write twice: look for the result first.
            found = await self.operation("reconcile", RESULTS_OF, {"rid": rid}, None)
            if found.status != "ok":
                return None
            results = ((found.data.get("session") or {}).get("results")) or []
            if any(r["summary"] == summary for r in results):
                return Answer("ok", data={"result": None})
            return None

        answer = await self.operation(
            mutation, self.features.document(RECORD, mutation),
            {"input": self._with_key(mutation, values, f"{summary}/record")}, mutation,
            resend_safe=keyed, reconcile=None if keyed else reconcile,
        )
        self._settle(written, answer)
        result = answer.data.get("result") if answer.status == "ok" else None
        if result:
            self.known.append(result["id"])
            items = result.get("discrepancies") or []
            self.known.extend(d["id"] for d in items[:3])
            self.unresolved.extend(d["id"] for d in items[: self.args.resolve_per_result])

    async def resolve(self) -> None:
        gid = self.unresolved.pop(self.rng.randrange(len(self.unresolved)))
        mutation = "resolveDiscrepancy"
        written = Written("resolution", str(_db_id(gid)))
        self.stats.written.append(written)
        values = {"id": gid, "resolvedBy": self.name, "notes": "soak: accepted"}
        # Resolving a resolved discrepancy again leaves it resolved: safe to resend.
        answer = await self.operation(
            mutation, self.features.document(RESOLVE, mutation),
            {"input": self._with_key(mutation, values, f"{gid}/resolve")}, mutation,
        )
        self._settle(written, answer)

    # -- reads

    async def dashboard(self) -> None:
        await self.operation("dashboard", DASHBOARD)

    async def node(self) -> None:
        gid = self.rng.choice(self.known)
        answer = await self.operation("node", NODE, {"id": gid})
        if answer.status == "ok" and (answer.data.get("node") or {}).get("id") != gid:
            self.stats.node_misses += 1  # the server said it exists: it must be found


# -------------------------------------------------------------------------- prober


@dataclass
class Timeline:
    events: list[tuple[float, str]] = field(default_factory=list)
    readyz: list[tuple[float, int]] = field(default_factory=list)  # status changes
    healthz_failures: int = 0
    healthz_checks: int = 0


async def probe(url: str, timeline: Timeline, t0: float, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        last = None
        while not stop.is_set():
            try:
                timeline.healthz_checks += 1
                if (await client.get("/healthz")).status_code != 200:
                    timeline.healthz_failures += 1
                status = (await client.get("/readyz")).status_code
            except httpx.TransportError:
                timeline.healthz_failures += 1
                status = 0
            if status != last:
                timeline.readyz.append((time.monotonic() - t0, status))
                last = status
            await asyncio.sleep(0.2)


async def restarts(
    cluster: Cluster, args: argparse.Namespace, timeline: Timeline, t0: float
) -> None:
    duration = args.minutes * 60
    for i in range(args.restarts):
        at = t0 + duration * (i + 1) / (args.restarts + 1)
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        timeline.events.append((time.monotonic() - t0, f"pg_ctl stop -m {args.stop_mode}"))
        await asyncio.to_thread(cluster.stop, args.stop_mode)
        timeline.events.append((time.monotonic() - t0, "stopped"))
        await asyncio.sleep(args.down)
        timeline.events.append((time.monotonic() - t0, "pg_ctl start"))
        await asyncio.to_thread(cluster.start)
        timeline.events.append((time.monotonic() - t0, "started"))


# ---------------------------------------------------------------------- accounting


@dataclass
class Line:
    kind: str
    sent: int
    acked: int
    failed: int
    unknown: int
    stored: int
    lost: int
    duplicated: int
    unexplained: int

    @property
    def ok(self) -> bool:
        clean = self.lost == self.duplicated == self.unexplained == 0
        return clean and self.sent == self.acked == self.stored


async def account(cluster: Cluster, written: list[Written]) -> list[Line]:
    conn = await cluster.connect(DATABASE)
    try:
        sessions = Counter(
            r[0] for r in await conn.fetch(
                "SELECT request_id FROM validation_sessions WHERE request_id LIKE $1",
                f"{PREFIX}-%",
            )
        )
        result_rows = await conn.fetch(
            "SELECT r.summary, count(d.id) AS n FROM validation_results r "
            "LEFT JOIN validation_discrepancies d ON d.result_id = r.id "
            "WHERE r.summary LIKE $1 GROUP BY r.id, r.summary",
            f"{PREFIX} result %",
        )
        resolved = Counter(
            str(r[0]) for r in await conn.fetch(
                "SELECT id FROM validation_discrepancies "
                "WHERE is_resolved AND resolved_by LIKE $1",
                f"{PREFIX}-%",
            )
        )
    finally:
        await conn.close()
    results = Counter(r["summary"] for r in result_rows)
    stored_discrepancies: dict[str, int] = defaultdict(int)
    for r in result_rows:
        stored_discrepancies[r["summary"]] += int(r["n"])

    return [
        _line("sessions", [w for w in written if w.kind == "session"], sessions),
        _line("results", [w for w in written if w.kind == "result"], results),
        _discrepancy_line([w for w in written if w.kind == "result"], stored_discrepancies),
        _line("resolutions", _last_per_key(w for w in written if w.kind == "resolution"),
              resolved),
    ]


def _last_per_key(items: Any) -> list[Written]:
    return list({w.key: w for w in items}.values())


def _line(kind: str, sent: list[Written], stored: Counter[str]) -> Line:
    by_state: dict[str, set[str]] = defaultdict(set)
    for w in sent:
        by_state[w.state].add(w.key)
    acked = by_state["acked"]
    return Line(
        kind,
        sent=len(sent),
        acked=len(acked),
        failed=len(by_state["failed"]),
        unknown=len(by_state["unknown"] | by_state["pending"]),
        stored=sum(stored.values()),
        lost=len(acked - stored.keys()),
        duplicated=sum(n - 1 for n in stored.values() if n > 1),
        unexplained=len(stored.keys() - acked - by_state["unknown"] - by_state["pending"]),
    )


def _discrepancy_line(sent: list[Written], stored: dict[str, int]) -> Line:
    acked = [w for w in sent if w.state == "acked"]
    settled = {w.key for w in sent if w.state != "failed"}
    return Line(
        "discrepancies",
        sent=sum(w.expected for w in sent),
        acked=sum(w.expected for w in acked),
        failed=sum(w.expected for w in sent if w.state == "failed"),
        unknown=sum(w.expected for w in sent if w.state in ("unknown", "pending")),
        stored=sum(stored.values()),
        lost=sum(max(0, w.expected - stored.get(w.key, 0)) for w in acked),
        duplicated=sum(max(0, stored.get(w.key, 0) - w.expected) for w in sent),
        unexplained=sum(n for key, n in stored.items() if key not in settled),
    )


# -------------------------------------------------------------------------- report


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def report(
    args: argparse.Namespace, stats: Stats, timeline: Timeline, lines: list[Line],
    elapsed: float, server: Server, features: Features,
) -> bool:
    print(f"\nran {elapsed:.1f} s with {args.clients} clients; idempotencyKey used for: "
          f"{', '.join(sorted(features.keys)) or 'none (not in the schema)'}")
    print("\ntimeline (s since start)")
    events = [*timeline.events]
    events += [(t, f"/readyz -> {status or 'no answer'}") for t, status in timeline.readyz]
    if stats.error_times:
        events.append((min(stats.error_times), "first error answer"))
        events.append((max(stats.error_times), "last error answer"))
    for t, what in sorted(events):
        print(f"  {t:7.1f}  {what}")
    print(f"  /healthz: {timeline.healthz_checks - timeline.healthz_failures}/"
          f"{timeline.healthz_checks} answered 200")

    print("\nrequests (HTTP attempts)     count   p50 ms   p90 ms   p99 ms   max ms   mean ms")
    for kind in sorted(stats.requests):
        lat = stats.latency[kind]
        mean = f"{statistics.fmean(lat) * 1000:.1f}" if lat else "-"
        print(f"  {kind:26} {stats.requests[kind]:7d} {_ms(lat, .5):>8} {_ms(lat, .9):>8} "
              f"{_ms(lat, .99):>8} {_ms(lat, 1):>8} {mean:>9}")
    print("\noperations, retries included   ops   retries  replayed  reconciled  p50 ms  p99 ms"
          "   max ms")
    for kind in sorted(stats.op_latency):
        lat = stats.op_latency[kind]
        print(f"  {kind:26} {len(lat):7d} {stats.retries[kind]:9d} {stats.replayed[kind]:9d} "
              f"{stats.reconciled[kind]:11d} {_ms(lat, .5):>7} {_ms(lat, .99):>7} "
              f"{_ms(lat, 1):>8}")

    print("\nerrors by kind and code (HTTP attempts; final: the operation gave up)")
    if not stats.errors:
        print("  none")
    for (kind, code), n in sorted(stats.errors.items()):
        final = stats.final_errors.get((kind, code), 0)
        print(f"  {kind:26} {code:32} {n:6d}   final {final}")
    if stats.node_misses:
        print(f"  node(id:) returned null for {stats.node_misses} acknowledged objects")
    unexpected = [
        line for line in server.log_path.read_text(errors="replace").splitlines()
        if line.startswith(("asyncpg.", "sqlalchemy.", "ConnectionResetError", "OSError"))
    ] if server.log_path.exists() else []
    if unexpected:
        print("  server log, exceptions behind masked errors:")
        for text, n in Counter(unexpected).most_common(6):
            print(f"    {n:5d}  {text[:110]}")

    print("\naccounting          sent   acked  failed  unknown  stored   lost  duplicated"
          "  unexplained")
    for ln in lines:
        mark = "ok" if ln.ok else "MISMATCH"
        print(f"  {ln.kind:14} {ln.sent:7d} {ln.acked:7d} {ln.failed:7d} {ln.unknown:8d} "
              f"{ln.stored:7d} {ln.lost:6d} {ln.duplicated:11d} {ln.unexplained:12d}  {mark}")
    good = all(ln.ok for ln in lines) and stats.node_misses == 0
    if good:
        print("\nOK: sent = acknowledged = stored for every kind; nothing lost, nothing "
              "duplicated")
    else:
        bad = [ln.kind for ln in lines if not ln.ok]
        print(f"\nMISMATCH in {', '.join(bad) or 'reads'}: sent, acknowledged and stored differ "
              "(failed/unknown: writes never acknowledged; lost: acknowledged but not stored; "
              "unexplained: stored although never acknowledged)")
    return good


# ---------------------------------------------------------------------------- main


async def soak(args: argparse.Namespace, cluster: Cluster, server: Server) -> bool:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        features = await detect_features(client)
    stats, timeline = Stats(), Timeline()
    t0 = stats.t0 = time.monotonic()
    until = t0 + args.minutes * 60
    stop_probe = asyncio.Event()
    prober = asyncio.create_task(probe(server.url, timeline, t0, stop_probe))
    restarter = asyncio.create_task(restarts(cluster, args, timeline, t0))
    clients = [Client(i, server.url, features, stats, args) for i in range(args.clients)]
    progress = asyncio.create_task(_progress(stats, t0, until))
    try:
        await asyncio.gather(*(c.run(until) for c in clients), restarter)
    finally:
        stop_probe.set()
        progress.cancel()
        await asyncio.gather(prober, progress, return_exceptions=True)
    elapsed = time.monotonic() - t0
    if not server.alive():
        print(f"migval serve died during the run:\n{server.log_tail()}", file=sys.stderr)
        return False
    lines = await account(cluster, stats.written)
    return report(args, stats, timeline, lines, elapsed, server, features)


async def _progress(stats: Stats, t0: float, until: float) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(15)
        done = sum(stats.requests.values())
        errors = sum(stats.errors.values())
        print(f"  {time.monotonic() - t0:6.0f} s: {done} requests, {errors} errors", flush=True)


async def _create_database(cluster: Cluster) -> None:
    conn = await cluster.connect()
    try:
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


def _parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--server-env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak migval on a temporary PostgreSQL cluster restarted mid-run; "
        "exit 1 when the row accounting does not match, 2 when setup fails.",
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="run time (default 3)")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients (6)")
    parser.add_argument("--discrepancies", type=int, default=300,
                        help="discrepancies per result, +-1/3 (300)")
    parser.add_argument("--resolve-per-result", type=int, default=5,
                        help="discrepancies of each result later resolved (5)")
    parser.add_argument("--restarts", type=int, default=1, help="PostgreSQL restarts (1)")
    parser.add_argument("--down", type=float, default=5.0, help="seconds down per restart (5)")
    parser.add_argument("--stop-mode", choices=("fast", "immediate"), default="fast",
                        help="pg_ctl stop mode (fast)")
    parser.add_argument("--op-budget", type=float, default=120.0,
                        help="seconds an operation keeps retrying (120)")
    parser.add_argument("--request-timeout", type=float, default=60.0,
                        help="client HTTP timeout in seconds (60)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra server setting, e.g. DB_POOL_SIZE=10 (repeatable)")
    parser.add_argument("--seed", type=int, default=None,
                        help="workload seed (default: random, printed)")
    args = parser.parse_args(argv)
    args.server_env = _parse_env(args.server_env)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if args.clients < 1 or args.minutes <= 0 or args.restarts < 0:
        parser.error("--clients >= 1, --minutes > 0, --restarts >= 0")
    return args


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="migval-soak-"))
    server: Server | None = None
    good = False
    # SIGTERM ends the run like Ctrl-C: the finally below stops everything.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print("soak: starting a temporary PostgreSQL cluster ...", flush=True)
        cluster = Cluster.create()
        asyncio.run(_create_database(cluster))
        from alembic import command  # noqa: PLC0415 - slow imports, after the cheap checks

        from persistence.schema_version import alembic_config  # noqa: PLC0415

        command.upgrade(alembic_config(cluster.url(DATABASE)), "head")
        server = Server(cluster.url(DATABASE), logs / "migval-serve.log", args.server_env)
        server.start()
        asyncio.run(server.wait_ready())
        print(f"soak: PostgreSQL on 127.0.0.1:{cluster.port}, migval serve on {server.url} "
              f"(pid {server.process.pid if server.process else '?'}); "
              f"{args.minutes:g} min, {args.clients} clients, {args.restarts} restart(s) "
              f"of {args.down:g} s (stop -m {args.stop_mode}), seed {args.seed}", flush=True)
        good = asyncio.run(soak(args, cluster, server))
    except SoakError as error:
        print(f"soak: setup failed: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:
        _cleanup()
        if good:
            shutil.rmtree(logs, ignore_errors=True)
        elif server is not None:
            print(f"soak: server log kept in {server.log_path}", file=sys.stderr)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
