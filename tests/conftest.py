"""Shared fixtures: every test that uses ``backend`` (directly or through ``db``,
``database_url``, ``empty_database_url`` ...) runs once on SQLite and once on PostgreSQL.

Fixtures meant for reuse:

- ``backend`` (session, parametrized): ``"sqlite"`` or ``"postgresql"``.
- ``database_url`` (session): URL of this run's database for the current backend,
  built by ``alembic upgrade head`` only.
- ``db_manager`` (session): the ``DatabaseManager`` on ``database_url``; no cleanup.
- ``db`` (function): the same manager; every table is emptied (and ids restarted)
  after the test. Use this one in tests that write.
- ``db_factory`` (function): ``db_factory(url=None, **settings_overrides)`` builds an
  extra ``DatabaseManager`` (default URL: ``database_url``), disposed after the test.
- ``empty_database_url`` (function): a brand-new, empty database of the current
  backend (no tables, no alembic_version), dropped after the test.
- ``alembic_run`` (session): ``await alembic_run("upgrade" | "downgrade", url, rev)``.
- ``sqlite_path`` (function): file path of the shared SQLite database (sqlite only).
- ``pg_server`` (session): the PostgreSQL server (``PgServer``: ``admin_url``,
  ``create_database``/``drop_database``); requesting it skips/fails as described below.

Every query the suite sends in-process runs in execution-plan ``verify`` mode
(MIGVAL_EXECUTION_PLANS, graph.plan): through the compiled plan and through standard
execution, and a test fails if the two responses differ in any byte.

Markers: ``postgres_only`` / ``sqlite_only`` keep a backend-parametrized test on one
backend (the other variant is deselected, not skipped).

PostgreSQL comes from TEST_DATABASE_URL, else 127.0.0.1:5432 (user postgres), else a
temporary cluster (initdb/pg_ctl). Without any, PostgreSQL tests are skipped with the
reason, except under CI=true where they fail.
"""

import asyncio
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

# Before graph is imported: every app the suite builds verifies its plans.
os.environ.setdefault("MIGVAL_EXECUTION_PLANS", "verify")

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import URL, make_url

from persistence.database import DatabaseManager
from persistence.models import metadata
from persistence.schema_version import alembic_config
from persistence.settings import DatabaseSettings

BACKENDS = ("sqlite", "postgresql")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Children before parents, so plain DELETEs never trip a foreign key.
TABLES_CHILD_FIRST = tuple(t.name for t in reversed(metadata.sorted_tables))

AlembicRun = Callable[[Literal["upgrade", "downgrade"], str, str], Awaitable[None]]
DbFactory = Callable[..., DatabaseManager]

_PG_CONNECT_TIMEOUT_S = 3.0
_pg_unavailable_reason: list[str] = []


# --------------------------------------------------------------------------- markers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """postgres_only / sqlite_only: deselect the variant for the other backend."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        pg_only = item.get_closest_marker("postgres_only") is not None
        sqlite_only = item.get_closest_marker("sqlite_only") is not None
        if not (pg_only or sqlite_only):
            keep.append(item)
            continue
        if pg_only and sqlite_only:
            raise pytest.UsageError(f"{item.nodeid}: both postgres_only and sqlite_only")
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("backend") if callspec is not None else None
        if param is None:
            raise pytest.UsageError(
                f"{item.nodeid}: postgres_only/sqlite_only need the backend fixture "
                "(directly or through db, database_url, ...)"
            )
        wanted = "postgresql" if pg_only else "sqlite"
        (keep if param == wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _pg_unavailable_reason:
        terminalreporter.section("PostgreSQL NOT TESTED", sep="!", red=True, bold=True)
        terminalreporter.line(_pg_unavailable_reason[0], red=True)


# ---------------------------------------------------------------- PostgreSQL server


@dataclass
class PgServer:
    """A PostgreSQL server on which this run may create and drop databases."""

    admin_url: URL  # postgresql+asyncpg URL of a database to connect to for admin work
    source: str
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    def url_for(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    async def connect_admin(self) -> asyncpg.Connection:
        return await _pg_connect(self.admin_url)

    async def create_database(self, name: str) -> str:
        conn = await self.connect_admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url_for(name)

    async def drop_database(self, name: str) -> None:
        conn = await self.connect_admin()
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()


async def _pg_connect(url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=url.host or url.query.get("host"),
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=_PG_CONNECT_TIMEOUT_S,
    )


async def _reachable(url: URL) -> str | None:
    """None if a connection works, else why not."""
    try:
        conn = await _pg_connect(url)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"{type(error).__name__}: {error}"
    await conn.close()
    return None


def _pg_binaries() -> tuple[str, str] | None:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        initdb, pg_ctl = f"{bindir}/initdb", f"{bindir}/pg_ctl"
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ClusterUnavailable(Exception):
    """No PostgreSQL server binaries here, or no postgres user to run them as root."""


@dataclass(frozen=True)
class NewCluster:
    """A data directory made by initdb in ``base`` (a new temporary directory, owned by
    the user the server runs as); not configured, not started."""

    base: Path
    pg_ctl: str
    run_as: list[str]  # the command prefix that runs a PostgreSQL binary as that user
    owner: int | None

    @property
    def data(self) -> Path:
        return self.base / "data"


def _run_as() -> tuple[list[str], int | None]:
    """initdb and postgres refuse to run as root: run them as ``postgres`` then."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser")
    try:
        import pwd  # noqa: PLC0415 - POSIX only, needed on this path only

        owner: int | None = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        owner = None
    if runuser is None or owner is None:
        raise ClusterUnavailable("running as root and no 'postgres' user/runuser for initdb")
    return [runuser, "-u", "postgres", "--"], owner


def new_cluster(prefix: str) -> NewCluster:
    """initdb (user postgres, trust, UTF8) in a new temporary directory named with
    ``prefix``; the caller configures, starts and removes it. ClusterUnavailable when
    PostgreSQL cannot run here; RuntimeError (directory removed) when initdb fails."""
    binaries = _pg_binaries()
    if binaries is None:
        raise ClusterUnavailable("no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin")
    initdb, pg_ctl = binaries
    run_as, owner = _run_as()
    cluster = NewCluster(Path(tempfile.mkdtemp(prefix=prefix)), pg_ctl, run_as, owner)
    if owner is not None:
        os.chown(cluster.base, owner, -1)
    argv = [*run_as, initdb, "-D", str(cluster.data), "-U", "postgres", "-A", "trust"]
    try:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*argv, "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as error:
        shutil.rmtree(cluster.base, ignore_errors=True)
        detail = (getattr(error, "stderr", b"") or b"").decode(errors="replace")
        raise RuntimeError(f"initdb failed: {error}\n{detail}") from error
    return cluster


def _start_temp_cluster() -> tuple[PgServer | None, str]:
    """initdb + pg_ctl start in a temporary directory (blocking; run in a thread)."""
    try:
        made = new_cluster("migval-pg-")
    except (ClusterUnavailable, RuntimeError) as error:
        return None, str(error)
    base, data, run_as, pg_ctl = made.base, made.data, made.run_as, made.pg_ctl
    log = base / "server.log"
    port = _free_port()

    def remove() -> None:
        shutil.rmtree(base, ignore_errors=True)

    try:
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                *run_as,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        remove()
        return None, f"temporary cluster failed: {error} {detail.decode(errors='replace')}"

    def stop() -> None:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        remove()

    url = URL.create("postgresql+asyncpg", "postgres", None, "127.0.0.1", port, "postgres")
    return PgServer(url, f"temporary cluster on port {port} ({base})", [stop]), ""


async def _find_pg_server() -> tuple[PgServer | None, str]:
    env_url = os.environ.get("TEST_DATABASE_URL")
    if env_url:
        url = make_url(env_url)
        if url.drivername != "postgresql+asyncpg":
            pytest.fail(
                f"TEST_DATABASE_URL must be a postgresql+asyncpg:// URL, got {url!r}", pytrace=False
            )
        problem = await _reachable(url)
        if problem:  # configured explicitly: never fall back silently
            pytest.fail(f"TEST_DATABASE_URL is set but unreachable: {problem}", pytrace=False)
        return PgServer(url, "TEST_DATABASE_URL"), ""
    local = URL.create("postgresql+asyncpg", "postgres", None, "127.0.0.1", 5432, "postgres")
    local_problem = await _reachable(local)
    if local_problem is None:
        return PgServer(local, "127.0.0.1:5432"), ""
    server, problem = await asyncio.to_thread(_start_temp_cluster)
    if server is not None:
        temp_problem = await _reachable(server.admin_url)
        if temp_problem is None:
            return server, ""
        for cleanup in server._cleanup:
            await asyncio.to_thread(cleanup)
        problem = f"temporary cluster unreachable: {temp_problem}"
    return None, (
        "PostgreSQL unavailable, PostgreSQL tests NOT run. Tried: TEST_DATABASE_URL (unset); "
        f"127.0.0.1:5432 user postgres ({local_problem}); {problem}. "
        "Set TEST_DATABASE_URL=postgresql+asyncpg://... or install PostgreSQL."
    )


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[PgServer]:
    server, reason = await _find_pg_server()
    if server is None:
        _pg_unavailable_reason.append(reason)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        for cleanup in server._cleanup:
            await asyncio.to_thread(cleanup)


# ----------------------------------------------------------------------- databases


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def backend_pg_server(backend: str, request: pytest.FixtureRequest) -> PgServer | None:
    """The PostgreSQL server, requested only for the postgresql param (so SQLite tests
    never wait for, or skip on, PostgreSQL)."""
    if backend != "postgresql":
        return None
    server: PgServer = request.getfixturevalue("pg_server")
    return server


class DatabaseFactory:
    """Creates empty databases of one backend and drops them."""

    def __init__(self, backend: str, server: PgServer | None, sqlite_dir: Path) -> None:
        self.backend = backend
        self.server = server
        self.sqlite_dir = sqlite_dir
        self._created: dict[str, str] = {}  # url -> database name or file path

    async def create(self) -> str:
        name = f"migval_test_{os.getpid()}_{secrets.token_hex(4)}"
        if self.server is None:
            path = self.sqlite_dir / f"{name}.db"
            url = f"sqlite+aiosqlite:///{path}"
            self._created[url] = str(path)
        else:
            url = await self.server.create_database(name)
            self._created[url] = name
        return url

    async def drop(self, url: str) -> None:
        target = self._created.pop(url)
        if self.server is None:
            await asyncio.to_thread(_remove_sqlite_files, target)
        else:
            await self.server.drop_database(target)

    async def drop_all(self) -> None:
        for url in list(self._created):
            await self.drop(url)


def _remove_sqlite_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)


@pytest.fixture(scope="session")
async def database_factory(
    backend: str, backend_pg_server: PgServer | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(backend, backend_pg_server, tmp_path_factory.mktemp(backend))
    try:
        yield factory
    finally:
        await factory.drop_all()


async def run_alembic(action: Literal["upgrade", "downgrade"], url: str, revision: str) -> None:
    """Run an Alembic command in a worker thread (migrations/env.py calls asyncio.run)."""
    fn = command.upgrade if action == "upgrade" else command.downgrade
    await asyncio.to_thread(fn, alembic_config(url), revision)


@pytest.fixture(scope="session")
def alembic_run() -> AlembicRun:
    return run_alembic


@pytest.fixture(scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    """This run's shared database for the current backend, built by migrations only."""
    url = await database_factory.create()
    await run_alembic("upgrade", url, "head")
    return url


@pytest.fixture(scope="session")
async def db_manager(database_url: str) -> AsyncIterator[DatabaseManager]:
    manager = DatabaseManager(DatabaseSettings(url=database_url))
    try:
        yield manager
    finally:
        await manager.dispose()


async def empty_tables(manager: DatabaseManager) -> None:
    """Delete every row of every model table and restart ids (fast, keeps the schema)."""
    async with manager.engine.begin() as conn:
        if manager.dialect == "postgresql":
            # A transaction leaked by a test would make TRUNCATE wait: fail fast instead.
            await conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            await conn.exec_driver_sql(
                f"TRUNCATE {', '.join(TABLES_CHILD_FIRST)} RESTART IDENTITY CASCADE"
            )
            return
        for table in TABLES_CHILD_FIRST:
            await conn.exec_driver_sql(f"DELETE FROM {table}")
        has_sequence = await conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
        )
        if has_sequence.first() is not None:
            await conn.exec_driver_sql("DELETE FROM sqlite_sequence")


@pytest.fixture
async def db(db_manager: DatabaseManager) -> AsyncIterator[DatabaseManager]:
    """The shared DatabaseManager; all tables are emptied after the test."""
    try:
        yield db_manager
    finally:
        await empty_tables(db_manager)


@pytest.fixture
async def db_factory(database_url: str) -> AsyncIterator[DbFactory]:
    """Build extra managers (other settings, other databases); disposed after the test."""
    made: list[DatabaseManager] = []

    def make(url: str | None = None, **overrides: Any) -> DatabaseManager:
        settings = replace(DatabaseSettings(url=url or database_url), **overrides)
        manager = DatabaseManager(settings)
        made.append(manager)
        return manager

    try:
        yield make
    finally:
        for manager in made:
            await manager.dispose()


@pytest.fixture
async def empty_database_url(database_factory: DatabaseFactory) -> AsyncIterator[str]:
    """A fresh, empty database of the current backend, dropped after the test. Dispose
    any manager made on it before the test ends (``db_factory`` does so if it was
    requested after this fixture)."""
    url = await database_factory.create()
    try:
        yield url
    finally:
        await database_factory.drop(url)


@pytest.fixture
def sqlite_path(database_url: str) -> str:
    """Filesystem path of the shared SQLite database (sqlite backend only)."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        raise pytest.UsageError("sqlite_path needs the sqlite backend (mark sqlite_only)")
    return url.database


@pytest.fixture(autouse=True)
def _execution_plans_agree() -> Iterator[None]:
    """Fail the test if any query it sent answered differently through its compiled
    plan than through standard execution (verify mode, see the module docstring)."""
    from graph.plan.extension import MISMATCHES  # noqa: PLC0415 - after the env is set

    seen = MISMATCHES.count
    yield
    new = MISMATCHES.count - seen
    assert new == 0, "execution plan mismatch:\n" + "\n\n".join(list(MISMATCHES.recent)[-new:])
