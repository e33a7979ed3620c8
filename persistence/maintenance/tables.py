"""The tables maintenance walks, in foreign-key order; row counts; the SQLite file
behind a URL; JSON-safe rendering of values shared by the reports."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from persistence.database import current_revision
from persistence.errors import ConfigurationError
from persistence.maintenance import MaintenanceError
from persistence.models import metadata

# Parents before children: the order to insert in (reversed: the order to delete in).
TABLES: tuple[sa.Table, ...] = tuple(metadata.sorted_tables)
TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in TABLES)

SESSIONS = metadata.tables["validation_sessions"]
RESULTS = metadata.tables["validation_results"]
DISCREPANCIES = metadata.tables["validation_discrepancies"]
BEHAVIORAL_TESTS = metadata.tables["behavioral_test_results"]
# A session's children, removed with it by ON DELETE CASCADE.
SESSION_CHILDREN: tuple[sa.Table, ...] = (RESULTS, DISCREPANCIES, BEHAVIORAL_TESTS)

Executor = AsyncSession | AsyncConnection


async def row_counts(conn: Executor, tables: tuple[sa.Table, ...] = TABLES) -> dict[str, int]:
    """Rows per table, in ``tables`` order, in one statement."""
    stmt = sa.select(
        *(sa.select(sa.func.count()).select_from(t).scalar_subquery().label(t.name) for t in tables)
    )
    row = (await conn.execute(stmt)).one()
    return {name: int(value) for name, value in row._mapping.items()}


async def require_schema(session: AsyncSession) -> str:
    """The schema revision; MaintenanceError when the database was never migrated."""
    revision = await current_revision(session)
    if revision is None:
        raise MaintenanceError(
            "the database is not migrated (no alembic_version): run `migval db init`"
        )
    return revision


@asynccontextmanager
async def unbounded(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Lift PostgreSQL's statement_timeout (DB_STATEMENT_TIMEOUT_MS, meant for API
    requests) for this session's connection: a VACUUM or a full-table check of a big
    table may rightly take longer. Reset afterwards; a no-op on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        yield session
        return
    await session.execute(sa.text("SET statement_timeout = 0"))
    try:
        yield session
    finally:
        await session.execute(sa.text("RESET statement_timeout"))


def sqlite_file(url: str) -> Path:
    """The file of a ``sqlite+aiosqlite:///PATH`` URL; ConfigurationError for an
    in-memory database (nothing to create, back up or restore)."""
    database = make_url(url).database
    if not database or database == ":memory:" or "mode=memory" in database:
        raise ConfigurationError(
            "DATABASE_URL", "names an in-memory SQLite database; this command needs a file"
        )
    return Path(database)


def describe_url(url: str) -> str:
    """Where a URL points, without credentials: a file path or host:port/database."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return str(parsed.database)
    host = parsed.host or parsed.query.get("host") or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{host}{port}/{parsed.database}"


def iso_utc(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z``, microseconds kept (``None`` stays ``None``)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def human_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
