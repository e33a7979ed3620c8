"""Fixed reads on the driver directly (persistence/driver_reads.py: asyncpg, aiosqlite)
against the same statements through SQLAlchemy: same rows, same values, same Python
types; statement events still fire; a connection lost under a driver read is not
handed out again."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from persistence import crypto
from persistence.crypto import KeyRing, configure_encryption, generate_key
from persistence.database import DRIVER_READS, LOOP_READS, DatabaseManager
from persistence.driver_reads import FixedRead, Row, any_of, row_type
from persistence.enums import SeverityLevel
from persistence.errors import ServiceUnavailable, ValidationFailed
from persistence.filters import (
    DiscrepancyFilter,
    IdOrder,
    SessionFilter,
    SessionOrder,
    SortDirection,
)
from persistence.models import metadata
from persistence.pagination import Keyset
from persistence.records import fetch_records
from persistence.repositories import (
    BehavioralTestRepository,
    DiscrepancyRepository,
    ResultRepository,
    SessionRepository,
)
from persistence.services import (
    BehavioralTestService,
    DiscrepancyService,
    ResultService,
    SessionService,
)
from tests.persistence.factories import (
    behavioral_test_input,
    discrepancy_input,
    result_input,
    session_input,
)

SESSIONS = metadata.tables["validation_sessions"]
MISSING = 999_999
Read = Callable[[AsyncSession], Awaitable[Any]]


@pytest.fixture
def sealed_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secret columns are stored encrypted: driver reads must open them too."""
    monkeypatch.setattr(crypto, "_active", crypto._active)
    configure_encryption(KeyRing.parse(f"k1:{generate_key()}"))


async def _seed(db: DatabaseManager) -> dict[str, Any]:
    service = SessionService(db)
    sessions = []
    for name in ("a", "b", "c"):
        values = session_input(f"req-{name}")
        values["source_metadata"] = {"password": f"{name}-secret", "n": 1.5}
        session_id = (await service.create(values)).session.id
        assert session_id is not None
        sessions.append(session_id)
    a, b, c = sessions
    results = []
    for sid, n in ((a, 3), (b, 25), (b, 4)):
        severities = ["CRITICAL", "WARNING", "INFO"]
        items = [
            discrepancy_input(i, severity=severities[i % 3], validation_context={"i": i})
            for i in range(n)
        ]
        results.append((await ResultService(db).record(sid, result_input(), items)).id)
    tests = await BehavioralTestService(db).record(
        b, [behavioral_test_input("one"), behavioral_test_input("two")]
    )
    async with db.read_session() as s:
        discrepancy_ids = list(
            await s.scalars(sa.select(metadata.tables["validation_discrepancies"].c.id))
        )
    await DiscrepancyService(db).resolve_many(discrepancy_ids[::4], "alice")
    return {
        "sessions": [c, MISSING, a, b, a],
        "results": [*results, MISSING],
        "discrepancies": [*discrepancy_ids[::3], MISSING],
        "tests": [t.id for t in tests][::-1],
    }


def _reads(k: dict[str, Any]) -> dict[str, Read]:
    """Every fixed read a loader runs, with keys that include misses and repeats."""
    s_ids, r_ids, d_ids, t_ids = k["sessions"], k["results"], k["discrepancies"], k["tests"]
    warning = DiscrepancyFilter(
        severities=(SeverityLevel.WARNING, SeverityLevel.CRITICAL), is_resolved=False
    )
    after = Keyset(value=d_ids[2], id=d_ids[2])
    return {
        "sessions by id": lambda s: SessionRepository(s).list_by_ids(s_ids),
        "sessions by request id": lambda s: SessionRepository(s).list_by_request_ids(
            ["req-c", "nope", "req-a"]
        ),
        "results by id": lambda s: ResultRepository(s).list_by_ids(r_ids),
        "results by session": lambda s: ResultRepository(s).list_by_session_ids(s_ids),
        "latest result": lambda s: ResultRepository(s).latest_by_session_ids(s_ids),
        "discrepancies by id": lambda s: DiscrepancyRepository(s).list_by_ids(d_ids),
        "discrepancies by result": lambda s: DiscrepancyRepository(s).list_by_result_ids(r_ids),
        "tests by id": lambda s: BehavioralTestRepository(s).list_by_ids(t_ids),
        "tests by session": lambda s: BehavioralTestRepository(s).list_by_session_ids(s_ids),
        "discrepancy pages": lambda s: DiscrepancyRepository(s).pages_by_session_ids(
            s_ids, DiscrepancyFilter(), IdOrder(), 10, None
        ),
        "filtered pages, descending, after a cursor": lambda s: DiscrepancyRepository(
            s
        ).pages_by_session_ids(s_ids, warning, IdOrder(SortDirection.DESC), 3, after),
        # Narrow reads (execution plans): NULL-literal columns, enums through a memo.
        "narrow discrepancy pages": lambda s: DiscrepancyRepository(s).pages_by_session_ids(
            s_ids, DiscrepancyFilter(), IdOrder(), 10, None, frozenset({"severity", "version"})
        ),
        "narrow tests by session": lambda s: BehavioralTestRepository(s).list_by_session_ids(
            s_ids, frozenset({"execution_status"})
        ),
    }


def _plain(value: Any) -> Any:
    """Rows and pages as nested plain values, each leaf with its exact type."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "items") and hasattr(value, "total_count"):  # a Page
        return (_plain(list(value.items)), value.total_count, value.has_next_page)
    return [(k, type(v).__name__, v) for k, v in value._mapping.items()]


async def test_driver_rows_equal_sqlalchemy_rows(db: DatabaseManager, sealed_keys: None) -> None:
    keys = await _seed(db)
    for name, read in _reads(keys).items():
        async with db.read_session() as s:
            assert s.info.get(DRIVER_READS) is not None
            driver = await read(s)
            del s.info[DRIVER_READS]  # the same statement, through SQLAlchemy
            through_sqlalchemy = await read(s)
        assert _plain(driver) == _plain(through_sqlalchemy), name
        assert driver, name
    # Secrets came back opened, datetimes aware UTC, enums as members.
    async with db.read_session() as s:
        a = (await SessionRepository(s).list_by_request_ids(["req-a"]))[0]
    assert isinstance(a, Row)
    assert a.source_metadata == {"password": "a-secret", "n": 1.5}
    assert a.created_at.tzinfo is UTC
    assert a.source_technology.value == session_input("x")["source_technology"]


async def test_raw_pages_decode_to_the_rows_of_the_same_read(
    db: DatabaseManager, backend: str
) -> None:
    """Raw discrepancy pages (execution plans read them by position): the driver's
    records and their decoding, which gives back exactly the rows the same read
    returns made (enums, JSON, datetimes, SQLite's 0/1 booleans, NULL-literal
    columns)."""
    keys = await _seed(db)
    columns = frozenset({"severity", "validation_context", "resolved_at", "is_resolved"})
    args = (keys["sessions"], DiscrepancyFilter(), IdOrder(), 10, None, columns)
    async with db.read_session() as s:
        repo = DiscrepancyRepository(s)
        made = await repo.pages_by_session_ids(*args)
        raw = await repo.pages_by_session_ids(*args, raw=True)
    assert [p.total_count for p in raw] == [p.total_count for p in made]
    assert [p.has_next_page for p in raw] == [p.has_next_page for p in made]
    decoding = raw[0].decoding
    assert decoding is not None
    assert all(p.decoding is decoding for p in raw)
    records = [r for p in raw for r in p.items]
    assert records
    assert not any(isinstance(r, Row) for r in records)
    assert _plain([decoding.make(list(p.items)) for p in raw]) == _plain(
        [list(p.items) for p in made]
    )
    # Each position's decoder alone gives the made row's value (the leaf writers'
    # way of reading raw records), with an enum member and a dict among them.
    rows = [r for p in made for r in p.items]
    decoded = [
        tuple(v if d is None else d(v) for d, v in zip(decoding.decoders, r, strict=True))
        for r in records
    ]
    assert decoded == [tuple(r) for r in rows]
    assert {type(r.severity) for r in rows} == {SeverityLevel}
    assert any(isinstance(r.validation_context, dict) for r in rows)
    assert {type(r.is_resolved) for r in rows} == {bool}
    assert {type(v) for r in records for v in r[:1]} == {int}
    # Another filter is another statement with the same columns: the same decoding.
    only_info = DiscrepancyFilter(severities=(SeverityLevel.INFO,))
    async with db.read_session() as s:
        other = await DiscrepancyRepository(s).pages_by_session_ids(
            keys["sessions"], only_info, IdOrder(), 10, None, columns, raw=True
        )
    assert other[0].decoding is decoding


async def test_narrow_reads_open_sealed_columns_only_when_they_read_them(
    db: DatabaseManager, sealed_keys: None
) -> None:
    await _seed(db)
    listing = SessionFilter(), SessionOrder(), 5, None
    async with db.read_session() as s:
        repo = SessionRepository(s)
        sealed = await repo.list_page(*listing, frozenset({"request_id", "source_metadata"}))
        plain = await repo.list_page(*listing, frozenset({"request_id"}))
    opened = {row.request_id: row.source_metadata for row in sealed.items}
    assert opened == {f"req-{n}": {"password": f"{n}-secret", "n": 1.5} for n in "abc"}
    assert {row.request_id for row in plain.items} == {"req-a", "req-b", "req-c"}
    assert all(row.source_metadata is None for row in plain.items)


async def test_driver_reads_fire_statement_events(db: DatabaseManager, backend: str) -> None:
    keys = await _seed(db)
    seen: list[tuple[str, str]] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(("before", statement))

    def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(("after", statement))

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        async with db.read_session() as s:
            await ResultRepository(s).latest_by_session_ids(keys["sessions"])
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert [kind for kind, _ in seen] == ["before", "after"]
    assert ("ANY" if backend == "postgresql" else "json_each") in seen[0][1]
    assert seen[0][1] == seen[1][1]


@pytest.mark.postgres_only
async def test_lost_connection_is_invalidated(db: DatabaseManager, database_url: str) -> None:
    """The pool must not hand the dead connection out again: the read after the
    failed one succeeds (pre-ping is off by default)."""
    keys = await _seed(db)
    async with db.read_session() as s:
        await SessionRepository(s).list_by_ids(keys["sessions"])  # pooled, statement prepared
        pid = await (await s.connection()).exec_driver_sql("SELECT pg_backend_pid()")
        victim = pid.scalar_one()
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
    finally:
        await admin.close()
    expected = [None if i == MISSING else i for i in keys["sessions"]]
    failures = 0
    for _ in range(db.engine.pool.size() + 1):  # type: ignore[attr-defined]
        try:
            async with db.read_session() as s:
                rows = await SessionRepository(s).list_by_ids(keys["sessions"])
        except ServiceUnavailable:
            failures += 1
            continue
        assert [r.id if r else None for r in rows] == expected
    assert failures <= 1
    async with db.read_session() as s:
        rows = await SessionRepository(s).list_by_ids(keys["sessions"])
    assert [r.id if r else None for r in rows] == expected


def test_sqlite_key_lists_only_for_int_and_str_columns() -> None:
    """JSON keeps ints and strings exactly; a list of anything else is refused when
    the statement is built, not mismatched when it runs."""
    assert "json_each" in str(any_of(SESSIONS.c.id, "keys", "sqlite"))
    assert "json_each" in str(any_of(SESSIONS.c.request_id, "keys", "sqlite"))
    with pytest.raises(TypeError, match="int or str"):
        any_of(SESSIONS.c.created_at, "keys", "sqlite")
    assert "ANY" in str(
        any_of(SESSIONS.c.created_at, "keys", "postgresql").compile(dialect=postgresql.dialect())
    )


def test_rows_by_position_attribute_and_name() -> None:
    cls = row_type(("id", "name", "_total"))
    row = cls((7, "x", 3))
    assert (row[0], row.name, row._total) == (7, "x", 3)
    assert row._mapping == {"id": 7, "name": "x", "_total": 3}
    assert row_type(("id", "name", "_total")) is cls
    assert "name='x'" in repr(row)
    with pytest.raises(AttributeError):
        _ = row.missing


async def test_filter_lists_in_a_fixed_statement(db: DatabaseManager, backend: str) -> None:
    """IN lists a fixed statement carries itself are expanded once, at compile; lists
    bound per call keep the SQL text constant, whatever their length (none too long
    for SQLite's bound-parameter limit)."""
    await _seed(db)
    read = FixedRead(
        sa.select(SESSIONS.c.request_id)
        .where(
            SESSIONS.c.request_id.in_(["req-a", "req-c"]),
            any_of(SESSIONS.c.id, "keys", backend),
            SESSIONS.c.created_at < sa.bindparam("before", type_=SESSIONS.c.created_at.type),
        )
        .order_by(SESSIONS.c.request_id)
    )
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    before_2999 = datetime(2999, 1, 1, tzinfo=UTC)
    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        for keys, expected in ((list(range(1, 40_000)), ["req-a", "req-c"]), ([], [])):
            async with db.read_session() as s:
                rows = await fetch_records(s, read, params={"keys": keys, "before": before_2999})
            assert [r.request_id for r in rows] == expected
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)
    assert len(statements) == 2
    assert statements[0] == statements[1]
    with pytest.raises(sa.exc.ArgumentError, match="'before'"):
        async with db.read_session() as s:
            await fetch_records(s, read, params={"keys": [1]})


@pytest.mark.postgres_only
async def test_failed_driver_statements_reach_handle_error_without_values(
    db: DatabaseManager, database_url: str
) -> None:
    """A failed fixed read and a failed COPY are reported to the engine's handle_error
    listeners (statement metrics, disconnect detection) as SQLAlchemy's own statements
    are, and the error does not list the bound values (the engine hides parameters)."""
    keys = await _seed(db)
    failed: list[str] = []

    def on_error(context: Any) -> None:
        failed.append(context.statement)

    engine = db.engine.sync_engine
    event.listen(engine, "handle_error", on_error)
    try:
        bad_value = "s3cret-not-a-number"
        read = FixedRead(sa.select(SESSIONS.c.id).where(SESSIONS.c.id == sa.bindparam("v")))
        with pytest.raises(sa.exc.DBAPIError) as info:
            async with db.read_session() as s:
                await read.fetch(s, {"v": bad_value})
        assert "[SQL parameters hidden due to hide_parameters=True]" in str(info.value)
        # The value failed to encode mid-protocol (the server still waits for the
        # statement, holding its lock): that connection is closed, not pooled.
        assert await _backends_waiting_mid_statement(database_url) == 0

        rows = [{**discrepancy_input(0), "session_id": keys["sessions"][0], "result_id": MISSING}]

        async def copy(session: AsyncSession) -> int:
            return await DiscrepancyRepository(session).bulk_insert(rows)

        with pytest.raises(sa.exc.IntegrityError):  # the result does not exist
            await db.run_write(copy)
    finally:
        event.remove(engine, "handle_error", on_error)
    assert [statement.split(None, 1)[0] for statement in failed] == ["SELECT", "COPY"]


async def _backends_waiting_mid_statement(database_url: str) -> int:
    """Other backends of this database inside a statement, waiting for the client."""
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for _ in range(20):  # a closed socket ends its backend shortly after
            waiting: int = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state = 'active' AND wait_event = 'ClientRead'"
            )
            if waiting == 0:
                break
            await asyncio.sleep(0.1)
        return waiting
    finally:
        await admin.close()


@pytest.mark.sqlite_only
@pytest.mark.parametrize("runner", ["loop", "aiosqlite"])
async def test_failed_sqlite_driver_reads_are_reported_and_keep_the_connection(
    db: DatabaseManager, runner: str
) -> None:
    """On the loop's connection and on aiosqlite's, a failed fixed read reaches
    handle_error as a DBAPIError without its values; a lookup string the driver
    cannot encode is a ValidationFailed, as in an IN list; and no connection is
    invalidated (nothing is left mid-call): the next read is served."""
    keys = await _seed(db)
    failed: list[str] = []
    invalidated: list[BaseException | None] = []

    def on_error(context: Any) -> None:
        failed.append(context.statement)

    def on_invalidate(_dbapi: Any, _record: Any, error: BaseException | None) -> None:
        invalidated.append(error)

    @asynccontextmanager
    async def session() -> AsyncIterator[AsyncSession]:
        async with db.read_session() as s:
            if runner == "aiosqlite":
                del s.info[LOOP_READS]
            yield s

    engine = db.engine.sync_engine
    event.listen(engine, "handle_error", on_error)
    event.listen(engine.pool, "invalidate", on_invalidate)
    try:
        read = FixedRead(sa.select(SESSIONS.c.id).where(SESSIONS.c.id == sa.bindparam("v")))
        with pytest.raises(sa.exc.DBAPIError) as info:
            async with session() as s:
                await read.fetch(s, {"v": {"not": "bindable"}})
        assert "[SQL parameters hidden due to hide_parameters=True]" in str(info.value)
        assert "bindable" not in str(info.value)
        with pytest.raises(ValidationFailed):
            async with session() as s:
                await SessionRepository(s).list_by_request_ids(["lone \ud800 surrogate"])
        async with session() as s:
            rows = await SessionRepository(s).list_by_ids(keys["sessions"])
    finally:
        event.remove(engine, "handle_error", on_error)
        event.remove(engine.pool, "invalidate", on_invalidate)
    # Both failures reach the listeners, as SQLAlchemy reports any error of a statement.
    assert [statement.split(None, 1)[0] for statement in failed] == ["SELECT", "SELECT"]
    assert invalidated == []
    assert [r.id if r else None for r in rows] == [
        None if i == MISSING else i for i in keys["sessions"]
    ]
