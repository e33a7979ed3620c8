"""What the PostgreSQL floors share: the pool (sized and set up as migval's) and the
SQL spellings of migval's output formats."""

import os

import asyncpg


async def create_pool(application_name: str) -> asyncpg.Pool:
    """BENCH_PG_DSN; pool bounds from DB_POOL_SIZE / DB_MAX_OVERFLOW like migval's
    (pool_size connections kept, up to pool_size + max_overflow under load)."""
    size = int(os.environ.get("DB_POOL_SIZE", "5"))
    overflow = int(os.environ.get("DB_MAX_OVERFLOW", "10"))
    pool = await asyncpg.create_pool(
        os.environ["BENCH_PG_DSN"],
        min_size=size,
        max_size=size + overflow,
        reset=_keep,
        server_settings={"timezone": "UTC", "application_name": application_name},
    )
    if pool is None:  # asyncpg types it as optional
        raise RuntimeError("no pool")
    return pool


async def _keep(_conn: asyncpg.Connection) -> None:
    """No reset on release: the floors change no session state, so asyncpg's default
    (RESET ALL, UNLISTEN, ... one more statement per request) is skipped."""


def global_id(type_name: str, column: str) -> str:
    """base64.urlsafe_b64encode(b"Type:id"), padded (graph/ids.py)."""
    return (
        f"translate(encode(convert_to('{type_name}:' || {column}, 'UTF8'), 'base64'), "
        "E'+/\\n', '-_')"
    )


def iso_timestamp(column: str) -> str:
    """datetime.isoformat() of a UTC timestamp: microseconds only when non-zero."""
    return (
        f"replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), "
        "'.000000', '') || '+00:00'"
    )


def py_float(column: str) -> str:
    """A float8 as Python's json writes it: integral values keep their '.0'."""
    return (
        f"CASE WHEN {column} = trunc({column}) THEN ({column}::text || '.0')::json "
        f"ELSE to_json({column}) END"
    )
