"""Running a call on the asyncpg connection under a SQLAlchemy connection, with what
SQLAlchemy does around a statement kept: ``before_cursor_execute`` and
``after_cursor_execute`` fire (statement logs, metrics, statement pins), errors come
out as SQLAlchemy would raise them (translated by its asyncpg adapter, wrapped in a
DBAPIError), a connection the driver reports lost is invalidated, and a call
cancelled mid-statement closes the socket and has the pool replace the connection.

Used for fixed reads (persistence.driver_reads) and for bulk COPY (``copy_records``).
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from persistence.database import is_disconnect

T = TypeVar("T")


async def on_driver(
    conn: AsyncConnection,
    sql: str,
    arguments: Sequence[Any],
    call: Callable[[Any], Awaitable[T]],
) -> T:
    """``await call(asyncpg_connection)``, reported to SQLAlchemy's events as ``sql``
    with ``arguments``."""
    pooled = await conn.get_raw_connection()
    driver: Any = pooled.driver_connection
    sync = conn.sync_connection
    if driver is None or sync is None:  # pragma: no cover - a started connection has both
        raise RuntimeError("no live connection")
    dispatch = sync.dispatch
    dispatch.before_cursor_execute(sync, None, sql, arguments, None, False)
    try:
        result = await call(driver)
    except Exception as error:
        raise await _as_sqlalchemy_error(conn, pooled, error, sql, arguments) from error
    except BaseException:
        # Cancelled mid-statement: the server may still be sending (or expecting)
        # data. Close the socket now and have the pool replace the connection (no
        # await here: the task is being cancelled).
        driver.terminate()
        pooled.invalidate(soft=True)
        raise
    dispatch.after_cursor_execute(sync, None, sql, arguments, None, False)
    return result


async def copy_records(
    session: AsyncSession, table: str, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
) -> None:
    """COPY ``records`` into ``table`` (binary format) inside the session's
    transaction, on PostgreSQL."""
    conn = await session.connection()
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's adapter sends BEGIN with the first statement; COPY does not go
        # through it, so open the transaction first (COPY must never autocommit).
        await conn.exec_driver_sql("SELECT 1")
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT binary)"

    async def copy(driver: Any) -> None:
        await driver.copy_records_to_table(table, records=records, columns=list(columns))

    await on_driver(conn, sql, (), copy)


async def _as_sqlalchemy_error(
    conn: AsyncConnection,
    pooled: Any,
    error: Exception,
    sql: str,
    arguments: Sequence[Any],
) -> Exception:
    """What SQLAlchemy would have raised for ``error``: translated by its asyncpg adapter
    and wrapped in a DBAPIError (errors the adapter does not map stay as they are);
    a lost connection is invalidated first, so the pool never hands it out again."""
    translated: Exception = error
    try:
        pooled.dbapi_connection._handle_exception(error)
    except Exception as adapted:  # _handle_exception always raises
        translated = adapted
    gone = pooled.driver_connection.is_closed() or is_disconnect(error)
    if gone:
        await conn.invalidate(translated)
    dbapi_error = conn.dialect.loaded_dbapi.Error
    if not isinstance(translated, dbapi_error):
        return translated
    return exc.DBAPIError.instance(
        sql,
        arguments,
        translated,
        dbapi_error,
        connection_invalidated=gone,
        dialect=conn.dialect,
    )
