"""Persistence services on real databases: idempotency, validation naming the field,
lifecycle rules, all-or-nothing writes and optimistic concurrency."""

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.enums import ExecutionStatus, SessionStatus
from persistence.errors import (
    Conflict,
    InvalidTransition,
    MigvalError,
    NotFound,
    StaleVersion,
    ValidationFailed,
)
from persistence.models import (
    BehavioralTestResult,
    ValidationDiscrepancy,
    ValidationResult,
    ValidationSession,
    metadata,
)
from persistence.repositories import DiscrepancyRepository, ResultRepository
from persistence.repositories.discrepancies import BULK_COLUMNS, BULK_DEFAULTS
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
BEHAVIORAL = metadata.tables["behavioral_test_results"]
AUDIT = metadata.tables["audit_log"]


# ------------------------------------------------------------------------- helpers


async def count(db: DatabaseManager, table: sa.Table, *where: Any) -> int:
    async with db.read_session() as s:
        return int(await s.scalar(sa.select(sa.func.count()).select_from(table).where(*where)))


async def fetch_session(db: DatabaseManager, session_id: int) -> ValidationSession:
    async with db.read_session() as s:
        row = await s.get(ValidationSession, session_id)
    assert row is not None
    return row


async def fetch_discrepancy(db: DatabaseManager, did: int) -> ValidationDiscrepancy:
    async with db.read_session() as s:
        row = await s.get(ValidationDiscrepancy, did)
    assert row is not None
    return row


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)


def assert_recent(value: datetime | None) -> None:
    assert_utc(value)
    assert value is not None
    assert abs(datetime.now(UTC) - value) < timedelta(minutes=1)


def snapshot(row: Any) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in row.__table__.c}


async def new_session(db: DatabaseManager, request_id: str = "req-1", **kw: Any) -> int:
    outcome = await SessionService(db).create(session_input(request_id, **kw))
    assert outcome.session.id is not None
    return outcome.session.id


async def session_in(db: DatabaseManager, status: SessionStatus, request_id: str = "req-s") -> int:
    sid = await new_session(db, request_id)
    service = SessionService(db)
    path = {
        SessionStatus.PENDING: [],
        SessionStatus.PROCESSING: [SessionStatus.PROCESSING],
        SessionStatus.COMPLETED: [SessionStatus.PROCESSING, SessionStatus.COMPLETED],
        SessionStatus.FAILED: [SessionStatus.PROCESSING, SessionStatus.FAILED],
        SessionStatus.CANCELLED: [SessionStatus.CANCELLED],
    }[status]
    for step in path:
        await service.update_status(sid, step)
    return sid


async def discrepancies_of(db: DatabaseManager, n: int) -> tuple[int, list[int]]:
    sid = await new_session(db, f"req-d{n}")
    await ResultService(db).record(sid, result_input(), [discrepancy_input(i) for i in range(n)])
    async with db.read_session() as s:
        ids = list(await s.scalars(sa.select(DISCREPANCIES.c.id).order_by(DISCREPANCIES.c.id)))
    return sid, ids


# ------------------------------------------------------------- SessionService.create


async def test_create_session_defaults(db: DatabaseManager) -> None:
    outcome = await SessionService(db).create(session_input())
    assert outcome.created is True
    row = outcome.session
    assert row.id is not None
    assert row.status is SessionStatus.PENDING
    assert row.behavioral_timeout == 300
    assert_recent(row.created_at)
    assert_recent(row.updated_at)
    stored = await fetch_session(db, row.id)
    assert stored.status is SessionStatus.PENDING
    assert stored.behavioral_timeout == 300
    assert stored.request_id == "req-1"
    assert_utc(stored.created_at)
    assert_utc(stored.updated_at)


async def test_create_same_payload_is_idempotent(db: DatabaseManager) -> None:
    payload = session_input(
        execution_time=1.25,
        session_metadata={"type": "web", "tags": ["a", "b"], "nested": {"n": 1}},
        source_urls=["http://a", "http://b"],
    )
    first = await SessionService(db).create(payload)
    again = await SessionService(db).create(dict(payload))
    assert first.created is True
    assert again.created is False
    assert again.session.id == first.session.id
    assert await count(db, SESSIONS) == 1


async def test_create_same_request_id_different_payload_conflicts(db: DatabaseManager) -> None:
    first = await SessionService(db).create(session_input(execution_time=1.0))
    assert first.session.id is not None
    before = snapshot(await fetch_session(db, first.session.id))
    with pytest.raises(Conflict) as info:
        await SessionService(db).create(
            session_input(execution_time=1.0, target_technology="CSHARP_DOTNET")
        )
    assert info.value.field == "request_id"
    assert "target_technology" in info.value.message
    assert await count(db, SESSIONS) == 1
    assert snapshot(await fetch_session(db, first.session.id)) == before


async def test_create_refuses_status(db: DatabaseManager) -> None:
    with pytest.raises(MigvalError) as info:
        await SessionService(db).create(session_input(status="completed"))
    assert info.value.field == "status"
    assert await count(db, SESSIONS) == 0


@pytest.mark.parametrize(
    ("overrides", "drop", "field"),
    [
        pytest.param({"source_technology": "COBOL"}, None, "source_technology", id="enum"),
        pytest.param({"request_id": "x" * 256}, None, "request_id", id="too-long"),
        pytest.param({}, "validation_scope", "validation_scope", id="missing"),
        pytest.param({}, "request_id", "request_id", id="missing-request-id"),
        pytest.param({"colour": "red"}, None, "colour", id="unknown-field"),
        pytest.param({"created_at": "2020-01-01"}, None, "created_at", id="server-managed"),
        pytest.param({"execution_time": -0.5}, None, "execution_time", id="negative"),
        pytest.param({"execution_time": math.nan}, None, "execution_time", id="nan"),
        pytest.param({"execution_time": math.inf}, None, "execution_time", id="inf"),
        pytest.param({"behavioral_timeout": 0}, None, "behavioral_timeout", id="timeout-zero"),
        pytest.param({"behavioral_timeout": True}, None, "behavioral_timeout", id="bool-int"),
        pytest.param({"request_id": None}, None, "request_id", id="null-required"),
        pytest.param(
            {"session_metadata": {"x": math.nan}}, None, "session_metadata", id="json-nan"
        ),
    ],
)
async def test_create_bad_input_names_field(
    db: DatabaseManager, overrides: dict[str, Any], drop: str | None, field: str
) -> None:
    payload = session_input(**overrides)
    if drop is not None:
        del payload[drop]
    with pytest.raises(ValidationFailed) as info:
        await SessionService(db).create(payload)
    assert info.value.field == field
    assert await count(db, SESSIONS) == 0


async def test_create_accepts_limits(db: DatabaseManager) -> None:
    outcome = await SessionService(db).create(
        session_input("x" * 255, execution_time=0.0, behavioral_timeout=1)
    )
    assert outcome.created is True
    assert outcome.session.request_id == "x" * 255
    assert outcome.session.behavioral_timeout == 1


async def test_concurrent_creates_make_one_row(
    db: DatabaseManager, caplog: pytest.LogCaptureFixture
) -> None:
    payload = session_input("req-race", session_metadata={"k": "v"})
    service = SessionService(db)
    with caplog.at_level(logging.WARNING, logger="persistence.database"):
        outcomes = await asyncio.gather(*(service.create(dict(payload)) for _ in range(20)))
    assert len({o.session.id for o in outcomes}) == 1
    assert sum(o.created for o in outcomes) == 1
    assert await count(db, SESSIONS) == 1
    assert "database is locked" not in caplog.text
    assert "transient database error" not in caplog.text


# -------------------------------------------------------- SessionService.update_status


async def test_status_happy_path(db: DatabaseManager) -> None:
    sid = await new_session(db)
    service = SessionService(db)
    processing = await service.update_status(sid, SessionStatus.PROCESSING)
    assert processing.status is SessionStatus.PROCESSING
    completed = await service.update_status(sid, "completed")
    assert completed.status is SessionStatus.COMPLETED
    stored = await fetch_session(db, sid)
    assert stored.status is SessionStatus.COMPLETED
    assert stored.updated_at is not None
    assert stored.created_at is not None
    assert stored.updated_at >= stored.created_at


async def test_status_cannot_skip_processing(db: DatabaseManager) -> None:
    sid = await new_session(db)
    with pytest.raises(InvalidTransition) as info:
        await SessionService(db).update_status(sid, SessionStatus.COMPLETED)
    assert info.value.field == "status"
    assert (await fetch_session(db, sid)).status is SessionStatus.PENDING


@pytest.mark.parametrize(
    "terminal", [SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED]
)
async def test_terminal_states_have_no_way_out(
    db: DatabaseManager, terminal: SessionStatus
) -> None:
    sid = await session_in(db, terminal)
    service = SessionService(db)
    for target in SessionStatus:
        if target is terminal:
            continue
        with pytest.raises(InvalidTransition):
            await service.update_status(sid, target)
    assert (await fetch_session(db, sid)).status is terminal


@pytest.mark.parametrize("start", [SessionStatus.PENDING, SessionStatus.PROCESSING])
async def test_cancel_from_non_terminal(db: DatabaseManager, start: SessionStatus) -> None:
    sid = await session_in(db, start)
    row = await SessionService(db).update_status(sid, SessionStatus.CANCELLED)
    assert row.status is SessionStatus.CANCELLED
    assert (await fetch_session(db, sid)).status is SessionStatus.CANCELLED


@pytest.mark.parametrize("status", list(SessionStatus))
async def test_same_status_is_a_noop(db: DatabaseManager, status: SessionStatus) -> None:
    sid = await session_in(db, status)
    before = snapshot(await fetch_session(db, sid))
    row = await SessionService(db).update_status(sid, status)
    assert row.status is status
    assert snapshot(await fetch_session(db, sid)) == before


async def test_status_unknown_session(db: DatabaseManager) -> None:
    with pytest.raises(NotFound) as info:
        await SessionService(db).update_status(424242, SessionStatus.PROCESSING)
    assert info.value.field == "session_id"


async def test_status_unknown_value(db: DatabaseManager) -> None:
    sid = await new_session(db)
    with pytest.raises(ValidationFailed) as info:
        await SessionService(db).update_status(sid, "done")
    assert info.value.field == "status"
    assert (await fetch_session(db, sid)).status is SessionStatus.PENDING


async def test_racing_terminal_transitions_one_wins(db: DatabaseManager) -> None:
    for attempt in range(3):
        sid = await session_in(db, SessionStatus.PROCESSING, f"req-race-{attempt}")
        service = SessionService(db)
        outcomes = await asyncio.gather(
            service.update_status(sid, SessionStatus.COMPLETED),
            service.update_status(sid, SessionStatus.FAILED),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, ValidationSession)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1, outcomes
        assert isinstance(losers[0], InvalidTransition), losers
        assert (await fetch_session(db, sid)).status is winners[0].status


# ----------------------------------------------------------------- SessionService.delete


async def test_delete_cascades(db: DatabaseManager) -> None:
    doomed = await new_session(db, "req-doomed")
    kept = await new_session(db, "req-kept")
    for sid in (doomed, kept):
        await ResultService(db).record(
            sid, result_input(), [discrepancy_input(i) for i in range(3)]
        )
        await BehavioralTestService(db).record(sid, [behavioral_test_input()])
    await SessionService(db).delete(doomed)
    assert await count(db, SESSIONS, SESSIONS.c.id == doomed) == 0
    for table in (RESULTS, DISCREPANCIES, BEHAVIORAL):
        assert await count(db, table, table.c.session_id == doomed) == 0
    assert await count(db, SESSIONS) == 1
    assert await count(db, RESULTS) == 1
    assert await count(db, DISCREPANCIES) == 3
    assert await count(db, BEHAVIORAL) == 1


async def test_delete_unknown_session(db: DatabaseManager) -> None:
    await new_session(db)
    with pytest.raises(NotFound) as info:
        await SessionService(db).delete(424242)
    assert info.value.field == "session_id"
    assert await count(db, SESSIONS) == 1


# ------------------------------------------------------------------ ResultService.record


async def test_record_result_with_discrepancies(db: DatabaseManager) -> None:
    sid = await new_session(db)
    items = [
        discrepancy_input(i, severity=["CRITICAL", "WARNING", "INFO"][i % 3], confidence=0.5)
        for i in range(7)
    ]
    stored = await ResultService(db).record(
        sid, result_input(fidelity_score=0.75, result_metadata={"k": [1, 2]}), items
    )
    assert stored.id is not None
    assert stored.session_id == sid
    assert stored.fidelity_score == 0.75
    assert stored.result_metadata == {"k": [1, 2]}
    assert_utc(stored.created_at)
    async with db.read_session() as s:
        rows = list(await s.scalars(sa.select(ValidationDiscrepancy).order_by(DISCREPANCIES.c.id)))
    assert len(rows) == 7
    assert [r.description for r in rows] == [f"difference {i}" for i in range(7)]
    assert {r.result_id for r in rows} == {stored.id}
    assert {r.session_id for r in rows} == {sid}
    assert [r.severity.value for r in rows] == [i["severity"] for i in items]
    assert all(r.confidence == 0.5 and r.version == 1 and not r.is_resolved for r in rows)


async def test_record_result_without_discrepancies(db: DatabaseManager) -> None:
    sid = await new_session(db)
    stored = await ResultService(db).record(sid, result_input())
    assert stored.id is not None
    assert await count(db, RESULTS) == 1
    assert await count(db, DISCREPANCIES) == 0


async def test_record_ten_thousand_discrepancies(db: DatabaseManager) -> None:
    sid = await new_session(db)
    items = [discrepancy_input(i) for i in range(10_000)]
    stored = await ResultService(db).record(sid, result_input(), items)
    assert await count(db, DISCREPANCIES, DISCREPANCIES.c.result_id == stored.id) == 10_000
    assert await count(db, DISCREPANCIES, DISCREPANCIES.c.confidence == 1.0) == 10_000


@pytest.mark.parametrize("bad", [0, 5000, 9999])
async def test_record_bad_row_writes_nothing(db: DatabaseManager, bad: int) -> None:
    # On PostgreSQL rows are checked as COPY streams them: at 5000 and 9999, parts of
    # the COPY (512 KB each) have reached the server when the check fails.
    sid = await new_session(db)
    items = [discrepancy_input(i, description="d" * 400) for i in range(10_000)]
    items[bad] = discrepancy_input(bad, confidence=2.0)
    audited = await count(db, AUDIT)
    invalidated: list[object] = []
    engine = db.engine.sync_engine

    def on_invalidate(_dbapi: Any, _record: Any, error: object) -> None:
        invalidated.append(error)

    sa.event.listen(engine, "invalidate", on_invalidate)
    sa.event.listen(engine, "soft_invalidate", on_invalidate)
    try:
        with pytest.raises(ValidationFailed) as info:
            await ResultService(db).record(sid, result_input(), items)
    finally:
        sa.event.remove(engine, "invalidate", on_invalidate)
        sa.event.remove(engine, "soft_invalidate", on_invalidate)
    assert info.value.field == f"discrepancies[{bad}].confidence"
    assert info.value.__cause__ is None
    # A client's bad row is not a database failure: the connection is kept.
    assert invalidated == []
    assert await count(db, RESULTS) == 0
    assert await count(db, DISCREPANCIES) == 0
    assert await count(db, AUDIT) == audited
    stored = await ResultService(db).record(sid, result_input(), items[:bad])
    assert await count(db, DISCREPANCIES, DISCREPANCIES.c.result_id == stored.id) == bad


async def test_record_too_many_discrepancies(db: DatabaseManager) -> None:
    sid = await new_session(db)
    items = [discrepancy_input(i) for i in range(10_001)]
    with pytest.raises(ValidationFailed) as info:
        await ResultService(db).record(sid, result_input(), items)
    assert info.value.field == "discrepancies"
    assert await count(db, RESULTS) == 0


@pytest.mark.parametrize(
    ("result", "discrepancy", "field"),
    [
        pytest.param({"fidelity_score": 1.5}, {}, "fidelity_score", id="score-range"),
        pytest.param({"overall_status": "great"}, {}, "overall_status", id="status-enum"),
        pytest.param({"session_id": 1}, {}, "session_id", id="result-link"),
        pytest.param({}, {"severity": "MEH"}, "discrepancies[1].severity", id="severity"),
        pytest.param({}, {"result_id": 1}, "discrepancies[1].result_id", id="link"),
        pytest.param({}, {"is_resolved": True}, "discrepancies[1].is_resolved", id="resolved"),
        pytest.param({}, {"bogus": 1}, "discrepancies[1].bogus", id="unknown"),
    ],
)
async def test_record_bad_input_names_field(
    db: DatabaseManager, result: dict[str, Any], discrepancy: dict[str, Any], field: str
) -> None:
    sid = await new_session(db)
    items = [discrepancy_input(0), discrepancy_input(1, **discrepancy)]
    with pytest.raises(ValidationFailed) as info:
        await ResultService(db).record(sid, result_input(**result), items)
    assert info.value.field == field
    assert await count(db, RESULTS) == 0
    assert await count(db, DISCREPANCIES) == 0


async def test_record_unknown_session(db: DatabaseManager) -> None:
    with pytest.raises(NotFound) as info:
        await ResultService(db).record(424242, result_input(), [discrepancy_input()])
    assert info.value.field == "session_id"
    assert await count(db, RESULTS) == 0
    assert await count(db, DISCREPANCIES) == 0


async def test_database_failure_mid_bulk_insert_rolls_back(db: DatabaseManager) -> None:
    sid = await new_session(db)
    rows = [{**discrepancy_input(i), "session_id": sid} for i in range(10_000)]
    rows[5000]["confidence"] = 2.0  # bypasses service validation: the CHECK must catch it

    async def work(session: AsyncSession) -> None:
        result = await ResultRepository(session).add({**result_input(), "session_id": sid})
        assert result.id is not None
        for row in rows:
            row["result_id"] = result.id
        await DiscrepancyRepository(session).bulk_insert(rows)

    with pytest.raises(IntegrityError):
        await db.run_write(work)
    assert await count(db, RESULTS) == 0
    assert await count(db, DISCREPANCIES) == 0
    assert await count(db, SESSIONS) == 1


async def test_bulk_insert_first_in_its_transaction_is_rolled_back_with_it(
    db: DatabaseManager,
) -> None:
    """The bulk write is part of the caller's transaction even as its first statement
    (on PostgreSQL a COPY, which SQLAlchemy's adapter does not BEGIN for)."""
    sid = await new_session(db)

    async def add_result(session: AsyncSession) -> int:
        result = await ResultRepository(session).add({**result_input(), "session_id": sid})
        assert result.id is not None
        return result.id

    result_id = await db.run_write(add_result)
    rows = [{**discrepancy_input(i), "session_id": sid, "result_id": result_id} for i in range(50)]

    async def bulk_then_fail(session: AsyncSession) -> None:
        assert await DiscrepancyRepository(session).bulk_insert(rows) == 50
        visible = await session.scalar(sa.select(sa.func.count()).select_from(DISCREPANCIES))
        assert visible == 50  # written, inside the transaction
        raise RuntimeError("fail after the bulk write")

    with pytest.raises(RuntimeError, match="fail after the bulk write"):
        await db.run_write(bulk_then_fail)
    assert await count(db, DISCREPANCIES) == 0

    async def bulk(session: AsyncSession) -> int:
        return await DiscrepancyRepository(session).bulk_insert(rows)

    assert await db.run_write(bulk) == 50
    assert await count(db, DISCREPANCIES) == 50


async def test_bulk_insert_json_round_trip(db: DatabaseManager) -> None:
    sid = await new_session(db)
    contexts: list[Any] = [
        {"path": "a/b", "line": 3, "nested": {"ok": True, "list": [1, 2.5, None]}},
        [1, "two", {"three": 3}],
        None,
        {"quote": 'it\'s "quoted" \\ back', "unicode": "héllo ✓ 日本"},
        [],
        {},
        "plain string",
        42,
        {"beyond 64 bits": 2**70, "lowest int64": -(2**63)},  # orjson refuses the first
    ]
    items = [discrepancy_input(i, validation_context=c) for i, c in enumerate(contexts)]
    await ResultService(db).record(sid, result_input(), items)
    async with db.read_session() as s:
        stored = list(
            await s.scalars(
                sa.select(DISCREPANCIES.c.validation_context).order_by(DISCREPANCIES.c.id)
            )
        )
    assert stored == contexts


@pytest.mark.postgres_only
async def test_bulk_insert_json_is_jsonb_on_postgres(db: DatabaseManager) -> None:
    sid = await new_session(db)
    items = [
        discrepancy_input(0, validation_context={"kind": "dict", "n": 1}),
        discrepancy_input(1, validation_context=["list", 2]),
        discrepancy_input(2, validation_context=None),
    ]
    await ResultService(db).record(sid, result_input(), items)
    async with db.read_session() as s:
        rows = (
            await s.execute(
                sa.text(
                    "SELECT jsonb_typeof(validation_context), validation_context IS NULL, "
                    "validation_context ->> 'kind' FROM validation_discrepancies ORDER BY id"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("object", False, "dict"),
        ("array", False, None),
        (None, True, None),
    ]


# ---------------------------------------------------------- BehavioralTestService.record


async def test_behavioral_tests_in_input_order(db: DatabaseManager) -> None:
    sid = await new_session(db)
    names = ["zeta", "alpha", "mid", "beta", "omega"]
    tests = [
        behavioral_test_input(
            n,
            execution_status=list(ExecutionStatus)[i % len(ExecutionStatus)].value,
            source_result={"i": i},
            execution_duration=float(i),
        )
        for i, n in enumerate(names)
    ]
    rows = await BehavioralTestService(db).record(sid, tests)
    assert [r.scenario_name for r in rows] == names
    assert [r.source_result for r in rows] == [{"i": i} for i in range(len(names))]
    ids = [r.id for r in rows]
    assert ids == sorted(ids)
    assert all(r.session_id == sid for r in rows)
    async with db.read_session() as s:
        stored = list(await s.scalars(sa.select(BehavioralTestResult).order_by(BEHAVIORAL.c.id)))
    assert [r.scenario_name for r in stored] == names


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        pytest.param({"execution_status": "maybe"}, "tests[2].execution_status", id="enum"),
        pytest.param({"source_load_time": -1.0}, "tests[2].source_load_time", id="negative"),
        pytest.param({"source_url": "u" * 1001}, "tests[2].source_url", id="too-long"),
        pytest.param({"session_id": 1}, "tests[2].session_id", id="server-set"),
        pytest.param({"scenario_name": None}, "tests[2].scenario_name", id="null"),
    ],
)
async def test_behavioral_tests_all_or_nothing(
    db: DatabaseManager, bad: dict[str, Any], field: str
) -> None:
    sid = await new_session(db)
    tests = [behavioral_test_input(f"t{i}") for i in range(4)]
    tests[2] = {**tests[2], **bad}
    with pytest.raises(ValidationFailed) as info:
        await BehavioralTestService(db).record(sid, tests)
    assert info.value.field == field
    assert await count(db, BEHAVIORAL) == 0


async def test_behavioral_tests_missing_field(db: DatabaseManager) -> None:
    sid = await new_session(db)
    tests = [behavioral_test_input("a"), behavioral_test_input("b")]
    del tests[1]["target_url"]
    with pytest.raises(ValidationFailed) as info:
        await BehavioralTestService(db).record(sid, tests)
    assert info.value.field == "tests[1].target_url"
    assert await count(db, BEHAVIORAL) == 0


async def test_behavioral_tests_unknown_session_and_empty(db: DatabaseManager) -> None:
    with pytest.raises(NotFound) as info:
        await BehavioralTestService(db).record(424242, [behavioral_test_input()])
    assert info.value.field == "session_id"
    sid = await new_session(db)
    with pytest.raises(ValidationFailed) as empty:
        await BehavioralTestService(db).record(sid, [])
    assert empty.value.field == "tests"
    assert await count(db, BEHAVIORAL) == 0


# ------------------------------------------------------------------- DiscrepancyService


async def test_resolve_and_reopen(db: DatabaseManager) -> None:
    _, (did,) = await discrepancies_of(db, 1)
    service = DiscrepancyService(db)
    resolved = await service.resolve(did, "alice", "false positive", expected_version=1)
    assert resolved.is_resolved is True
    assert resolved.resolved_by == "alice"
    assert resolved.resolution_notes == "false positive"
    assert resolved.version == 2
    assert_recent(resolved.resolved_at)
    stored = await fetch_discrepancy(db, did)
    assert stored.is_resolved is True
    assert stored.resolved_by == "alice"
    assert stored.resolution_notes == "false positive"
    assert stored.version == 2
    assert_recent(stored.resolved_at)

    reopened = await service.reopen(did, "bob", "still broken", expected_version=2)
    assert reopened.is_resolved is False
    assert reopened.resolved_by is None
    assert reopened.resolved_at is None
    assert reopened.version == 3
    assert reopened.resolution_notes is not None
    assert "bob" in reopened.resolution_notes
    assert "still broken" in reopened.resolution_notes
    stored = await fetch_discrepancy(db, did)
    assert (stored.is_resolved, stored.resolved_by, stored.resolved_at, stored.version) == (
        False,
        None,
        None,
        3,
    )


async def test_resolve_without_expected_version(db: DatabaseManager) -> None:
    _, (did,) = await discrepancies_of(db, 1)
    first = await DiscrepancyService(db).resolve(did, "alice")
    assert (first.version, first.resolution_notes) == (2, None)
    second = await DiscrepancyService(db).resolve(did, "carol")
    assert (second.version, second.resolved_by) == (3, "carol")


async def test_concurrent_resolves_one_wins(db: DatabaseManager) -> None:
    _, ids = await discrepancies_of(db, 3)
    service = DiscrepancyService(db)
    for did in ids:
        outcomes = await asyncio.gather(
            service.resolve(did, "alice", expected_version=1),
            service.resolve(did, "bob", expected_version=1),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, ValidationDiscrepancy)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1, outcomes
        assert isinstance(losers[0], StaleVersion), losers
        assert losers[0].field == "expected_version"
        stored = await fetch_discrepancy(db, did)
        assert stored.version == 2
        assert stored.resolved_by == winners[0].resolved_by


async def test_stale_version_changes_nothing(db: DatabaseManager) -> None:
    _, (did,) = await discrepancies_of(db, 1)
    before = snapshot(await fetch_discrepancy(db, did))
    service = DiscrepancyService(db)
    with pytest.raises(StaleVersion) as info:
        await service.resolve(did, "alice", "note", expected_version=2)
    assert isinstance(info.value, Conflict)
    assert info.value.field == "expected_version"
    with pytest.raises(StaleVersion):
        await service.reopen(did, "alice", expected_version=7)
    assert snapshot(await fetch_discrepancy(db, did)) == before


async def test_resolve_unknown_id(db: DatabaseManager) -> None:
    service = DiscrepancyService(db)
    with pytest.raises(NotFound) as info:
        await service.resolve(424242, "alice")
    assert info.value.field == "id"
    with pytest.raises(NotFound):
        await service.resolve(424242, "alice", expected_version=1)
    with pytest.raises(NotFound):
        await service.reopen(424242, "alice")


@pytest.mark.parametrize(
    ("who", "notes", "version", "field"),
    [
        pytest.param("", None, None, "resolved_by", id="empty"),
        pytest.param("   ", None, None, "resolved_by", id="blank"),
        pytest.param("x" * 256, None, None, "resolved_by", id="too-long"),
        pytest.param("alice", "bad\x00note", None, "notes", id="nul-notes"),
        pytest.param("alice", None, 0, "expected_version", id="version-zero"),
    ],
)
async def test_resolve_bad_input(
    db: DatabaseManager, who: str, notes: str | None, version: int | None, field: str
) -> None:
    _, (did,) = await discrepancies_of(db, 1)
    before = snapshot(await fetch_discrepancy(db, did))
    with pytest.raises(ValidationFailed) as info:
        await DiscrepancyService(db).resolve(did, who, notes, expected_version=version)
    assert info.value.field == field
    assert snapshot(await fetch_discrepancy(db, did)) == before


async def test_resolve_many(db: DatabaseManager) -> None:
    _, ids = await discrepancies_of(db, 5)
    service = DiscrepancyService(db)
    earlier = await service.resolve(ids[1], "alice", "done earlier")
    rows = await service.resolve_many(ids, "bob", "bulk")
    assert sorted(r.id for r in rows if r.id is not None) == ids
    by_id = {r.id: r for r in rows}
    for did in ids:
        stored = await fetch_discrepancy(db, did)
        assert stored.is_resolved is True
        assert_recent(stored.resolved_at)
        assert by_id[did].is_resolved is True
        if did == ids[1]:
            assert (stored.resolved_by, stored.resolution_notes) == ("alice", "done earlier")
            assert stored.version == earlier.version == 2
            assert stored.resolved_at == earlier.resolved_at
            assert by_id[did].resolved_by == "alice"
        else:
            assert (stored.resolved_by, stored.resolution_notes) == ("bob", "bulk")
            assert stored.version == 2


async def test_resolve_many_unknown_id_fails_batch(db: DatabaseManager) -> None:
    _, ids = await discrepancies_of(db, 3)
    before = [snapshot(await fetch_discrepancy(db, did)) for did in ids]
    with pytest.raises(NotFound) as info:
        await DiscrepancyService(db).resolve_many([ids[0], ids[1], 424242, ids[2]], "bob")
    assert info.value.field == "ids[2]"
    assert [snapshot(await fetch_discrepancy(db, did)) for did in ids] == before


async def test_resolve_many_unknown_id_index_counts_duplicates(db: DatabaseManager) -> None:
    """The field names the position in the caller's list, duplicates included."""
    _, ids = await discrepancies_of(db, 1)
    with pytest.raises(NotFound) as info:
        await DiscrepancyService(db).resolve_many([ids[0], ids[0], 424242], "bob")
    assert info.value.field == "ids[2]"
    assert (await fetch_discrepancy(db, ids[0])).is_resolved is False


async def test_resolve_many_bad_input(db: DatabaseManager) -> None:
    _, ids = await discrepancies_of(db, 1)
    service = DiscrepancyService(db)
    with pytest.raises(ValidationFailed) as empty:
        await service.resolve_many([], "bob")
    assert empty.value.field == "ids"
    with pytest.raises(ValidationFailed) as who:
        await service.resolve_many(ids, " ")
    assert who.value.field == "resolved_by"
    with pytest.raises(ValidationFailed) as many:
        await service.resolve_many(list(range(1, 1002)), "bob")
    assert many.value.field == "ids"
    assert (await fetch_discrepancy(db, ids[0])).is_resolved is False


async def test_resolve_many_duplicates_resolve_once(db: DatabaseManager) -> None:
    _, ids = await discrepancies_of(db, 2)
    rows = await DiscrepancyService(db).resolve_many([ids[0], ids[1], ids[0]], "bob")
    assert [r.id for r in rows] == ids
    for did in ids:
        assert (await fetch_discrepancy(db, did)).version == 2


async def test_result_delete_keeps_discrepancies(db: DatabaseManager) -> None:
    """ON DELETE SET NULL: discrepancies outlive their result but keep the session."""
    sid = await new_session(db)
    stored = await ResultService(db).record(sid, result_input(), [discrepancy_input()])

    async def work(session: AsyncSession) -> None:
        await session.execute(sa.delete(ValidationResult).where(RESULTS.c.id == stored.id))

    await db.run_write(work)
    async with db.read_session() as s:
        row = (await s.scalars(sa.select(ValidationDiscrepancy))).one()
    assert (row.result_id, row.session_id) == (None, sid)


def test_bulk_columns_need_no_server_default() -> None:
    """A bulk write sends every bulk column (NULL when not given), so none may rely on
    a server default unless the repository supplies the value itself."""
    for name in BULK_COLUMNS:
        column = DISCREPANCIES.c[name]
        assert column.server_default is None or name in BULK_DEFAULTS, name
