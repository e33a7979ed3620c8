"""The database itself refuses bad rows, cascades deletes and keeps timestamps.

Bad values go in as raw SQL or Core inserts, past every Python-side check, so what is
tested is the schema the migrations built.
"""

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.enums import (
    InputType,
    SessionStatus,
    TechnologyType,
    ValidationScope,
)
from persistence.models import (
    ValidationDiscrepancy,
    ValidationMetric,
    ValidationResult,
    ValidationSession,
    metadata,
)

SESSIONS = metadata.tables["validation_sessions"]
RESULTS = metadata.tables["validation_results"]
DISCREPANCIES = metadata.tables["validation_discrepancies"]
BEHAVIORAL = metadata.tables["behavioral_test_results"]
METRICS = metadata.tables["validation_metrics"]
# The validation data model. Tables added later (api_tokens, audit_log, ...) get their
# own tests; the generated cases below only cover these five.
DATA_MODEL = (
    "validation_sessions",
    "validation_results",
    "validation_discrepancies",
    "behavioral_test_results",
    "validation_metrics",
)
TABLES = {name: metadata.tables[name] for name in DATA_MODEL}


# ------------------------------------------------------------------------- helpers


def valid_literals(table: str, session_id: int | None = None) -> dict[str, str]:
    """SQL literals of a minimal valid row (columns with server defaults left out)."""
    sid = str(session_id if session_id is not None else 0)
    return {
        "validation_sessions": {
            "request_id": "'raw-request'",
            "source_technology": "'PYTHON_FLASK'",
            "target_technology": "'JAVA_SPRING'",
            "validation_scope": "'FULL_SYSTEM'",
            "source_input_type": "'CODE_FILES'",
            "target_input_type": "'CODE_FILES'",
        },
        "validation_results": {
            "session_id": sid,
            "overall_status": "'approved'",
            "fidelity_score": "0.5",
            "summary": "'fine'",
        },
        "validation_discrepancies": {
            "session_id": sid,
            "discrepancy_type": "'layout'",
            "severity": "'INFO'",
            "description": "'a button moved'",
        },
        "behavioral_test_results": {
            "session_id": sid,
            "scenario_name": "'login'",
            "source_url": "'http://source'",
            "target_url": "'http://target'",
            "execution_status": "'passed'",
        },
        "validation_metrics": {
            "metric_date": "'2026-01-01 00:00:00'",
            "metric_period": "'daily'",
        },
    }[table]


def raw_insert_sql(table: str, literals: dict[str, str]) -> str:
    return f"INSERT INTO {table} ({', '.join(literals)}) VALUES ({', '.join(literals.values())})"


async def execute_write(db: DatabaseManager, sql: str, **params: Any) -> sa.CursorResult[Any]:
    async with db.write_session() as session:
        result: sa.CursorResult[Any] = await session.execute(sa.text(sql), params)  # type: ignore[assignment]
        return result


async def core_write(db: DatabaseManager, statement: sa.Executable) -> Any:
    """Execute one Core statement in a write transaction; return the first scalar."""
    async with db.write_session() as session:
        result = await session.execute(statement)
        return result.scalar() if result.returns_rows else None


async def scalar(db: DatabaseManager, statement: sa.Executable | str, **params: Any) -> Any:
    async with db.read_session() as session:
        stmt = sa.text(statement) if isinstance(statement, str) else statement
        return (await session.execute(stmt, params)).scalar()


def session_values(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "request_id": "req-1",
        "source_technology": TechnologyType.PYTHON_DJANGO,
        "target_technology": TechnologyType.TYPESCRIPT_REACT,
        "validation_scope": ValidationScope.BACKEND_FUNCTIONALITY,
        "source_input_type": InputType.CODE_FILES,
        "target_input_type": InputType.HYBRID,
    }
    return values | overrides


def child_values(table: str, session_id: int, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "validation_results": {
            "session_id": session_id,
            "overall_status": "approved",
            "fidelity_score": 0.75,
            "summary": "ok",
        },
        "validation_discrepancies": {
            "session_id": session_id,
            "discrepancy_type": "layout",
            "severity": "WARNING",
            "description": "moved",
        },
        "behavioral_test_results": {
            "session_id": session_id,
            "scenario_name": "login",
            "source_url": "http://s",
            "target_url": "http://t",
            "execution_status": "passed",
        },
        "validation_metrics": {
            "metric_date": datetime(2026, 3, 1, tzinfo=UTC),
            "metric_period": "daily",
        },
    }[table]
    return values | overrides


async def insert_row(db: DatabaseManager, table: str, **values: Any) -> int:
    row_id: int = await core_write(
        db, sa.insert(TABLES[table]).values(**values).returning(TABLES[table].c.id)
    )
    return row_id


async def insert_session(db: DatabaseManager, **overrides: Any) -> int:
    return await insert_row(db, "validation_sessions", **session_values(**overrides))


async def count(db: DatabaseManager, table: str, where: str = "1 = 1", **params: Any) -> int:
    return int(await scalar(db, f"SELECT COUNT(*) FROM {table} WHERE {where}", **params))


# ------------------------------------------------------------- rejected bad values


@pytest.mark.parametrize("table", list(TABLES))
async def test_valid_raw_row_is_accepted(db: DatabaseManager, table: str) -> None:
    """The baseline the rejection tests below break one column of."""
    session_id = await insert_session(db)
    await execute_write(db, raw_insert_sql(table, valid_literals(table, session_id)))
    assert await count(db, table) == (2 if table == "validation_sessions" else 1)


CHECK_CASES = [
    ("validation_results", "fidelity_score", "-0.1", "ck_validation_results_fidelity_score_range"),
    ("validation_results", "fidelity_score", "1.1", "ck_validation_results_fidelity_score_range"),
    (
        "validation_results",
        "execution_time",
        "-1",
        "ck_validation_results_execution_time_non_negative",
    ),
    (
        "validation_results",
        "overall_status",
        "'bogus'",
        "ck_validation_results_overall_status_valid",
    ),
    ("validation_results", "result_type", "'visual'", "ck_validation_results_result_type_valid"),
    (
        "validation_discrepancies",
        "confidence",
        "-0.01",
        "ck_validation_discrepancies_confidence_range",
    ),
    (
        "validation_discrepancies",
        "confidence",
        "1.01",
        "ck_validation_discrepancies_confidence_range",
    ),
    ("validation_discrepancies", "version", "0", "ck_validation_discrepancies_version_positive"),
    ("validation_sessions", "status", "'bogus'", "ck_validation_sessions_status_valid"),
    ("validation_sessions", "status", "'PENDING'", "ck_validation_sessions_status_valid"),
    (
        "validation_sessions",
        "behavioral_timeout",
        "0",
        "ck_validation_sessions_behavioral_timeout_positive",
    ),
    (
        "validation_sessions",
        "execution_time",
        "-0.5",
        "ck_validation_sessions_execution_time_non_negative",
    ),
    (
        "behavioral_test_results",
        "execution_status",
        "'crashed'",
        "ck_behavioral_test_results_execution_status_valid",
    ),
    (
        "behavioral_test_results",
        "source_load_time",
        "-1",
        "ck_behavioral_test_results_durations_non_negative",
    ),
    (
        "behavioral_test_results",
        "execution_duration",
        "-1",
        "ck_behavioral_test_results_durations_non_negative",
    ),
    (
        "validation_metrics",
        "metric_period",
        "'yearly'",
        "ck_validation_metrics_metric_period_valid",
    ),
]


@pytest.mark.parametrize(
    ("table", "column", "literal", "constraint"),
    CHECK_CASES,
    ids=[f"{t}.{c}={v}" for t, c, v, _ in CHECK_CASES],
)
async def test_check_constraint_rejects(
    db: DatabaseManager, table: str, column: str, literal: str, constraint: str
) -> None:
    session_id = await insert_session(db)
    literals = valid_literals(table, session_id) | {column: literal}
    with pytest.raises(IntegrityError) as info:
        await execute_write(db, raw_insert_sql(table, literals))
    await assert_check_violation(db, info.value, table, column, constraint)
    assert await count(db, table) == (1 if table == "validation_sessions" else 0)


async def assert_check_violation(
    db: DatabaseManager, error: DBAPIError, table: str, column: str, constraint: str
) -> None:
    """The error is a CHECK violation of a constraint on ``table`` that tests ``column``.

    (Exact constraint names are checked against the models in test_migrations.)"""
    if db.dialect == "sqlite":
        assert "CHECK constraint failed" in str(error.orig)
        assert constraint in str(error.orig)
        return
    assert getattr(error.orig, "sqlstate", None) == "23514"  # check_violation
    name = error.orig.__cause__.constraint_name  # type: ignore[union-attr]
    definition = await scalar(
        db,
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "WHERE c.conname = :name AND c.conrelid = CAST(:table AS regclass)",
        name=name,
        table=table,
    )
    assert definition is not None
    assert column in definition


ENUM_CASES = [
    ("validation_sessions", "source_technology", "COBOL", "technology_type"),
    ("validation_sessions", "target_technology", "python_flask", "technology_type"),
    ("validation_sessions", "validation_scope", "EVERYTHING", "validation_scope"),
    ("validation_sessions", "source_input_type", "VIDEO", "input_type"),
    ("validation_sessions", "target_input_type", "", "input_type"),
    ("validation_discrepancies", "severity", "HUGE", "severity_level"),
]


@pytest.mark.parametrize(
    ("table", "column", "value", "enum_type"),
    ENUM_CASES,
    ids=[f"{t}.{c}={v or 'empty'}" for t, c, v, _ in ENUM_CASES],
)
async def test_native_enum_columns_reject_unknown_values(
    backend: str, db: DatabaseManager, table: str, column: str, value: str, enum_type: str
) -> None:
    session_id = await insert_session(db)
    literals = valid_literals(table, session_id) | {column: f"'{value}'"}
    with pytest.raises(DBAPIError) as info:
        await execute_write(db, raw_insert_sql(table, literals))
    message = str(info.value.orig)
    if backend == "postgresql":  # native enum type: invalid input value for enum ...
        assert f"invalid input value for enum {enum_type}" in message
    else:  # VARCHAR guarded by a CHECK
        assert isinstance(info.value, IntegrityError)
        assert f"ck_{table}_{column}_valid" in message
    assert await count(db, table) == (1 if table == "validation_sessions" else 0)


async def test_duplicate_request_id_is_rejected(db: DatabaseManager) -> None:
    await insert_session(db, request_id="dup")
    with pytest.raises(IntegrityError):
        await insert_session(db, request_id="dup")
    await insert_session(db, request_id="DUP")  # case matters: a different request
    assert await count(db, "validation_sessions") == 2


async def test_duplicate_metric_date_and_period_is_rejected(db: DatabaseManager) -> None:
    day = datetime(2026, 2, 2, tzinfo=UTC)
    await insert_row(db, "validation_metrics", metric_date=day, metric_period="daily")
    with pytest.raises(IntegrityError):
        await insert_row(db, "validation_metrics", metric_date=day, metric_period="daily")
    # The same instant in another zone is the same UTC date.
    same_instant = day.astimezone(timezone(timedelta(hours=2)))
    with pytest.raises(IntegrityError):
        await insert_row(db, "validation_metrics", metric_date=same_instant, metric_period="daily")
    await insert_row(db, "validation_metrics", metric_date=day, metric_period="weekly")
    await insert_row(
        db, "validation_metrics", metric_date=day + timedelta(days=1), metric_period="daily"
    )
    assert await count(db, "validation_metrics") == 3


ORPHAN_CASES = [
    ("validation_results", "session_id"),
    ("validation_discrepancies", "session_id"),
    ("validation_discrepancies", "result_id"),
    ("behavioral_test_results", "session_id"),
]


@pytest.mark.parametrize(
    ("table", "column"), ORPHAN_CASES, ids=[f"{t}.{c}" for t, c in ORPHAN_CASES]
)
async def test_orphan_foreign_key_is_rejected(db: DatabaseManager, table: str, column: str) -> None:
    session_id = await insert_session(db)
    values = child_values(table, session_id) | {column: 999_999}
    with pytest.raises(IntegrityError) as info:
        await insert_row(db, table, **values)
    assert "foreign key" in str(info.value.orig).lower()
    assert await count(db, table) == 0


NOT_NULL_CASES = [
    (table.name, column.name)
    for table in TABLES.values()
    for column in table.columns
    if not column.nullable and not column.primary_key
]


@pytest.mark.parametrize(
    ("table", "column"), NOT_NULL_CASES, ids=[f"{t}.{c}" for t, c in NOT_NULL_CASES]
)
async def test_not_null_columns_reject_null(db: DatabaseManager, table: str, column: str) -> None:
    parent = await insert_session(db, request_id="parent")
    if table == "validation_sessions":
        values = session_values(request_id="child")
    else:
        values = child_values(table, parent)
    with pytest.raises(IntegrityError) as info:
        await insert_row(db, table, **(values | {column: None}))
    assert column in str(info.value.orig)
    assert await count(db, table) == (1 if table == "validation_sessions" else 0)


def test_not_null_cases_cover_the_data_model() -> None:
    """Guards the generated list above against an accidentally empty metadata."""
    assert ("validation_sessions", "request_id") in NOT_NULL_CASES
    assert ("validation_results", "fidelity_score") in NOT_NULL_CASES
    assert ("validation_discrepancies", "severity") in NOT_NULL_CASES
    assert ("validation_metrics", "metric_period") in NOT_NULL_CASES
    assert len(NOT_NULL_CASES) > 40


# ------------------------------------------------------------------------ cascades


async def _session_with_children(db: DatabaseManager, request_id: str) -> tuple[int, int]:
    session_id = await insert_session(db, request_id=request_id)
    result_id = await insert_row(
        db, "validation_results", **child_values("validation_results", session_id)
    )
    await insert_row(
        db,
        "validation_discrepancies",
        **child_values("validation_discrepancies", session_id, result_id=result_id),
    )
    await insert_row(
        db, "validation_discrepancies", **child_values("validation_discrepancies", session_id)
    )
    await insert_row(
        db, "behavioral_test_results", **child_values("behavioral_test_results", session_id)
    )
    return session_id, result_id


async def _children(db: DatabaseManager, session_id: int) -> dict[str, int]:
    return {
        table: await count(db, table, "session_id = :sid", sid=session_id)
        for table in ("validation_results", "validation_discrepancies", "behavioral_test_results")
    }


async def test_deleting_a_session_deletes_its_children(db: DatabaseManager) -> None:
    doomed, _ = await _session_with_children(db, "doomed")
    kept, _ = await _session_with_children(db, "kept")
    full = {"validation_results": 1, "validation_discrepancies": 2, "behavioral_test_results": 1}
    assert await _children(db, doomed) == full

    await execute_write(db, "DELETE FROM validation_sessions WHERE id = :id", id=doomed)

    assert await _children(db, doomed) == dict.fromkeys(full, 0)
    assert await _children(db, kept) == full


async def test_orm_delete_of_a_session_relies_on_database_cascade(db: DatabaseManager) -> None:
    doomed, _ = await _session_with_children(db, "doomed")

    async def delete(session: AsyncSession) -> None:
        row = await session.get(ValidationSession, doomed)
        assert row is not None
        await session.delete(row)  # relationships are lazy="raise": nothing is loaded

    await db.run_write(delete)
    assert await count(db, "validation_sessions") == 0
    assert await _children(db, doomed) == {
        "validation_results": 0,
        "validation_discrepancies": 0,
        "behavioral_test_results": 0,
    }


async def test_deleting_a_result_orphans_its_discrepancies(db: DatabaseManager) -> None:
    session_id, result_id = await _session_with_children(db, "s")
    other_result = await insert_row(
        db, "validation_results", **child_values("validation_results", session_id)
    )
    other_discrepancy = await insert_row(
        db,
        "validation_discrepancies",
        **child_values("validation_discrepancies", session_id, result_id=other_result),
    )

    await execute_write(db, "DELETE FROM validation_results WHERE id = :id", id=result_id)

    assert await count(db, "validation_discrepancies", "session_id = :s", s=session_id) == 3
    assert await count(db, "validation_discrepancies", "result_id IS NULL") == 2
    assert (
        await scalar(
            db,
            "SELECT result_id FROM validation_discrepancies WHERE id = :id",
            id=other_discrepancy,
        )
        == other_result
    )


async def test_orm_delete_of_a_result_orphans_its_discrepancies(db: DatabaseManager) -> None:
    session_id, result_id = await _session_with_children(db, "s")

    async def delete(session: AsyncSession) -> None:
        row = await session.get(ValidationResult, result_id)
        assert row is not None
        await session.delete(row)

    await db.run_write(delete)
    assert await count(db, "validation_discrepancies", "session_id = :s", s=session_id) == 2
    assert await count(db, "validation_discrepancies", "result_id IS NOT NULL") == 0


# ---------------------------------------------------------- timestamps and defaults


def assert_utc_now(value: Any) -> None:
    assert isinstance(value, datetime)
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - value) < timedelta(minutes=2)


async def test_orm_reads_timestamps_as_aware_utc(db: DatabaseManager) -> None:
    async def add(session: AsyncSession) -> int:
        row = ValidationSession(**session_values())
        session.add(row)
        await session.flush()
        assert row.id is not None
        session.add(ValidationDiscrepancy(**child_values("validation_discrepancies", row.id)))
        session.add(ValidationMetric(**child_values("validation_metrics", row.id)))
        return row.id

    session_id = await db.run_write(add)
    async with db.read_session() as session:
        row = await session.get(ValidationSession, session_id)
        discrepancy = (await session.execute(sa.select(ValidationDiscrepancy))).scalar_one()
        metric = (await session.execute(sa.select(ValidationMetric))).scalar_one()
    assert row is not None
    for value in (row.created_at, row.updated_at, discrepancy.created_at, metric.updated_at):
        assert_utc_now(value)
    assert row.created_at == row.updated_at
    # Stored instants come back as the same UTC instant.
    assert metric.metric_date == datetime(2026, 3, 1, tzinfo=UTC)
    assert metric.metric_date.utcoffset() == timedelta(0)


UPDATE_CASES = {
    "validation_sessions": "status = 'processing'",
    "validation_results": "summary = 'changed'",
    "validation_discrepancies": "description = 'changed'",
    "behavioral_test_results": "scenario_name = 'changed'",
    "validation_metrics": "total_sessions = 5",
}


async def _timestamps(db: DatabaseManager, table: str, row_id: int) -> tuple[datetime, datetime]:
    t = TABLES[table]
    async with db.read_session() as session:
        row = (
            await session.execute(sa.select(t.c.created_at, t.c.updated_at).where(t.c.id == row_id))
        ).one()
    return row.created_at, row.updated_at


@pytest.mark.parametrize("table", list(UPDATE_CASES))
async def test_raw_update_advances_updated_at(db: DatabaseManager, table: str) -> None:
    session_id = await insert_session(db)
    if table == "validation_sessions":
        row_id = session_id
    else:
        row_id = await insert_row(db, table, **child_values(table, session_id))
    created, updated = await _timestamps(db, table, row_id)
    assert created == updated
    await asyncio.sleep(0.02)  # SQLite's clock has millisecond resolution

    await execute_write(db, f"UPDATE {table} SET {UPDATE_CASES[table]} WHERE id = :id", id=row_id)

    created_after, updated_after = await _timestamps(db, table, row_id)
    assert created_after == created
    assert updated_after > updated
    assert_utc_now(updated_after)


async def test_orm_update_advances_updated_at(db: DatabaseManager) -> None:
    session_id = await insert_session(db)
    created, updated = await _timestamps(db, "validation_sessions", session_id)
    await asyncio.sleep(0.02)

    async def change(session: AsyncSession) -> None:
        row = await session.get(ValidationSession, session_id)
        assert row is not None
        row.status = SessionStatus.PROCESSING

    await db.run_write(change)
    created_after, updated_after = await _timestamps(db, "validation_sessions", session_id)
    assert created_after == created
    assert updated_after > updated


async def test_server_defaults(db: DatabaseManager) -> None:
    session_id = await insert_session(db)  # status and behavioral_timeout left out
    for table in ("validation_results", "validation_discrepancies", "validation_metrics"):
        await execute_write(db, raw_insert_sql(table, valid_literals(table, session_id)))

    async with db.read_session() as session:
        row = await session.get(ValidationSession, session_id)
        discrepancy = (await session.execute(sa.select(ValidationDiscrepancy))).scalar_one()
        result = (await session.execute(sa.select(ValidationResult))).scalar_one()
        metric = (await session.execute(sa.select(ValidationMetric))).scalar_one()
    assert row is not None
    assert row.status is SessionStatus.PENDING
    assert row.behavioral_timeout == 300
    assert discrepancy.version == 1
    assert discrepancy.is_resolved is False
    assert discrepancy.confidence == 1.0
    assert discrepancy.result_id is None
    assert result.result_type == "static"
    counts = [
        metric.total_sessions,
        metric.completed_sessions,
        metric.failed_sessions,
        metric.approved_count,
        metric.rejected_count,
        metric.total_discrepancies,
        metric.critical_discrepancies,
        metric.warning_discrepancies,
        metric.info_discrepancies,
    ]
    assert counts == [0] * len(counts)
    assert (
        await scalar(
            db, "SELECT COUNT(*) FROM validation_discrepancies WHERE is_resolved = :f", f=False
        )
        == 1
    )
