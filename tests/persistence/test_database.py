"""Settings, connection set-up, transactions, retry, health and pool statistics."""

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.enums import InputType, TechnologyType, ValidationScope
from persistence.errors import CommitOutcomeUnknown, ConfigurationError, ServiceUnavailable
from persistence.models import ValidationSession
from persistence.schema_version import head_revision
from persistence.settings import (
    DEFAULT_DATABASE_URL,
    DatabaseSettings,
    SQLiteSynchronous,
    SSLMode,
)
from tests.conftest import DbFactory

ENV_VARS = (
    "DATABASE_URL",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "DB_POOL_PRE_PING",
    "DB_POOL_TIMEOUT",
    "DB_POOL_RECYCLE",
    "SSL_MODE",
    "SSL_ROOT_CERT",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_SYNCHRONOUS",
    "SQLITE_LOOP_BUDGET_MS",
    "DB_STATEMENT_TIMEOUT_MS",
    "DB_RETRY_ATTEMPTS",
    "DB_RETRY_DEADLINE",
)


# ------------------------------------------------------------------------ settings


def test_settings_defaults() -> None:
    settings = DatabaseSettings.from_env({})
    assert settings == DatabaseSettings()
    assert settings.url == DEFAULT_DATABASE_URL
    assert settings.dialect == "sqlite"
    assert (settings.pool_size, settings.max_overflow, settings.retry_attempts) == (5, 10, 5)
    assert settings.ssl_mode is SSLMode.DISABLE
    assert settings.sqlite_synchronous is SQLiteSynchronous.NORMAL


PARSED = [
    (
        "DATABASE_URL",
        "postgresql+asyncpg://u:p@db:5432/migval",
        "url",
        "postgresql+asyncpg://u:p@db:5432/migval",
    ),
    ("DATABASE_URL", "sqlite+aiosqlite:///tmp/x.db", "url", "sqlite+aiosqlite:///tmp/x.db"),
    ("DB_POOL_SIZE", "7", "pool_size", 7),
    ("DB_MAX_OVERFLOW", "0", "max_overflow", 0),
    ("DB_POOL_PRE_PING", "false", "pool_pre_ping", False),
    ("DB_POOL_PRE_PING", "Off", "pool_pre_ping", False),
    ("DB_POOL_PRE_PING", " YES ", "pool_pre_ping", True),
    ("DB_POOL_TIMEOUT", "2.5", "pool_timeout", 2.5),
    ("DB_POOL_RECYCLE", "-1", "pool_recycle", -1),
    ("SSL_MODE", "REQUIRE", "ssl_mode", SSLMode.REQUIRE),
    ("SQLITE_BUSY_TIMEOUT_MS", "250", "sqlite_busy_timeout_ms", 250),
    ("SQLITE_SYNCHRONOUS", "full", "sqlite_synchronous", SQLiteSynchronous.FULL),
    ("SQLITE_SYNCHRONOUS", "extra", "sqlite_synchronous", SQLiteSynchronous.EXTRA),
    ("SQLITE_LOOP_BUDGET_MS", "0", "sqlite_loop_budget_ms", 0),
    ("SQLITE_LOOP_BUDGET_MS", "200", "sqlite_loop_budget_ms", 200),
    ("DB_STATEMENT_TIMEOUT_MS", "0", "statement_timeout_ms", 0),
    ("DB_RETRY_ATTEMPTS", "1", "retry_attempts", 1),
    ("DB_RETRY_DEADLINE", "0.5", "retry_deadline_s", 0.5),
    ("DB_POOL_SIZE", "", "pool_size", 5),  # empty means unset
]


@pytest.mark.parametrize(
    ("var", "raw", "attr", "expected"), PARSED, ids=[f"{v}={r!r}" for v, r, _, _ in PARSED]
)
def test_settings_parse_each_variable(var: str, raw: str, attr: str, expected: Any) -> None:
    settings = DatabaseSettings.from_env({var: raw})
    assert getattr(settings, attr) == expected
    assert type(getattr(settings, attr)) is type(expected)
    # Nothing else moved.
    others = {f: getattr(DatabaseSettings(), f) for f in DatabaseSettings.__slots__ if f != attr}
    assert {f: getattr(settings, f) for f in others} == others


BAD = [
    ("DATABASE_URL", "mysql://root@localhost/db"),
    ("DATABASE_URL", "sqlite:///sync-driver.db"),
    ("DATABASE_URL", "postgresql://no-async-driver/db"),
    ("DB_POOL_SIZE", "0"),
    ("DB_POOL_SIZE", "five"),
    ("DB_POOL_SIZE", "2.5"),
    ("DB_MAX_OVERFLOW", "-1"),
    ("DB_POOL_PRE_PING", "maybe"),
    ("DB_POOL_TIMEOUT", "0"),
    ("DB_POOL_TIMEOUT", "soon"),
    ("DB_POOL_RECYCLE", "-2"),
    ("SSL_MODE", "prefer"),
    ("SQLITE_BUSY_TIMEOUT_MS", "-5"),
    ("SQLITE_SYNCHRONOUS", "SOMETIMES"),
    ("SQLITE_LOOP_BUDGET_MS", "-1"),
    ("SQLITE_LOOP_BUDGET_MS", "0.5"),
    ("DB_STATEMENT_TIMEOUT_MS", "1.5"),
    ("DB_RETRY_ATTEMPTS", "0"),
    ("DB_RETRY_DEADLINE", "-1"),
    ("DB_RETRY_DEADLINE", "nan-ish"),
]


@pytest.mark.parametrize(("var", "raw"), BAD, ids=[f"{v}={r!r}" for v, r in BAD])
def test_settings_bad_value_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings.from_env({var: raw})
    assert info.value.field == var
    assert str(info.value).startswith(f"{var}: ")
    assert info.value.code == "CONFIGURATION"


def test_verify_full_requires_a_root_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings.from_env({"SSL_MODE": "verify-full"})
    assert info.value.field == "SSL_ROOT_CERT"

    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings.from_env({"SSL_MODE": "verify-full", "SSL_ROOT_CERT": str(missing)})
    assert info.value.field == "SSL_ROOT_CERT"
    assert str(missing) in info.value.message

    cert = tmp_path / "root.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = DatabaseSettings.from_env({"SSL_MODE": "verify-full", "SSL_ROOT_CERT": str(cert)})
    assert (settings.ssl_mode, settings.ssl_root_cert) == (SSLMode.VERIFY_FULL, str(cert))


def test_settings_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DB_POOL_SIZE", "9")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app@db/migval")
    settings = DatabaseSettings.from_env()
    assert (settings.pool_size, settings.dialect) == (9, "postgresql")


# -------------------------------------------------------------- SQLite connections


async def pragma(session: AsyncSession, name: str) -> Any:
    return (await session.execute(sa.text(f"PRAGMA {name}"))).scalar()


@pytest.mark.sqlite_only
async def test_sqlite_pragmas_on_every_connection(db: DatabaseManager) -> None:
    expected = {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": db.settings.sqlite_busy_timeout_ms,
        "synchronous": 1,  # NORMAL, the default setting
    }
    async with db.read_session() as reader, db.write_session() as writer:
        # Two sessions open at once: two different pooled connections.
        for session in (reader, writer):
            assert {name: await pragma(session, name) for name in expected} == expected


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("level", "number"),
    [(SQLiteSynchronous.OFF, 0), (SQLiteSynchronous.FULL, 2), (SQLiteSynchronous.EXTRA, 3)],
)
async def test_sqlite_pragmas_follow_settings(
    db_factory: DbFactory, level: SQLiteSynchronous, number: int
) -> None:
    manager = db_factory(sqlite_synchronous=level, sqlite_busy_timeout_ms=1234)
    async with manager.read_session() as session:
        assert await pragma(session, "synchronous") == number
        assert await pragma(session, "busy_timeout") == 1234
        assert await pragma(session, "foreign_keys") == 1


@pytest.mark.sqlite_only
async def test_sqlite_file_pool_follows_settings(db_factory: DbFactory) -> None:
    """DB_POOL_SIZE / DB_MAX_OVERFLOW / DB_POOL_TIMEOUT hold for a SQLite file as for
    PostgreSQL (a full pool answers SERVICE_UNAVAILABLE after the timeout); an
    in-memory database keeps SQLAlchemy's one shared connection."""
    manager = db_factory(pool_size=2, max_overflow=0, pool_timeout=0.2)
    async with manager.read_session(), manager.read_session():
        assert manager.pool_stats().checked_out == 2
        with pytest.raises(ServiceUnavailable, match="pool exhausted"):
            async with manager.read_session():
                pass
    stats = manager.pool_stats()
    assert (stats.size, stats.checked_out, stats.checked_in) == (2, 0, 2)
    memory = db_factory("sqlite+aiosqlite:///:memory:", pool_size=2, max_overflow=0)
    async with memory.read_session() as session:
        assert (await session.execute(sa.text("SELECT 1"))).scalar() == 1


def _try_begin_immediate(path: str) -> str:
    """From an unrelated connection: can a write transaction start right now?"""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        return str(error)
    finally:
        conn.close()
    return "free"


@pytest.mark.sqlite_only
async def test_sqlite_write_session_takes_the_write_lock_at_begin(
    db: DatabaseManager, sqlite_path: str
) -> None:
    assert await asyncio.to_thread(_try_begin_immediate, sqlite_path) == "free"
    async with db.write_session() as session:
        await session.execute(sa.text("SELECT 1"))  # a read only: DEFERRED would not lock
        assert await asyncio.to_thread(_try_begin_immediate, sqlite_path) == ("database is locked")
    assert await asyncio.to_thread(_try_begin_immediate, sqlite_path) == "free"


@pytest.mark.sqlite_only
async def test_sqlite_read_session_neither_begins_nor_locks(
    db: DatabaseManager, sqlite_path: str
) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.strip().upper())

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.read_session() as session:
            await session.execute(sa.text("SELECT COUNT(*) FROM validation_sessions"))
            assert await asyncio.to_thread(_try_begin_immediate, sqlite_path) == "free"
        reads = list(statements)
        statements.clear()
        async with db.write_session() as session:
            await session.execute(sa.text("SELECT 1"))
        writes = list(statements)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert not [s for s in reads if s.startswith("BEGIN")]
    assert reads == ["SELECT COUNT(*) FROM VALIDATION_SESSIONS"]
    assert writes[0] == "BEGIN IMMEDIATE"


def new_session(request_id: str) -> ValidationSession:
    return ValidationSession(
        request_id=request_id,
        source_technology=TechnologyType.JAVA_SPRING,
        target_technology=TechnologyType.CSHARP_DOTNET,
        validation_scope=ValidationScope.API_ENDPOINTS,
        source_input_type=InputType.CODE_FILES,
        target_input_type=InputType.CODE_FILES,
    )


async def insert_session(
    db: DatabaseManager, request_id: str, behavioral_timeout: int = 100
) -> int:
    async def add(session: AsyncSession) -> int:
        row = new_session(request_id)
        row.behavioral_timeout = behavioral_timeout
        session.add(row)
        await session.flush()
        assert row.id is not None
        return row.id

    return await db.run_write(add)


async def read_timeout(db: DatabaseManager, session_id: int) -> int:
    async with db.read_session() as session:
        row = await session.get(ValidationSession, session_id)
    assert row is not None
    assert row.behavioral_timeout is not None
    return row.behavioral_timeout


@pytest.mark.sqlite_only
async def test_sqlite_concurrent_read_modify_writes_queue_instead_of_failing(
    db: DatabaseManager,
) -> None:
    session_id = await insert_session(db, "counter", behavioral_timeout=1)
    attempts = 0

    async def increment(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        row = await session.get(ValidationSession, session_id)
        assert row is not None
        assert row.behavioral_timeout is not None
        await asyncio.sleep(0.03)  # let the other writers start meanwhile
        row.behavioral_timeout += 1

    writers = 4
    await asyncio.gather(*(db.run_write(increment) for _ in range(writers)))
    # BEGIN IMMEDIATE serializes them: no "database is locked", no retry, no lost update.
    assert attempts == writers
    assert await read_timeout(db, session_id) == 1 + writers


# ----------------------------------------------------------------------- run_write


def locked_error() -> OperationalError:
    """What aiosqlite raises when busy_timeout runs out."""
    return OperationalError(
        "UPDATE validation_sessions SET status=?",
        {},
        sqlite3.OperationalError("database is locked"),
    )


async def count_sessions(db: DatabaseManager) -> int:
    async with db.read_session() as session:
        result = await session.execute(sa.text("SELECT COUNT(*) FROM validation_sessions"))
        return int(result.scalar_one())


async def test_run_write_retries_a_transient_error_once(db: DatabaseManager) -> None:
    attempts = 0

    async def write(session: AsyncSession) -> int:
        nonlocal attempts
        attempts += 1
        row = new_session("retried")
        session.add(row)
        await session.flush()  # written, then rolled back by the failed attempt
        if attempts == 1:
            raise locked_error()
        assert row.id is not None
        return attempts

    assert await db.run_write(write) == 2
    assert attempts == 2
    assert await count_sessions(db) == 1


@pytest.mark.postgres_only
async def test_run_write_retries_a_real_serialization_failure(db: DatabaseManager) -> None:
    session_id = await insert_session(db, "contended", behavioral_timeout=100)
    attempts = 0

    async def add_one(session: AsyncSession) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        current = await read_in(session, session_id)  # the snapshot is taken here
        if attempts == 1:  # a concurrent writer commits after our snapshot
            async with db.engine.begin() as other:
                await other.execute(
                    sa.text(
                        "UPDATE validation_sessions SET behavioral_timeout = "
                        "behavioral_timeout + 10 WHERE id = :id"
                    ),
                    {"id": session_id},
                )
        await session.execute(
            sa.text("UPDATE validation_sessions SET behavioral_timeout = :v WHERE id = :id"),
            {"v": current + 1, "id": session_id},
        )  # first attempt: 40001 could not serialize access due to concurrent update
        return current

    assert await db.run_write(add_one) == 110
    assert attempts == 2
    assert await read_timeout(db, session_id) == 111  # neither update lost


async def read_in(session: AsyncSession, session_id: int) -> int:
    value = await session.scalar(
        sa.text("SELECT behavioral_timeout FROM validation_sessions WHERE id = :id"),
        {"id": session_id},
    )
    return int(value)


async def test_run_write_does_not_retry_an_integrity_error(db: DatabaseManager) -> None:
    attempts = 0

    async def write(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        session.add(new_session("first"))
        await session.flush()
        session.add(new_session("first"))  # duplicate request_id
        await session.flush()

    with pytest.raises(IntegrityError):
        await db.run_write(write)
    assert attempts == 1
    assert await count_sessions(db) == 0  # the first insert was rolled back too


async def test_run_write_gives_up_after_the_attempts(
    db_factory: DbFactory, db: DatabaseManager
) -> None:
    manager = db_factory(retry_attempts=3, retry_deadline_s=30.0)
    attempts = 0

    async def write(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        session.add(new_session(f"attempt-{attempts}"))
        await session.flush()
        raise locked_error()

    with pytest.raises(ServiceUnavailable) as info:
        await manager.run_write(write)
    assert attempts == 3
    assert not isinstance(info.value, CommitOutcomeUnknown)
    assert isinstance(info.value.__cause__, OperationalError)
    assert info.value.code == "SERVICE_UNAVAILABLE"
    assert await count_sessions(db) == 0


async def test_run_write_gives_up_at_the_deadline(
    db_factory: DbFactory, db: DatabaseManager
) -> None:
    manager = db_factory(retry_attempts=50, retry_deadline_s=0.0)
    attempts = 0

    async def write(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        raise locked_error()

    with pytest.raises(ServiceUnavailable):
        await manager.run_write(write)
    assert attempts == 1


# ------------------------------------------------------------ read sessions on PG


@pytest.mark.postgres_only
async def test_postgresql_read_session_runs_outside_a_transaction(db: DatabaseManager) -> None:
    async def two_clock_readings(session: AsyncSession) -> tuple[Any, Any]:
        """now() is the transaction's start: it only moves between transactions."""
        first = (await session.execute(sa.text("SELECT now()"))).scalar_one()
        await asyncio.sleep(0.01)
        return first, (await session.execute(sa.text("SELECT now()"))).scalar_one()

    async def state_of(pid: int) -> str:
        async with db.engine.connect() as other:
            result = await other.execute(
                sa.text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            )
            return str(result.scalar_one())

    async with db.read_session() as session:
        pid = int((await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())
        assert await state_of(pid) == "idle"  # not "idle in transaction"
        first, second = await two_clock_readings(session)
        assert second > first  # each statement its own transaction

    async with db.write_session() as session:  # contrast: a real transaction
        pid = int((await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())
        assert await state_of(pid) == "idle in transaction"
        first, second = await two_clock_readings(session)
        assert second == first


# --------------------------------------------------------------- health and pool


async def test_health_reports_ok_with_latency(backend: str, db: DatabaseManager) -> None:
    status = await db.health()
    assert status.ok is True
    assert status.dialect == backend
    assert status.latency_ms is not None
    assert 0 < status.latency_ms < 2000
    assert status.schema_revision == status.head_revision == head_revision()
    assert status.at_head is True
    assert status.error is None


async def test_health_reports_an_unreachable_server() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    manager = DatabaseManager(DatabaseSettings(url=url, pool_timeout=2.0))
    try:
        status = await manager.health(timeout_s=2.0)
    finally:
        await manager.dispose()
    assert (status.ok, status.latency_ms, status.schema_revision) == (False, None, None)
    assert status.error
    assert "127.0.0.1" not in status.error  # no connection details leak


async def test_pool_stats_count_checked_out_connections(backend: str, db: DatabaseManager) -> None:
    before = db.pool_stats()
    assert all(isinstance(v, int) for v in (before.size, before.checked_in, before.overflow))
    async with db.read_session() as session:
        await session.execute(sa.text("SELECT 1"))
        during = db.pool_stats()
    after = db.pool_stats()
    assert during.checked_out == before.checked_out + 1
    assert after.checked_out == before.checked_out
    if backend == "postgresql":
        assert before.size == db.settings.pool_size == 5
        assert after.checked_in >= 1
