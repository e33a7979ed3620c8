"""Running a call on the driver connection under a SQLAlchemy connection (asyncpg;
aiosqlite for fixed reads), with what SQLAlchemy does around a statement kept:
``before_cursor_execute`` and ``after_cursor_execute`` fire (statement logs, metrics,
statement pins), a failure reaches the engine's ``handle_error`` listeners, errors come
out as SQLAlchemy would raise them (translated by its adapter, wrapped in a DBAPIError,
bound values hidden), a connection lost or left mid-statement is invalidated, and a
PostgreSQL call cancelled mid-statement closes the socket and has the pool replace the
connection (an aiosqlite call runs to its end on the connection's thread, in order).

Used for fixed reads (persistence.driver_reads) and for bulk COPY (``copy_records``).
"""

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection
from sqlalchemy.engine.base import ExceptionContextImpl
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from persistence.database import is_disconnect

T = TypeVar("T")
_AIOSQLITE_CLOSED = {("Connection closed",), ("no active connection",)}


async def on_driver(
    conn: AsyncConnection,
    sql: str,
    arguments: Sequence[Any],
    call: Callable[[Any], Awaitable[T]],
) -> T:
    """``await call(driver_connection)``, reported to SQLAlchemy's events as ``sql``
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
        if conn.dialect.name == "sqlite":  # the connection's thread finishes the call
            raise
        # Cancelled mid-statement: the server may still be sending (or expecting)
        # data. Close the socket now and have the pool replace the connection (no
        # await here: the task is being cancelled).
        driver.terminate()
        pooled.invalidate(soft=True)
        raise
    dispatch.after_cursor_execute(sync, None, sql, arguments, None, False)
    return result


async def copy_records(
    session: AsyncSession, table: str, columns: Sequence[str], records: Iterable[tuple[Any, ...]]
) -> None:
    """COPY ``records`` into ``table`` (binary format) inside the session's
    transaction, on PostgreSQL. asyncpg sends each 512 KB of encoded rows as it fills,
    so a generator's work overlaps the server's inserting of the rows before; an
    exception the generator raises aborts the COPY (the transaction with it) and comes
    out as itself, the connection kept."""
    conn = await session.connection()
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's adapter sends BEGIN with the first statement; COPY does not go
        # through it, so open the transaction first.
        await conn.exec_driver_sql("SELECT 1")
    if not driver.is_in_transaction():  # an AUTOCOMMIT connection
        raise RuntimeError("COPY needs a transaction: it would commit on its own")
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT binary)"
    raised: list[Exception] = []

    def source() -> Iterator[tuple[Any, ...]]:
        try:
            yield from records
        except Exception as error:
            raised.append(error)
            raise

    async def copy(driver: Any) -> Exception | None:
        try:
            await driver.copy_records_to_table(table, records=source(), columns=list(columns))
        except Exception as error:
            if raised and error is raised[0]:
                # The caller's error (a row that failed its checks), not the driver's:
                # asyncpg has aborted the COPY and the connection is sound, so it must
                # not count as a failed statement nor get the connection invalidated.
                return error
            raise
        return None

    error = await on_driver(conn, sql, (), copy)
    if error is not None:
        raise error


async def _as_sqlalchemy_error(
    conn: AsyncConnection,
    pooled: Any,
    error: Exception,
    sql: str,
    arguments: Sequence[Any],
) -> Exception:
    """What SQLAlchemy would have raised for ``error``: translated by its asyncpg adapter
    and wrapped in a DBAPIError (errors the adapter does not map stay as they are),
    with the engine's ``handle_error`` listeners told (statement metrics, disconnect
    detection); a lost connection is invalidated, so the pool never hands it out
    again."""
    translated: Exception = error
    try:
        pooled.dbapi_connection._handle_exception(error)
    except Exception as adapted:  # _handle_exception always raises
        translated = adapted
    sync = conn.sync_connection
    if conn.dialect.name == "sqlite":
        # aiosqlite runs each call to its end on the connection's thread: a failed
        # call leaves nothing half-sent. It refuses calls on a closed connection with
        # these ValueErrors (other ValueErrors, a value that cannot be encoded or
        # decoded, leave the connection sound).
        closed = type(error) is ValueError and error.args[:1] in _AIOSQLITE_CLOSED
        gone, unsure = closed or is_disconnect(error), False
    else:
        gone = pooled.driver_connection.is_closed() or is_disconnect(error)
        # An error the server did not report (asyncpg raises a DataError, with no
        # severity, for a value it cannot encode) can leave the protocol
        # mid-statement: the server keeps waiting, holding the statement's locks, and
        # that connection must not go back to the pool.
        unsure = getattr(error, "severity", None) is None
    dbapi_error = conn.dialect.loaded_dbapi.Error
    raised: Exception = translated
    if isinstance(translated, dbapi_error):
        raised = exc.DBAPIError.instance(
            sql,
            arguments,
            translated,
            dbapi_error,
            hide_parameters=conn.sync_engine.hide_parameters,
            connection_invalidated=gone,
            dialect=conn.dialect,
        )
    if sync is not None:
        raised, gone = _handle_error(sync, translated, raised, sql, arguments, gone)
    if gone or unsure:
        await conn.invalidate(translated)
    return raised


def _handle_error(
    sync: Connection,
    original: Exception,
    raised: Exception,
    sql: str,
    arguments: Sequence[Any],
    gone: bool,
) -> tuple[Exception, bool]:
    """Run the engine's ``handle_error`` listeners as SQLAlchemy does for a failed
    statement: a listener may replace the exception or flag a disconnect."""
    context = ExceptionContextImpl(
        original,
        raised if isinstance(raised, exc.StatementError) else None,
        sync.engine,
        sync.dialect,
        sync,
        None,
        sql,
        tuple(arguments),
        None,
        gone,
        True,
        False,
    )
    # handle_error listeners of an engine live on its dialect's dispatch.
    for listener in sync.dialect.dispatch.handle_error:
        try:
            replacement = listener(context)
        except Exception as error:  # SQLAlchemy raises what a listener raised
            return error, gone or context.is_disconnect
        if replacement is not None:
            raised = replacement
    if isinstance(raised, exc.DBAPIError):
        raised.connection_invalidated = gone or context.is_disconnect
    return raised, gone or context.is_disconnect
