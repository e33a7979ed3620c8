"""Repositories on real databases: keyset pagination, filters, per-parent pages in one
statement, and loader-shaped lookups aligned with their keys."""

import base64
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.enums import (
    InputType,
    SessionStatus,
    SeverityLevel,
    TechnologyType,
    ValidationScope,
)
from persistence.errors import ValidationFailed
from persistence.filters import (
    DiscrepancyFilter,
    IdOrder,
    SessionFilter,
    SessionOrder,
    SessionSortField,
    SortDirection,
)
from persistence.models import ValidationDiscrepancy, ValidationResult, metadata
from persistence.pagination import Keyset, Page, decode_cursor, encode_cursor
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
RESULTS = metadata.tables["validation_results"]
DISCREPANCIES = metadata.tables["validation_discrepancies"]

BASE = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
TECHS = (TechnologyType.PYTHON_FLASK, TechnologyType.JAVA_SPRING, TechnologyType.PHP_LARAVEL)
SCOPES = (
    ValidationScope.UI_LAYOUT,
    ValidationScope.API_ENDPOINTS,
    ValidationScope.FULL_SYSTEM,
    ValidationScope.DATA_STRUCTURE,
)
STATUSES = tuple(SessionStatus)
N_SESSIONS = 25
MISSING = 424242


# ------------------------------------------------------------------------- helpers


@contextmanager
def count_statements(db: DatabaseManager) -> Iterator[list[str]]:
    """SQL statements sent to the database while the block runs."""
    statements: list[str] = []

    def listener(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, _many: bool
    ) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)


def session_row(i: int) -> dict[str, Any]:
    """Session number i: created_at ties in threes, updated_at ties in fives and runs
    against the created_at order."""
    return {
        "request_id": f"req-{i:02d}",
        "status": STATUSES[i % len(STATUSES)],
        "source_technology": TECHS[i % 3],
        "target_technology": TECHS[(i + 1) % 3],
        "validation_scope": SCOPES[i % 4],
        "source_input_type": InputType.CODE_FILES,
        "target_input_type": InputType.SCREENSHOTS,
        "created_at": BASE + timedelta(seconds=i // 3),
        "updated_at": BASE + timedelta(hours=1, milliseconds=(i * 7) % 5),
    }


async def insert_sessions(db: DatabaseManager, n: int = N_SESSIONS) -> dict[int, dict[str, Any]]:
    """n sessions inserted in shuffled order (so ids do not follow created_at);
    returns {id: row values, with "i" the session number}."""
    numbers = list(range(n))
    random.Random(7).shuffle(numbers)  # noqa: S311 - deterministic test data, not crypto

    async def work(session: AsyncSession) -> dict[int, dict[str, Any]]:
        out = {}
        for i in numbers:
            values = session_row(i)
            sid = await session.scalar(
                sa.insert(SESSIONS).values(**values).returning(SESSIONS.c.id)
            )
            assert sid is not None
            out[sid] = {**values, "i": i}
        return out

    return await db.run_write(work)


def expected_order(
    rows: dict[int, dict[str, Any]], order: SessionOrder, ids: set[int] | None = None
) -> list[int]:
    field = order.field.value
    chosen = [sid for sid in rows if ids is None or sid in ids]
    return sorted(
        chosen,
        key=lambda sid: (rows[sid][field], sid),
        reverse=order.direction is SortDirection.DESC,
    )


async def walk(
    db: DatabaseManager, filter_: SessionFilter, order: SessionOrder, first: int = 7
) -> list[Page[Any]]:
    """Every page, following cursors through an encode/decode round trip."""
    pages: list[Page[Any]] = []
    after: Keyset | None = None
    while True:
        async with db.read_session() as s:
            page = await SessionRepository(s).list_page(filter_, order, first, after)
        pages.append(page)
        if not page.has_next_page:
            return pages
        assert len(pages) < 50, "pagination does not terminate"
        last = page.items[-1]
        after = decode_cursor(encode_cursor(getattr(last, order.field.value), last.id))


async def list_all(db: DatabaseManager, filter_: SessionFilter) -> set[int]:
    async with db.read_session() as s:
        page = await SessionRepository(s).list_page(filter_, SessionOrder(), 100, None)
    ids = {row.id for row in page.items}
    assert len(ids) == len(page.items) == page.total_count
    assert not page.has_next_page
    return ids


ALL_ORDERS = [
    pytest.param(SessionOrder(f, d), id=f"{f.value}-{d.value}")
    for f in SessionSortField
    for d in SortDirection
]


# ------------------------------------------------------------ SessionRepository.list_page


@pytest.mark.parametrize("order", ALL_ORDERS)
async def test_session_pages_walk_every_row_once(db: DatabaseManager, order: SessionOrder) -> None:
    rows = await insert_sessions(db)
    pages = await walk(db, SessionFilter(), order)
    assert [len(p.items) for p in pages] == [7, 7, 7, 4]
    assert [p.has_next_page for p in pages] == [True, True, True, False]
    assert {p.total_count for p in pages} == {N_SESSIONS}
    walked = [row.id for p in pages for row in p.items]
    assert walked == expected_order(rows, order)
    for page in pages:
        for row in page.items:
            assert row.created_at == rows[row.id]["created_at"]
            assert row.updated_at == rows[row.id]["updated_at"]


async def test_session_page_sizes_at_boundaries(db: DatabaseManager) -> None:
    rows = await insert_sessions(db)
    order = SessionOrder()
    expected = expected_order(rows, order)
    for first in (1, 24, 25, 26, 100):
        async with db.read_session() as s:
            page = await SessionRepository(s).list_page(SessionFilter(), order, first, None)
        assert [r.id for r in page.items] == expected[:first]
        assert page.total_count == N_SESSIONS
        assert page.has_next_page is (first < N_SESSIONS)
    # A cursor at the very last row: an empty page that still knows the total.
    last = expected[-1]
    after = Keyset(rows[last]["created_at"], last)
    async with db.read_session() as s:
        page = await SessionRepository(s).list_page(SessionFilter(), order, 7, after)
    assert (list(page.items), page.total_count, page.has_next_page) == ([], N_SESSIONS, False)


async def test_session_page_first_zero_reports_next_page(db: DatabaseManager) -> None:
    await insert_sessions(db, 3)
    async with db.read_session() as s:
        page = await SessionRepository(s).list_page(SessionFilter(), SessionOrder(), 0, None)
    assert (list(page.items), page.total_count) == ([], 3)
    assert page.has_next_page is True


def _by(rows: dict[int, dict[str, Any]], pred: Any) -> set[int]:
    return {sid for sid, r in rows.items() if pred(r)}


async def test_session_filters_narrow(db: DatabaseManager) -> None:
    rows = await insert_sessions(db)
    minus7 = timezone(timedelta(hours=-7))
    plus3 = timezone(timedelta(hours=3))
    cases: list[tuple[SessionFilter, set[int]]] = [
        (SessionFilter(), set(rows)),
        (
            SessionFilter(statuses=(SessionStatus.PENDING, SessionStatus.FAILED)),
            _by(rows, lambda r: r["status"] in {SessionStatus.PENDING, SessionStatus.FAILED}),
        ),
        (
            SessionFilter(source_technologies=(TechnologyType.JAVA_SPRING,)),
            _by(rows, lambda r: r["source_technology"] is TechnologyType.JAVA_SPRING),
        ),
        (
            SessionFilter(target_technologies=(TechnologyType.JAVA_SPRING,)),
            _by(rows, lambda r: r["target_technology"] is TechnologyType.JAVA_SPRING),
        ),
        (
            SessionFilter(source_technologies=(TechnologyType.CSHARP_DOTNET,)),
            set(),
        ),
        (
            SessionFilter(scopes=(ValidationScope.UI_LAYOUT, ValidationScope.FULL_SYSTEM)),
            _by(
                rows,
                lambda r: (
                    r["validation_scope"]
                    in {ValidationScope.UI_LAYOUT, ValidationScope.FULL_SYSTEM}
                ),
            ),
        ),
        (
            # [from, to), bounds given in other time zones, exact to the microsecond
            SessionFilter(
                created_from=(BASE + timedelta(seconds=2)).astimezone(minus7),
                created_to=(BASE + timedelta(seconds=5)).astimezone(plus3),
            ),
            _by(rows, lambda r: 6 <= r["i"] <= 14),
        ),
        (
            SessionFilter(created_from=BASE + timedelta(seconds=2, microseconds=1)),
            _by(rows, lambda r: r["i"] >= 9),
        ),
        (
            SessionFilter(created_to=BASE + timedelta(seconds=1)),
            _by(rows, lambda r: r["i"] <= 2),
        ),
        (
            SessionFilter(
                statuses=(SessionStatus.PENDING,),
                scopes=(ValidationScope.UI_LAYOUT,),
            ),
            _by(
                rows,
                lambda r: (
                    r["status"] is SessionStatus.PENDING
                    and r["validation_scope"] is ValidationScope.UI_LAYOUT
                ),
            ),
        ),
    ]
    for filter_, expected in cases:
        assert await list_all(db, filter_) == expected, filter_


async def test_session_fidelity_filter_uses_results(db: DatabaseManager) -> None:
    rows = await insert_sessions(db, 10)
    by_number = {r["i"]: sid for sid, r in rows.items()}
    # session i has results with these scores (none for 7, 8, 9)
    scores = {
        0: [0.1],
        1: [0.2, 0.95],
        2: [0.4],
        3: [0.5, 0.55],
        4: [0.6],
        5: [1.0],
        6: [0.0],
    }

    async def work(session: AsyncSession) -> None:
        for i, values in scores.items():
            for score in values:
                await session.execute(
                    sa.insert(RESULTS).values(
                        session_id=by_number[i], **result_input(fidelity_score=score)
                    )
                )

    await db.run_write(work)

    def having(pred: Any) -> set[int]:
        return {by_number[i] for i, values in scores.items() if any(pred(v) for v in values)}

    cases = [
        (SessionFilter(fidelity_min=0.4, fidelity_max=0.6), having(lambda v: 0.4 <= v <= 0.6)),
        (SessionFilter(fidelity_min=0.9), having(lambda v: v >= 0.9)),
        (SessionFilter(fidelity_max=0.2), having(lambda v: v <= 0.2)),
        (SessionFilter(fidelity_min=0.0, fidelity_max=1.0), set(map(by_number.get, scores))),
        (SessionFilter(fidelity_min=0.7, fidelity_max=0.9), set()),
        (
            SessionFilter(fidelity_min=0.5, statuses=(STATUSES[3 % len(STATUSES)],)),
            {by_number[3]},
        ),
    ]
    for filter_, expected in cases:
        assert await list_all(db, filter_) == expected, filter_


@pytest.mark.parametrize("order", ALL_ORDERS)
async def test_session_filtered_walk_total_is_stable(
    db: DatabaseManager, order: SessionOrder
) -> None:
    rows = await insert_sessions(db)
    filter_ = SessionFilter(statuses=(SessionStatus.PENDING, SessionStatus.COMPLETED))
    matching = _by(rows, lambda r: r["status"] in set(filter_.statuses or ()))
    pages = await walk(db, filter_, order, first=3)
    assert {p.total_count for p in pages} == {len(matching)}
    assert [r.id for p in pages for r in p.items] == expected_order(rows, order, matching)
    assert [p.has_next_page for p in pages] == [True] * (len(pages) - 1) + [False]


# ------------------------------------------------- DiscrepancyRepository.pages_by_session_ids


async def three_sessions(db: DatabaseManager) -> tuple[int, int, int, list[int], list[int]]:
    """Sessions A (no discrepancies), B (5) and C (30); severity cycles CRITICAL,
    WARNING, INFO; resolved: B's first, C's even positions. Returns A, B, C and the
    discrepancy ids of B and C in insertion order."""
    service = SessionService(db)
    ids = []
    for name in ("a", "b", "c"):
        outcome = await service.create(session_input(f"req-{name}"))
        assert outcome.session.id is not None
        ids.append(outcome.session.id)
    a, b, c = ids
    severities = ["CRITICAL", "WARNING", "INFO"]
    for sid, n in ((b, 5), (c, 30)):
        items = [
            discrepancy_input(i, severity=severities[i % 3], validation_context={"i": i})
            for i in range(n)
        ]
        await ResultService(db).record(sid, result_input(), items)
    async with db.read_session() as s:
        rows = (
            await s.execute(
                sa.select(DISCREPANCIES.c.id, DISCREPANCIES.c.session_id).order_by(
                    DISCREPANCIES.c.id
                )
            )
        ).all()
    b_ids = [r.id for r in rows if r.session_id == b]
    c_ids = [r.id for r in rows if r.session_id == c]
    await DiscrepancyService(db).resolve_many([b_ids[0], *c_ids[::2]], "alice")
    return a, b, c, b_ids, c_ids


async def pages_for(
    db: DatabaseManager,
    session_ids: list[int],
    filter_: DiscrepancyFilter | None = None,
    direction: SortDirection = SortDirection.ASC,
    first: int = 10,
    after: Keyset | None = None,
) -> list[Page[ValidationDiscrepancy]]:
    async with db.read_session() as s:
        await s.execute(sa.text("SELECT 1"))  # connection set up before counting
        with count_statements(db) as statements:
            pages = await DiscrepancyRepository(s).pages_by_session_ids(
                session_ids, filter_ or DiscrepancyFilter(), IdOrder(direction), first, after
            )
    assert len(statements) == 1, statements
    assert len(pages) == len(session_ids)
    return pages


def shape(pages: list[Page[ValidationDiscrepancy]]) -> list[tuple[list[int], int, bool]]:
    return [([d.id for d in p.items if d.id], p.total_count, p.has_next_page) for p in pages]


async def test_pages_by_session_ids_first_page(db: DatabaseManager) -> None:
    a, b, c, b_ids, c_ids = await three_sessions(db)
    pages = await pages_for(db, [c, a, b])
    assert shape(pages) == [(c_ids[:10], 30, True), ([], 0, False), (b_ids, 5, False)]
    row = pages[0].items[3]
    assert row.session_id == c
    assert row.severity is SeverityLevel.CRITICAL
    assert row.validation_context == {"i": 3}
    assert row.created_at is not None
    assert row.created_at.utcoffset() == timedelta(0)
    assert (pages[0].items[0].is_resolved, pages[0].items[1].is_resolved) == (True, False)


async def test_pages_by_session_ids_descending(db: DatabaseManager) -> None:
    a, b, c, b_ids, c_ids = await three_sessions(db)
    pages = await pages_for(db, [a, b, c], direction=SortDirection.DESC)
    assert shape(pages) == [
        ([], 0, False),
        (b_ids[::-1], 5, False),
        (c_ids[::-1][:10], 30, True),
    ]


async def test_pages_by_session_ids_with_filters(db: DatabaseManager) -> None:
    a, b, c, b_ids, c_ids = await three_sessions(db)
    critical = await pages_for(
        db, [a, b, c], DiscrepancyFilter(severities=(SeverityLevel.CRITICAL,))
    )
    # exactly `first` matches: a full page and no next page
    assert shape(critical) == [([], 0, False), (b_ids[::3], 2, False), (c_ids[::3], 10, False)]
    resolved = await pages_for(db, [b, c, a], DiscrepancyFilter(is_resolved=True))
    assert shape(resolved) == [(b_ids[:1], 1, False), (c_ids[::2][:10], 15, True), ([], 0, False)]
    open_ = await pages_for(db, [c, b], DiscrepancyFilter(is_resolved=False), first=4)
    assert shape(open_) == [(c_ids[1::2][:4], 15, True), (b_ids[1:5], 4, False)]
    combined = await pages_for(
        db,
        [c],
        DiscrepancyFilter(severities=(SeverityLevel.WARNING, SeverityLevel.INFO), is_resolved=True),
        first=6,
    )
    expected = [d for k, d in enumerate(c_ids) if k % 3 != 0 and k % 2 == 0]
    assert shape(combined) == [(expected[:6], 10, True)]


async def test_pages_by_session_ids_after_keyset(db: DatabaseManager) -> None:
    a, b, c, b_ids, c_ids = await three_sessions(db)
    second = await pages_for(db, [c, a, b], after=Keyset(c_ids[9], c_ids[9]))
    # every B row is before the cursor: an empty page that still knows its total
    assert shape(second) == [(c_ids[10:20], 30, True), ([], 0, False), ([], 5, False)]
    third = await pages_for(db, [c, b], after=Keyset(c_ids[19], c_ids[19]))
    assert shape(third) == [(c_ids[20:], 30, False), ([], 5, False)]
    cursor = decode_cursor(encode_cursor(b_ids[1], b_ids[1]))
    mid_b = await pages_for(db, [b, c], after=cursor, first=2)
    assert shape(mid_b) == [(b_ids[2:4], 5, True), (c_ids[:2], 30, True)]
    filtered = await pages_for(
        db,
        [c],
        DiscrepancyFilter(is_resolved=True),
        first=5,
        after=Keyset(c_ids[10], c_ids[10]),
    )
    assert shape(filtered) == [(c_ids[12:22:2], 15, True)]
    desc = await pages_for(
        db, [c, b], direction=SortDirection.DESC, after=Keyset(c_ids[20], c_ids[20])
    )
    assert shape(desc) == [(c_ids[19:9:-1], 30, True), (b_ids[::-1], 5, False)]


async def test_pages_by_session_ids_edge_keys(db: DatabaseManager) -> None:
    a, b, c, b_ids, _ = await three_sessions(db)
    pages = await pages_for(db, [b, MISSING, b, a], first=3)
    assert shape(pages) == [
        (b_ids[:3], 5, True),
        ([], 0, False),
        (b_ids[:3], 5, True),
        ([], 0, False),
    ]
    zero = await pages_for(db, [c, a], first=0)
    assert shape(zero) == [([], 30, True), ([], 0, False)]
    assert await pages_for(db, []) == []


# -------------------------------------------------------------------- ResultRepository


async def add_results(db: DatabaseManager, specs: list[tuple[int, datetime]]) -> list[int]:
    async def work(session: AsyncSession) -> list[int]:
        repo = ResultRepository(session)
        out = []
        for sid, created in specs:
            row = await repo.add(
                {**result_input(summary=f"at {created}"), "session_id": sid, "created_at": created}
            )
            assert row.id is not None
            out.append(row.id)
        return out

    return await db.run_write(work)


async def test_latest_and_list_by_session_ids(db: DatabaseManager) -> None:
    sessions = [
        (await SessionService(db).create(session_input(f"req-{k}"))).session.id for k in range(4)
    ]
    s1, s2, s3, s4 = (sid for sid in sessions if sid is not None)
    r1, r2, r3, r4, r5, r6 = await add_results(
        db,
        [
            (s1, BASE),
            (s1, BASE + timedelta(hours=2)),  # newest of s1 ...
            (s1, BASE + timedelta(hours=1)),  # ... although this one has a higher id
            (s2, BASE - timedelta(days=1)),
            (s4, BASE),  # s4: a tie on created_at goes to the higher id
            (s4, BASE),
        ],
    )
    keys = [s3, s1, s2, s1, MISSING, s4]
    async with db.read_session() as s:
        await s.execute(sa.text("SELECT 1"))
        with count_statements(db) as statements:
            latest = await ResultRepository(s).latest_by_session_ids(keys)
    assert len(statements) == 1
    assert [r.id if r else None for r in latest] == [None, r2, r4, r2, None, r6]
    newest = latest[1]
    # A Core row with exactly the table's columns (no ORM object, no helper columns).
    assert list(newest._mapping) == list(ValidationResult.__table__.c.keys())
    assert newest.created_at == BASE + timedelta(hours=2)
    assert newest.created_at is not None
    assert newest.created_at.utcoffset() == timedelta(0)

    async with db.read_session() as s:
        await s.execute(sa.text("SELECT 1"))
        with count_statements(db) as statements:
            grouped = await ResultRepository(s).list_by_session_ids(keys)
    assert len(statements) == 1
    assert [[r.id for r in group] for group in grouped] == [
        [],
        [r1, r3, r2],  # oldest first
        [r4],
        [r1, r3, r2],
        [],
        [r5, r6],
    ]


# ---------------------------------------------------------------- loader-shaped lookups


async def test_loader_lookups_follow_key_order(db: DatabaseManager) -> None:
    service = SessionService(db)
    created = [(await service.create(session_input(f"req-{k}"))).session for k in "xyz"]
    sx, sy, sz = (s.id for s in created)
    assert sx is not None
    assert sy is not None
    assert sz is not None
    res_x = await ResultService(db).record(
        sx, result_input(), [discrepancy_input(i) for i in range(3)]
    )
    res_y = await ResultService(db).record(sy, result_input(), [discrepancy_input(9)])
    tests_x = await BehavioralTestService(db).record(
        sx, [behavioral_test_input("one"), behavioral_test_input("two")]
    )
    async with db.read_session() as s:
        all_d = list(await s.scalars(sa.select(ValidationDiscrepancy).order_by(DISCREPANCIES.c.id)))
    d_x = [d.id for d in all_d if d.result_id == res_x.id]
    d_y = [d.id for d in all_d if d.result_id == res_y.id]
    t_x = [t.id for t in tests_x]

    async def run(call: Any) -> Any:
        async with db.read_session() as s:
            await s.execute(sa.text("SELECT 1"))
            with count_statements(db) as statements:
                out = await call(s)
        assert len(statements) == 1, statements
        return out

    def ids(rows: list[Any]) -> list[int | None]:
        return [r.id if r is not None else None for r in rows]

    got = await run(lambda s: SessionRepository(s).list_by_ids([sz, MISSING, sx, sz]))
    assert ids(got) == [sz, None, sx, sz]
    got = await run(
        lambda s: SessionRepository(s).list_by_request_ids(["req-y", "nope", "req-x", "req-y"])
    )
    assert ids(got) == [sy, None, sx, sy]
    got = await run(lambda s: ResultRepository(s).list_by_ids([res_y.id, MISSING, res_x.id]))
    assert ids(got) == [res_y.id, None, res_x.id]
    got = await run(
        lambda s: DiscrepancyRepository(s).list_by_ids([d_x[2], MISSING, d_y[0], d_x[2]])
    )
    assert ids(got) == [d_x[2], None, d_y[0], d_x[2]]
    got = await run(
        lambda s: DiscrepancyRepository(s).list_by_result_ids(
            [res_y.id, MISSING, res_x.id, res_y.id]
        )
    )
    assert [ids(g) for g in got] == [d_y, [], d_x, d_y]
    got = await run(lambda s: BehavioralTestRepository(s).list_by_ids([t_x[1], MISSING, t_x[0]]))
    assert ids(got) == [t_x[1], None, t_x[0]]
    got = await run(
        lambda s: BehavioralTestRepository(s).list_by_session_ids([sy, sx, MISSING, sx])
    )
    assert [ids(g) for g in got] == [[], t_x, [], t_x]


async def test_loader_lookups_with_no_keys(db: DatabaseManager) -> None:
    async with db.read_session() as s:
        assert await SessionRepository(s).list_by_ids([]) == []
        assert await SessionRepository(s).list_by_request_ids([]) == []
        assert await ResultRepository(s).list_by_ids([]) == []
        assert await ResultRepository(s).list_by_session_ids([]) == []
        assert await ResultRepository(s).latest_by_session_ids([]) == []
        assert await DiscrepancyRepository(s).list_by_ids([]) == []
        assert await DiscrepancyRepository(s).list_by_result_ids([]) == []
        assert await BehavioralTestRepository(s).list_by_ids([]) == []
        assert await BehavioralTestRepository(s).list_by_session_ids([]) == []


# ------------------------------------------------------------------------- cursors


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _json_cursor(value: Any) -> str:
    return _b64(json.dumps(value).encode())


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("é", id="non-ascii"),
        pytest.param("a", id="bad-padding"),
        pytest.param(_b64(b"\xff\xfe\xfd"), id="not-utf8"),
        pytest.param(_b64(b"not json"), id="not-json"),
        pytest.param(_json_cursor(5), id="number"),
        pytest.param(_json_cursor(None), id="null"),
        pytest.param(_json_cursor("abc"), id="three-char-string"),
        pytest.param(_json_cursor(["v", 1]), id="two-items"),
        pytest.param(_json_cursor(["v", 1, 2, 3]), id="four-items"),
        pytest.param(_json_cursor({"a": 1, "b": 2, "c": 3}), id="object"),
        pytest.param(_json_cursor(["v", 1, "2"]), id="id-string"),
        pytest.param(_json_cursor(["v", 1, True]), id="id-bool"),
        pytest.param(_json_cursor(["v", 1, 2.0]), id="id-float"),
        pytest.param(_json_cursor(["v", [1], 2]), id="value-list"),
        pytest.param(_json_cursor(["v", {"a": 1}, 2]), id="value-object"),
        pytest.param(_json_cursor(["x", 1, 2]), id="unknown-kind"),
        pytest.param(_json_cursor(["t", "yesterday", 2]), id="bad-datetime"),
        pytest.param(_json_cursor(["t", "2026-01-01T00:00:00", 2]), id="naive-datetime"),
        pytest.param(_json_cursor(["t", 12345, 2]), id="datetime-number"),
    ],
)
def test_decode_cursor_rejects_garbage(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert info.value.field == "after"


def test_decode_cursor_names_given_field() -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_cursor("garbage!", field="before")
    assert info.value.field == "before"


@pytest.mark.parametrize(
    ("value", "row_id"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), 1),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))), 2**40),
        (17, 17),
        (0.25, 3),
        ("text with / and + and é", 4),
        (None, 5),
    ],
)
def test_cursor_round_trip(value: Any, row_id: int) -> None:
    cursor = encode_cursor(value, row_id)
    assert "=" not in cursor
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    keyset = decode_cursor(cursor)
    assert keyset == Keyset(value, row_id)
    if isinstance(value, datetime):
        assert keyset.value.utcoffset() == value.utcoffset()


@pytest.mark.parametrize(
    "case", ["session-id-cursor", "session-huge-id", "discrepancy-datetime", "pages-string"]
)
async def test_mismatched_cursor_is_bad_input(db: DatabaseManager, case: str) -> None:
    await three_sessions(db)
    now = datetime.now(UTC)
    calls = {
        "session-id-cursor": lambda s: SessionRepository(s).list_page(
            SessionFilter(), SessionOrder(), 5, decode_cursor(encode_cursor(3, 3))
        ),
        "session-huge-id": lambda s: SessionRepository(s).list_page(
            SessionFilter(), SessionOrder(), 5, decode_cursor(encode_cursor(now, 2**70))
        ),
        "discrepancy-datetime": lambda s: DiscrepancyRepository(s).list_page(
            DiscrepancyFilter(), IdOrder(), 5, decode_cursor(encode_cursor(now, 3))
        ),
        "pages-string": lambda s: DiscrepancyRepository(s).pages_by_session_ids(
            [1, 2, 3], DiscrepancyFilter(), IdOrder(), 5, decode_cursor(encode_cursor("3", 3))
        ),
    }
    async with db.read_session() as s:
        with pytest.raises(ValidationFailed) as info:
            await calls[case](s)
    assert info.value.field == "after"
