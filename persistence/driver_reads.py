"""Fixed read statements, run on the driver connection directly by read sessions.

A loader batch runs one SELECT whose SQL never changes, only its bound values. Through
SQLAlchemy that statement costs more in Python than in the database: cache-key
generation, rendering the expanded IN list, the execution context, and a Row built per
result row through per-column processors (on SQLite also four trips to aiosqlite's
thread). ``FixedRead`` compiles the statement once per dialect (lists bind as one
value: ``= ANY($1)`` on PostgreSQL, ``IN (SELECT value FROM json_each(?))`` on SQLite,
so the SQL text is constant and the driver keeps it prepared) and, on a read session,
sends it on the session's driver connection (asyncpg; aiosqlite in one trip): the rows
come back as ``Row`` tuples built by one generated function with SQLAlchemy's own
result processors for the columns that need one (enums, JSON, UTC datetimes, SQLite's
booleans), so values and types are what the SQLAlchemy path returns
(tests/persistence/test_driver_reads.py compares both).

What SQLAlchemy did around the statement stays (persistence.driver): its cursor and
error events fire (statement logs, metrics), errors are translated as it would, and
a connection the driver reports lost is invalidated, so the pool never hands it out
again. Elsewhere (write sessions, whose transaction SQLAlchemy begins) the same
statement runs through SQLAlchemy.
"""

import functools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from persistence.database import DRIVER_READS, LOOP_READS
from persistence.driver import on_driver
from persistence.loop_reads import LoopReads
from persistence.sqltypes import StrEnumType


def any_of(column: sa.ColumnElement[Any], name: str, dialect: str) -> sa.ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``, with SQL text that does not
    depend on the list's length: ``= ANY(:name)`` with one array parameter on
    PostgreSQL; ``IN (SELECT value FROM json_each(:name))`` with the list as one JSON
    text on SQLite (probing the column's index per value, as an IN list does); an
    expanding ``IN`` elsewhere."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    if dialect == "sqlite":
        if not isinstance(column.type, sa.Integer | sa.String):  # what JSON keeps exactly
            raise TypeError(f"any_of on SQLite binds int or str keys, not {column.type!r}")
        values = sa.func.json_each(sa.bindparam(name, type_=JSONList())).table_valued("value")
        return column.in_(sa.select(values.c.value))
    return column.in_(sa.bindparam(name, expanding=True))


class JSONList(sa.types.TypeDecorator[Sequence[Any]]):
    """A list bound as one JSON array text (SQLite's ``json_each`` reads it); only ints
    and strings are bound this way (ids, request ids: ``any_of`` refuses other
    columns), which JSON keeps exactly. Text stays unescaped, so a string the driver
    cannot encode (a lone surrogate) fails to bind as it did in an IN list
    (read_errors: a ValidationFailed). Unlike an IN list: an int past 64 bits matches
    nothing instead of failing to bind, and SQLite's JSON text ends a string at a NUL
    (the rows' own key then differs from the one asked for, which the repositories
    match rows on, so it is not found either)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Sequence[Any] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(list(value), ensure_ascii=False)


class Row(tuple[Any, ...]):
    """A read row: values by position, by column name as attributes, and by name in
    ``_mapping`` (as a Core Row). Subclassed once per column list (``row_type``)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:  # columns are properties of the subclass
        raise AttributeError(name)

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    def __repr__(self) -> str:
        return f"Row({', '.join(f'{k}={v!r}' for k, v in zip(self._fields, self, strict=True))})"


@functools.lru_cache(maxsize=256)
def row_type(fields: tuple[str, ...]) -> type[Row]:
    """The Row class of these columns (attribute access is a C-level itemgetter)."""
    attributes: dict[str, Any] = {"__slots__": (), "_fields": fields}
    for index, name in enumerate(fields):
        attributes[name] = property(operator.itemgetter(index))
    return type("Row", (Row,), attributes)


MakeRows = Callable[[Sequence[Any]], list[Row]]
Decode = Callable[[Any], Any]


@dataclass(frozen=True, slots=True, eq=False)
class Decoding:
    """How raw driver records of one statement become its rows: ``decoders[i]`` turns
    the record's value at position i into the row's (None: the value as it is; an
    enum column's decoder is a ``Memo``), ``make`` builds the rows themselves."""

    decoders: tuple[Decode | None, ...]
    make: MakeRows


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # bound parameters in positional order
    defaults: Mapping[str, Any]  # values the statement carries itself (literals)
    binds: Mapping[str, Callable[[Any], Any]]  # SQLAlchemy bind processors by name
    columns: tuple[tuple[str, sa.types.TypeEngine[Any]], ...]  # result name and type
    required: frozenset[str]  # parameters without a value of their own
    nulls: frozenset[int]  # result positions the statement selects as a NULL literal

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name in self.names:
            if name in params:
                value = params[name]
            elif name in self.required:  # as SQLAlchemy refuses to run without it
                raise exc.ArgumentError(f"a value is required for bound parameter {name!r}")
            else:
                value = self.defaults[name]
            process = self.binds.get(name)
            values.append(value if process is None else process(value))
        return values


class FixedRead:
    """A SELECT with constant SQL (values only through bound parameters), built once
    (module level or cached) and fetched with ``persistence.records.fetch_records``."""

    __slots__ = ("_compiled", "_decodings", "statement")

    def __init__(self, statement: sa.Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[Dialect, _Compiled] = {}
        self._decodings: dict[Dialect, Decoding] = {}

    async def fetch(self, session: AsyncSession, params: Mapping[str, Any]) -> Sequence[Any]:
        conn: AsyncConnection | None = session.info.get(DRIVER_READS)
        if conn is None:
            return (await session.execute(self.statement, dict(params))).all()
        rows, _ = await self._on_driver(conn, params, True, session.info.get(LOOP_READS))
        return rows

    async def fetch_raw(
        self, session: AsyncSession, params: Mapping[str, Any]
    ) -> tuple[Sequence[Any], Decoding | None]:
        """On a driver read session, the driver's records as they come (by position)
        and how to decode them; elsewhere the rows ``fetch`` returns and None. For a
        caller that reads a few values of many rows: it skips building the rows. A
        decoder's error (a value the processor refuses) is the caller's to meet, not
        translated as the statement's (execution plans fall back on it, and standard
        execution's whole-row read reports it)."""
        conn: AsyncConnection | None = session.info.get(DRIVER_READS)
        if conn is None:
            return await self.fetch(session, params), None
        return await self._on_driver(conn, params, False, session.info.get(LOOP_READS))

    async def _on_driver(
        self,
        conn: AsyncConnection,
        params: Mapping[str, Any],
        make: bool,
        loop_reads: LoopReads | None,
    ) -> tuple[list[Any], Decoding]:
        """The records, made rows if ``make`` (a processor's error is the statement's,
        as on the SQLAlchemy path), and their decoding. On a SQLite file the statement
        runs on the loop's own connection unless the database is locked."""
        dialect = conn.dialect
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _compile(self.statement, dialect)
        arguments = compiled.arguments(params)

        async def fetch(driver: Any) -> tuple[list[Any], Decoding]:
            decoding = self._decodings.get(dialect)
            if decoding is None:
                decoding = self._decodings[dialect] = await _first_decoding(
                    compiled, dialect, driver
                )
            if dialect.name == "sqlite":
                found = None if loop_reads is None else loop_reads.fetch(compiled.sql, arguments)
                # Else aiosqlite: one trip to the connection's thread (execute and
                # fetch, where SQLAlchemy's adapter makes four), waiting out a lock.
                records = (
                    found
                    if found is not None
                    else await driver.execute_fetchall(compiled.sql, arguments)
                )
            else:  # asyncpg keeps the statement prepared
                records = await driver.fetch(compiled.sql, *arguments)
            return (decoding.make(records) if make else records), decoding

        return await on_driver(conn, compiled.sql, arguments, fetch)


def _compile(statement: sa.Select[Any], dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    # Lists the statement carries itself (a filter's IN values) are expanded once here,
    # as SQLAlchemy would at every execution; lists bound per call use any_of.
    expanded = compiled._process_parameters_for_postcompile(
        compiled.construct_params(_check=False), _populate_self=False
    )
    names = tuple(expanded.positiontup or ())
    processors = {**compiled._bind_processors, **expanded.processors}
    binds = {name: p for name, p in processors.items() if callable(p)}
    columns = tuple((c.keyname, c.type) for c in compiled._result_columns)
    required = frozenset(name for name, bind in compiled.binds.items() if bind.required)
    selected = list(statement.selected_columns)
    if len(selected) != len(columns):  # not one result column per selected column
        selected = []
    nulls = frozenset(
        index
        for index, column in enumerate(selected)
        if isinstance(getattr(column, "element", column), sa.sql.elements.Null)
    )
    return _Compiled(
        expanded.statement, names, expanded.parameters, binds, columns, required, nulls
    )


async def _first_decoding(compiled: _Compiled, dialect: Dialect, driver: Any) -> Decoding:
    """The statement's decoding, picked as for a cursor: on PostgreSQL by the result's
    type oids (asyncpg prepares the statement to tell them); SQLite has no result
    types (processors are chosen by column type alone, as SQLAlchemy does there)."""
    if dialect.name == "sqlite":
        return _decoding(compiled, dialect, (None,) * len(compiled.columns))
    prepared = await driver.prepare(compiled.sql)
    return _decoding(compiled, dialect, tuple(a.type.oid for a in prepared.get_attributes()))


def _decoding(compiled: _Compiled, dialect: Dialect, oids: tuple[int | None, ...]) -> Decoding:
    """Per column, SQLAlchemy's result processor where it has one (as a CursorResult
    would apply it), enum columns' through a memo of their few database values (the
    processor runs once per distinct value); and the rows' maker. Statements with the
    same result columns (the same listing with other filter values, say) share one
    decoding, so what is built per decoding (plan writers) is built once for them."""
    key = (compiled.columns, compiled.nulls, dialect, oids)
    try:
        shared = _DECODINGS.get(key)
    except TypeError:  # a column type that cannot be hashed: this statement's own
        return _new_decoding(compiled, dialect, oids)
    if shared is None:
        if len(_DECODINGS) >= _DECODINGS_SIZE:  # statements come from bounded caches
            _DECODINGS.clear()
        shared = _DECODINGS[key] = _new_decoding(compiled, dialect, oids)
    return shared


_DecodingKey = tuple[Any, ...]
_DECODINGS: dict[_DecodingKey, Decoding] = {}
_DECODINGS_SIZE = 512


def _new_decoding(compiled: _Compiled, dialect: Dialect, oids: tuple[int | None, ...]) -> Decoding:
    decoders: list[Decode | None] = []
    for index, ((_name, type_), oid) in enumerate(zip(compiled.columns, oids, strict=True)):
        process = None if index in compiled.nulls else type_._cached_result_processor(dialect, oid)
        decoders.append(Memo(process) if process and isinstance(type_, _MEMOIZED) else process)
    return Decoding(tuple(decoders), _row_maker(compiled, decoders))


def _row_maker(compiled: _Compiled, decoders: Sequence[Decode | None]) -> MakeRows:
    """A generated function: each record's values as a Row, decoded. One tuple display
    per record: columns the statement selects as a NULL literal are written as None
    without touching the record, memoized values are looked up inline."""
    namespace: dict[str, Any] = {"new": tuple.__new__}
    namespace["cls"] = row_type(tuple(name for name, _ in compiled.columns))
    items = []
    for index, decode in enumerate(decoders):
        if index in compiled.nulls:
            items.append("None")
        elif decode is None:
            items.append(f"r[{index}]")
        elif isinstance(decode, Memo):
            namespace[f"p{index}"] = decode
            namespace[f"m{index}"] = decode.values
            # a member is never falsy (enum values are non-empty): a miss or a None
            # goes to the processor, which memoizes it
            items.append(f"(m{index}.get(r[{index}]) or p{index}(r[{index}]))")
        else:
            namespace[f"p{index}"] = decode
            items.append(f"p{index}(r[{index}])")
    row = ", ".join(items) + ("," if len(items) == 1 else "")
    source = f"def make(records):\n    return [new(cls, ({row})) for r in records]"
    exec(source, namespace)  # noqa: S102 - source built from indexes only
    make: MakeRows = namespace["make"]
    return make


# Types whose processor maps a database value to an immutable value (an enum member
# or the string itself): safe to memoize per database value.
_MEMOIZED = (sa.Enum, StrEnumType)
MEMO_SIZE = 256  # an enum has a handful of values; a bound for anything unexpected


class Memo:
    """A processor remembering its result per (hashable, non-None) input value: a hit
    in ``values`` is the processor's result (never falsy)."""

    __slots__ = ("process", "values")

    def __init__(self, process: Callable[[Any], Any]) -> None:
        self.process = process
        self.values: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        result = self.process(value)
        if value is not None and result and len(self.values) < MEMO_SIZE:
            self.values[value] = result
        return result
