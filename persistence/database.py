"""Engine, sessions, transactional retry, health and pool statistics.

Reads: ``read_session()`` gives a short session with no BEGIN/ROLLBACK round trips
(autocommit on PostgreSQL, no BEGIN on SQLite); open one per loader batch, never share
it between concurrent tasks. Writes: ``run_write(fn)`` runs ``fn`` in one transaction
(``BEGIN IMMEDIATE`` on SQLite) and retries the whole of it on transient errors.
"""

import asyncio
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine.interfaces import DBAPIConnection, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from persistence.errors import CommitOutcomeUnknown, ServiceUnavailable, ValidationFailed
from persistence.loop_reads import LoopReads
from persistence.schema_version import head_revision
from persistence.settings import DatabaseSettings, SSLMode

log = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL SQLSTATEs after which the whole transaction can simply be run again.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_NO_BEGIN = "migval_no_begin"
# Session.info key of read sessions, holding their connection (autocommit; no BEGIN on
# SQLite): persistence.driver_reads may send fixed statements on its driver connection
# (asyncpg, aiosqlite) itself.
DRIVER_READS = "migval_driver_reads"
# Session.info key of SQLite read sessions on a file: its LoopReads (persistence/loop_reads).
LOOP_READS = "migval_loop_reads"
_UNSTORABLE_TEXT = "strings must not contain NUL (U+0000) or unpaired surrogates"
# Connection-level SQLSTATEs: class 08 (connection exception), admin/crash shutdown,
# "cannot connect now" (starting up or shutting down).
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
_RETRYABLE_BUSY_SQLSTATES = frozenset({"53300"})  # too many connections
_QUERY_CANCELED = "57014"
_CANCELED = (
    "the database canceled the statement (statement timeout, DB_STATEMENT_TIMEOUT_MS, "
    "or an administrator); nothing was written, retry later"
)
# asyncpg raises its own exceptions while connecting (SQLAlchemy does not wrap them).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    exc.DBAPIError,
    OSError,
    ConnectionError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A server that ended the session while asyncpg waited for its next message leaves
    # the protocol half-way through an error: the connection is unusable.
    asyncpg.InternalClientError,
)
_READ_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeEncodeError,
    exc.StatementError,
    *DATABASE_ERRORS,
)

Transience = Literal["retry", "fatal"]


class _Abandoned(Exception):
    """The caller of run_write was cancelled: roll back instead of committing."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    checked_in: int
    checked_out: int
    overflow: int


@dataclass(frozen=True, slots=True)
class HealthStatus:
    ok: bool
    dialect: str
    latency_ms: float | None
    schema_revision: str | None
    head_revision: str
    at_head: bool
    error: str | None = None


class DatabaseManager:
    """Owns the engine. Create it in the app's lifespan; ``dispose()`` at shutdown."""

    def __init__(self, settings: DatabaseSettings, *, echo: bool = False) -> None:
        self.settings = settings
        self.engine: AsyncEngine = _create_engine(settings, echo=echo)
        self.loop_reads = _loop_reads(self.engine, settings.sqlite_loop_budget_ms)

    @classmethod
    def from_env(cls) -> "DatabaseManager":
        return cls(DatabaseSettings.from_env())

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        if self.loop_reads is not None:
            self.loop_reads.close()
        await self.engine.dispose()

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A short read-only unit: one per loader batch, never shared across tasks."""
        options: dict[str, Any] = (
            {_NO_BEGIN: True} if self.dialect == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
        )
        raw = self.engine.connect()
        try:
            await raw.start()
        except exc.TimeoutError as error:
            raise ServiceUnavailable(
                "database", "no database connection available (pool exhausted)"
            ) from error
        except DATABASE_ERRORS as error:
            if classify(error) == "fatal":
                raise
            raise ServiceUnavailable("database", "database unavailable; retry later") from error
        try:
            with read_errors():
                conn = await raw.execution_options(**options)
                async with AsyncSession(bind=conn, expire_on_commit=False) as session:
                    session.info[DRIVER_READS] = conn
                    if self.loop_reads is not None:
                        session.info[LOOP_READS] = self.loop_reads
                    yield session
        finally:
            await raw.close()

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """One transaction: commits on success, rolls back on any exception.
        Prefer ``run_write`` which adds retry."""
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def run_write(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction, retrying the whole of it on transient errors
        with exponential backoff and full jitter, bounded by attempts and a deadline.

        A connection lost while COMMIT is in flight raises CommitOutcomeUnknown and
        is never retried: the first attempt may have landed.

        If the caller is cancelled (client gone, request timeout), the transaction is
        not cancelled mid-statement (SQLite would keep its write lock on a connection
        the pool has dropped): it is rolled back at its next step, then the
        cancellation propagates.
        """
        abandoned = asyncio.Event()
        task = asyncio.ensure_future(self._write_attempts(fn, abandoned))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            abandoned.set()
            while not task.done():
                try:
                    await asyncio.wait([task])
                except asyncio.CancelledError:
                    continue  # finishing the rollback is what makes cancelling safe
            if not task.cancelled():
                task.exception()  # retrieved: the caller is gone, the outcome is moot
            raise

    async def _write_attempts(
        self, fn: Callable[[AsyncSession], Awaitable[T]], abandoned: asyncio.Event
    ) -> T:
        attempts = self.settings.retry_attempts
        deadline = time.monotonic() + self.settings.retry_deadline_s
        for attempt in range(1, attempts + 1):
            committing = False
            try:
                async with AsyncSession(self.engine, expire_on_commit=False) as session:
                    try:
                        value = await fn(session)
                        if abandoned.is_set():
                            raise _Abandoned
                        committing = True
                        await session.commit()
                    except BaseException:
                        await _quiet_rollback(session)
                        raise
                return value
            except exc.TimeoutError as error:  # pool exhausted: waiting longer won't help
                raise ServiceUnavailable(
                    "database", "no database connection available (pool exhausted)"
                ) from error
            except _READ_ERRORS as error:
                _raise_refused(error, committing=committing)
                if not isinstance(error, DATABASE_ERRORS) or classify(error) == "fatal":
                    raise
                if committing and is_disconnect(error):
                    raise CommitOutcomeUnknown(
                        "database", "connection lost during commit; outcome unknown"
                    ) from error
                delay = _backoff(attempt)
                if attempt == attempts or time.monotonic() + delay > deadline:
                    raise ServiceUnavailable(
                        "database", "database unavailable or busy; safe to retry"
                    ) from error
                log.warning(
                    "transient database error, retry %d/%d in %.3fs: %s",
                    attempt,
                    attempts,
                    delay,
                    type(error).__name__,
                )
                await asyncio.sleep(delay)
                if abandoned.is_set():
                    raise _Abandoned from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def health(self, timeout_s: float = 2.0) -> HealthStatus:
        """SELECT 1 within ``timeout_s`` and whether the schema is at the migration head."""
        head = head_revision()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s), self.read_session() as session:
                await session.execute(sa.text("SELECT 1"))
                latency = (time.perf_counter() - started) * 1000
                revision = await current_revision(session)
        except Exception as error:
            # Includes driver errors raised while connecting (unknown database, bad
            # password) that SQLAlchemy does not wrap.
            reason = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
            return HealthStatus(False, self.dialect, None, None, head, False, reason)
        at_head = revision == head
        return HealthStatus(at_head, self.dialect, latency, revision, head, at_head)

    def pool_stats(self) -> PoolStats:
        pool = self.engine.pool
        if isinstance(pool, QueuePool):
            return PoolStats(pool.size(), pool.checkedin(), pool.checkedout(), pool.overflow())
        return PoolStats(0, 0, 0, 0)


async def current_revision(session: AsyncSession) -> str | None:
    """The revision recorded in alembic_version, or None before the first migration."""
    try:
        row = await session.execute(sa.text("SELECT version_num FROM alembic_version"))
    except exc.DBAPIError:
        return None
    return row.scalar_one_or_none()


def classify(error: BaseException) -> Transience:
    """Whether running the whole transaction again may succeed."""
    if isinstance(error, ssl.SSLError):
        return "fatal"  # a bad certificate or TLS setup does not heal by retrying
    if is_disconnect(error):
        return "retry"
    if isinstance(error, asyncpg.PostgresError) and _sqlstate(error) in _RETRYABLE_BUSY_SQLSTATES:
        return "retry"
    if not isinstance(error, exc.DBAPIError):
        return "fatal"
    orig = error.orig
    sqlstate = _sqlstate(error)
    locked = isinstance(error, exc.OperationalError) and any(
        busy in str(orig).lower() for busy in ("database is locked", "database is busy")
    )
    retryable = _RETRYABLE_SQLSTATES | _RETRYABLE_BUSY_SQLSTATES
    return "retry" if sqlstate in retryable or locked else "fatal"


def is_disconnect(error: BaseException) -> bool:
    """The connection is gone (or unusable): whatever the driver wrapped it in."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            OSError
            | ConnectionError
            | asyncpg.ConnectionDoesNotExistError
            | asyncpg.InternalClientError
            | asyncpg.CannotConnectNowError,
        ) and not isinstance(current, ssl.SSLError):
            return True
        state = _sqlstate(current)
        if state is not None and (state.startswith("08") or state in _CONNECTION_SQLSTATES):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


@contextmanager
def read_errors() -> Iterator[None]:
    """What a read session reports for errors raised while reading: NUL or a lone
    surrogate in a lookup value is a ValidationFailed; a lost or unusable connection is
    ServiceUnavailable (nothing was written, so retrying is safe)."""
    try:
        yield
    except _READ_ERRORS as error:
        _raise_refused(error)
        if not isinstance(error, DATABASE_ERRORS) or classify(error) == "fatal":
            raise
        raise ServiceUnavailable("database", "database unavailable; retry later") from error


def _raise_refused(error: BaseException, *, committing: bool = False) -> None:
    """Errors a read and a write report alike, never retried here: a string the driver
    cannot store (NUL or a lone surrogate, e.g. in a requestId looked up) is a
    ValidationFailed; a statement PostgreSQL canceled (DB_STATEMENT_TIMEOUT_MS passed,
    waiting for a lock say, or an administrator) is ServiceUnavailable: the same wait
    may recur, but nothing was written, so the client may retry (not so for a COMMIT
    in flight: ``committing``)."""
    if _unstorable_text(error):
        raise ValidationFailed(None, _UNSTORABLE_TEXT) from None
    if _sqlstate(error) == _QUERY_CANCELED and not committing:
        raise ServiceUnavailable("database", _CANCELED) from error


def _unstorable_text(error: BaseException) -> bool:
    """The driver refused a string (PostgreSQL 22021, or it could not encode it)."""
    current: BaseException | None = error
    for _ in range(5):
        if current is None:
            return False
        if isinstance(current, UnicodeEncodeError) or _sqlstate(current) == "22021":
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _sqlstate(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if state is None and isinstance(error, exc.DBAPIError):
        orig = error.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


def _backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    # Full jitter: spreads retrying writers so they do not collide again.
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311


async def _quiet_rollback(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except (exc.SQLAlchemyError, OSError):  # the connection is already gone
        log.debug("rollback after failure failed", exc_info=True)


def _create_engine(settings: DatabaseSettings, *, echo: bool) -> AsyncEngine:
    if settings.dialect == "sqlite":
        engine = create_async_engine(
            settings.url,
            echo=echo,
            # Errors (and the logs they reach) never carry bound values: secrets.
            hide_parameters=True,
            # the driver's own timeout (seconds) backs up busy_timeout
            connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000},
            **_sqlite_pool_args(settings),
        )
        _install_sqlite_hooks(engine, settings)
        return engine
    engine = create_async_engine(
        settings.url,
        echo=echo,
        hide_parameters=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=settings.pool_pre_ping,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        connect_args=postgres_connect_args(settings),
    )

    @event.listens_for(engine.sync_engine, "handle_error")
    def _discard_lost_connections(context: ExceptionContext) -> None:
        # Errors SQLAlchemy does not recognise as disconnects (server shutting down,
        # a connection left mid-operation) must not send the connection back to the pool.
        if is_disconnect(context.original_exception):
            context.is_disconnect = True

    return engine


def _sqlite_pool_args(settings: DatabaseSettings) -> dict[str, Any]:
    """The pool settings for a SQLite file, as for PostgreSQL (they used to be ignored
    there: SQLAlchemy's 5 + 10 applied). A request beyond the pool size opens an
    overflow connection and closes it after (a thread, the file, four PRAGMAs), so the
    pool should fit the concurrency. An in-memory database keeps SQLAlchemy's single
    shared connection (no pool)."""
    url = sa.make_url(settings.url)
    dialect: Any = url.get_dialect()  # the aiosqlite dialect picks its pool by URL
    if not issubclass(dialect.get_pool_class(url), QueuePool):
        return {}
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        "pool_recycle": settings.pool_recycle,
    }


def _loop_reads(engine: AsyncEngine, budget_ms: int) -> LoopReads | None:
    """Read-only loop connections to the engine's SQLite file (None for PostgreSQL, for
    an in-memory database, which only its one pooled connection can see, and with
    SQLITE_LOOP_BUDGET_MS=0)."""
    if engine.dialect.name != "sqlite" or not isinstance(engine.pool, QueuePool) or not budget_ms:
        return None
    args, options = engine.dialect.create_connect_args(engine.url)
    return LoopReads(str(args[0]), uri=bool(options.get("uri", False)), budget_s=budget_ms / 1000)


def postgres_connect_args(settings: DatabaseSettings) -> dict[str, Any]:
    """asyncpg connection arguments (TLS per SSL_MODE, UTC, statement timeout); the
    migrations connect with the same ones."""
    server_settings = {"timezone": "UTC", "application_name": "migval"}
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    return {
        "server_settings": server_settings,
        "ssl": _ssl_context(settings),
        "timeout": min(settings.pool_timeout, 10.0),
    }


def _ssl_context(settings: DatabaseSettings) -> ssl.SSLContext | bool:
    if settings.ssl_mode is SSLMode.DISABLE:
        return False
    if settings.ssl_mode is SSLMode.REQUIRE:
        # Encrypted but unverified, as libpq's sslmode=require.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=settings.ssl_root_cert)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _install_sqlite_hooks(engine: AsyncEngine, settings: DatabaseSettings) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the driver so we decide how each transaction starts.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous.value}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_NO_BEGIN):
            return  # reads: each statement is its own snapshot, nothing to roll back
        # IMMEDIATE takes the write lock up front, so two writers queue on
        # busy_timeout instead of deadlocking on a lock upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
