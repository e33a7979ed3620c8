"""``migval db stats``: row counts and sizes per table, database size, connection
pool figures and the oldest/newest session.

Sizes: PostgreSQL ``pg_total_relation_size`` (table, its indexes and TOAST) and
``pg_database_size``; SQLite the ``dbstat`` virtual table (pages of the table and of
its indexes) when the library has it, and ``page_count * page_size`` for the file.
"""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.maintenance.tables import (
    SESSIONS,
    TABLE_NAMES,
    describe_url,
    human_bytes,
    iso_utc,
    require_schema,
    row_counts,
)
from persistence.schema_version import head_revision


@dataclass(frozen=True, slots=True)
class TableStats:
    name: str
    rows: int
    size_bytes: int | None  # None when the database cannot tell (SQLite without dbstat)


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    dialect: str
    database: str
    revision: str
    head: str
    size_bytes: int | None
    tables: list[TableStats]
    oldest_session_created_at: datetime | None
    newest_session_created_at: datetime | None
    pool: dict[str, Any]
    server_connections: dict[str, int] | None  # PostgreSQL: this database's backends by state

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["oldest_session_created_at"] = iso_utc(self.oldest_session_created_at)
        out["newest_session_created_at"] = iso_utc(self.newest_session_created_at)
        out["at_head"] = self.revision == self.head
        return out

    def lines(self) -> list[str]:
        at = "head" if self.revision == self.head else f"head is {self.head}"
        out = [
            f"database: {self.dialect} {self.database}",
            f"schema revision: {self.revision} ({at})",
            f"size: {human_bytes(self.size_bytes)}",
            "",
        ]
        width = max(len("TABLE"), *(len(t.name) for t in self.tables))
        out.append(f"{'TABLE'.ljust(width)}  {'ROWS':>10}  {'SIZE':>10}")
        for t in self.tables:
            out.append(f"{t.name.ljust(width)}  {t.rows:>10}  {human_bytes(t.size_bytes):>10}")
        out.append("")
        out.append(
            f"sessions created: oldest {iso_utc(self.oldest_session_created_at) or '-'}, "
            f"newest {iso_utc(self.newest_session_created_at) or '-'}"
        )
        pool = ", ".join(f"{key} {value}" for key, value in self.pool.items())
        out.append(f"connection pool (this process): {pool}")
        if self.server_connections is not None:
            conns = ", ".join(f"{k} {v}" for k, v in self.server_connections.items()) or "none"
            out.append(f"server connections to this database: {conns}")
        return out


async def collect_stats(db: DatabaseManager) -> DatabaseStats:
    async with db.read_session() as session:
        revision = await require_schema(session)
        counts = await row_counts(session)
        if db.dialect == "postgresql":
            sizes, total = await _pg_sizes(session)
            connections: dict[str, int] | None = await _pg_connections(session)
        else:
            sizes, total = await _sqlite_sizes(session)
            connections = None
        bounds = sa.select(sa.func.min(SESSIONS.c.created_at), sa.func.max(SESSIONS.c.created_at))
        oldest, newest = (await session.execute(bounds)).one()
    pool = db.pool_stats()
    settings = db.settings
    return DatabaseStats(
        dialect=db.dialect,
        database=describe_url(settings.url),
        revision=revision,
        head=head_revision(),
        size_bytes=total,
        tables=[TableStats(name, counts[name], sizes.get(name)) for name in TABLE_NAMES],
        oldest_session_created_at=oldest,
        newest_session_created_at=newest,
        pool={
            "size": pool.size,
            "checked_in": pool.checked_in,
            "checked_out": pool.checked_out,
            # QueuePool counts overflow from -pool_size up; only the excess is news.
            "overflow": max(pool.overflow, 0),
            "configured_pool_size": settings.pool_size,
            "configured_max_overflow": settings.max_overflow,
        },
        server_connections=connections,
    )


async def _pg_sizes(session: AsyncSession) -> tuple[dict[str, int], int]:
    rows = await session.execute(
        sa.text(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
            "AND c.relname = ANY(:names)"
        ),
        {"names": list(TABLE_NAMES)},
    )
    sizes = {str(name): int(size) for name, size in rows.all()}
    total = await session.scalar(sa.text("SELECT pg_database_size(current_database())"))
    return sizes, int(total or 0)


async def _pg_connections(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        sa.text(
            "SELECT coalesce(state, 'other'), count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() GROUP BY 1 ORDER BY 1"
        )
    )
    return {str(state): int(n) for state, n in rows.all()}


async def _sqlite_sizes(session: AsyncSession) -> tuple[dict[str, int], int]:
    page_count = int(await session.scalar(sa.text("PRAGMA page_count")) or 0)
    page_size = int(await session.scalar(sa.text("PRAGMA page_size")) or 0)
    total = page_count * page_size
    try:
        rows = (
            await session.execute(
                sa.text(
                    "SELECT m.tbl_name, SUM(s.pgsize) FROM dbstat AS s "
                    "JOIN sqlite_master AS m ON m.name = s.name GROUP BY m.tbl_name"
                )
            )
        ).all()
    except exc.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        return {}, total
    return {str(name): int(size) for name, size in rows}, total
