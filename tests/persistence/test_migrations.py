"""Migrations are the only way the schema is built: up, down, up again, and no drift.

Every test here works on its own scratch database (``empty_database_url``), never on
the shared one.
"""

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from persistence.enums import InputType, SeverityLevel, TechnologyType, ValidationScope
from persistence.models import (
    BehavioralTestResult,
    ValidationDiscrepancy,
    ValidationMetric,
    ValidationResult,
    ValidationSession,
    metadata,
)
from persistence.schema_version import alembic_config, head_revision
from tests.conftest import PROJECT_ROOT, AlembicRun, DbFactory

T = TypeVar("T")

MODEL_TABLES = {t.name for t in metadata.sorted_tables}
NATIVE_ENUMS = {
    "technology_type": TechnologyType,
    "validation_scope": ValidationScope,
    "input_type": InputType,
    "severity_level": SeverityLevel,
}


async def inspect_db(url: str, fn: Callable[[sa.Connection], T]) -> T:
    """Run a synchronous inspection function on a throwaway connection."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _rows(sql: str, **params: Any) -> Callable[[sa.Connection], list[tuple[Any, ...]]]:
    def run(conn: sa.Connection) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in conn.execute(sa.text(sql), params)]

    return run


def _table_names(conn: sa.Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _expected_indexes(dialect: str) -> dict[str, sa.Index]:
    """Indexes the models declare for ``dialect`` (``ddl_if`` respected)."""
    expected = {}
    for table in metadata.sorted_tables:
        for index in table.indexes:
            ddl_if = getattr(index, "_ddl_if", None)
            if ddl_if is not None and ddl_if.dialect not in (None, dialect):
                continue
            assert index.name is not None
            expected[index.name] = index
    return expected


async def _leftovers(backend: str, url: str) -> list[tuple[Any, ...]]:
    """Every schema object that does not belong to alembic_version."""
    if backend == "sqlite":
        return await inspect_db(
            url,
            _rows("SELECT type, name FROM sqlite_master WHERE tbl_name <> 'alembic_version'"),
        )
    return await inspect_db(
        url,
        _rows(
            "SELECT 'relation', c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relname NOT IN "
            "('alembic_version', 'alembic_version_pkc') "
            "UNION ALL SELECT 'type', t.typname FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype = 'e' "
            "UNION ALL SELECT 'function', p.proname FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
            "UNION ALL SELECT 'trigger', tg.tgname FROM pg_trigger tg WHERE NOT tg.tgisinternal "
            "UNION ALL SELECT 'type', typname FROM pg_type WHERE typname IN "
            "('technology_type', 'validation_scope', 'input_type', 'severity_level') "
            "UNION ALL SELECT 'function', proname FROM pg_proc "
            "WHERE proname = 'migval_set_updated_at'"
        ),
    )


@pytest.fixture
async def migrated_url(empty_database_url: str, alembic_run: AlembicRun) -> str:
    """A scratch database at head."""
    await alembic_run("upgrade", empty_database_url, "head")
    return empty_database_url


async def test_upgrade_downgrade_upgrade_round_trip(
    backend: str, empty_database_url: str, alembic_run: AlembicRun
) -> None:
    url = empty_database_url

    await alembic_run("upgrade", url, "head")
    assert await inspect_db(url, _table_names) == MODEL_TABLES | {"alembic_version"}

    await alembic_run("downgrade", url, "base")
    assert await inspect_db(url, _table_names) == {"alembic_version"}
    assert await _leftovers(backend, url) == []
    assert await inspect_db(url, _rows("SELECT version_num FROM alembic_version")) == []

    await alembic_run("upgrade", url, "head")
    assert await inspect_db(url, _table_names) == MODEL_TABLES | {"alembic_version"}
    assert await inspect_db(url, _rows("SELECT version_num FROM alembic_version")) == [
        (head_revision(),)
    ]


async def _schema_snapshot(backend: str, url: str) -> list[tuple[Any, ...]]:
    """Every schema object of ours, with its definition where the catalog has one."""
    if backend == "sqlite":
        return sorted(
            await inspect_db(
                url,
                _rows(
                    "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master "
                    "WHERE tbl_name <> 'alembic_version'"
                ),
            )
        )
    return sorted(
        await inspect_db(
            url,
            _rows(
                "SELECT 'relation', c.relname, c.relkind::text FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%' "
                "UNION ALL SELECT 'column', table_name || '.' || column_name, "
                "data_type || ':' || udt_name || ':' || is_nullable || ':' "
                "|| COALESCE(column_default, '') FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name <> 'alembic_version' "
                "UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
                "AND conname <> 'alembic_version_pkc' "
                "UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version' "
                "UNION ALL SELECT 'enum', t.typname, string_agg(e.enumlabel, ',' "
                "ORDER BY e.enumsortorder) FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
                "GROUP BY t.typname "
                "UNION ALL SELECT 'function', p.proname, pg_get_functiondef(p.oid) FROM pg_proc p "
                "WHERE p.pronamespace = 'public'::regnamespace "
                "UNION ALL SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE NOT tgisinternal"
            ),
        )
    )


async def test_each_revision_downgrades_to_exactly_the_previous_schema(
    backend: str, empty_database_url: str, alembic_run: AlembicRun
) -> None:
    """Stairway: for every revision, upgrade, downgrade one step (the schema must be
    what it was before, object for object), and upgrade again."""
    url = empty_database_url
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(reversed(list(script.walk_revisions())))
    assert revisions[-1].revision == head_revision()
    for revision in revisions:
        before = await _schema_snapshot(backend, url)
        await alembic_run("upgrade", url, revision.revision)
        after = await _schema_snapshot(backend, url)
        assert after != before, f"{revision.revision} changed nothing"
        await alembic_run("downgrade", url, str(revision.down_revision or "base"))
        assert await _schema_snapshot(backend, url) == before, revision.revision
        await alembic_run("upgrade", url, revision.revision)
        assert await _schema_snapshot(backend, url) == after, revision.revision
    assert await inspect_db(url, _table_names) == MODEL_TABLES | {"alembic_version"}


async def test_downgrade_with_data_present_then_upgrade_again(
    backend: str, empty_database_url: str, alembic_run: AlembicRun, db_factory: DbFactory
) -> None:
    url = empty_database_url
    await alembic_run("upgrade", url, "head")

    manager = db_factory(url)
    try:

        async def fill(session: Any) -> None:
            row = ValidationSession(
                request_id="before-downgrade",
                source_technology=TechnologyType.PYTHON_FLASK,
                target_technology=TechnologyType.JAVA_SPRING,
                validation_scope=ValidationScope.FULL_SYSTEM,
                source_input_type=InputType.CODE_FILES,
                target_input_type=InputType.HYBRID,
                validation_scenarios=[{"name": "login"}],
                session_metadata={"type": "nightly"},
            )
            session.add(row)
            await session.flush()
            assert row.id is not None
            result = ValidationResult(
                session_id=row.id, overall_status="approved", fidelity_score=0.9, summary="ok"
            )
            session.add(result)
            await session.flush()
            session.add(
                ValidationDiscrepancy(
                    session_id=row.id,
                    result_id=result.id,
                    discrepancy_type="layout",
                    severity=SeverityLevel.INFO,
                    description="d",
                )
            )
            session.add(
                BehavioralTestResult(
                    session_id=row.id,
                    scenario_name="login",
                    source_url="http://s",
                    target_url="http://t",
                    execution_status="passed",
                )
            )
            session.add(
                ValidationMetric(
                    metric_date=datetime(2026, 1, 1, tzinfo=UTC), metric_period="daily"
                )
            )

        await manager.run_write(fill)
    finally:
        await manager.dispose()
    filled = sorted(
        m.__tablename__
        for m in (
            ValidationSession,
            ValidationResult,
            ValidationDiscrepancy,
            BehavioralTestResult,
            ValidationMetric,
        )
    )
    counts = await inspect_db(
        url, _rows(" UNION ALL ".join(f"SELECT COUNT(*) FROM {t}" for t in filled))
    )
    assert counts == [(1,)] * len(filled)

    await alembic_run("downgrade", url, "base")  # drops the data with the tables
    assert await inspect_db(url, _table_names) == {"alembic_version"}
    assert await _leftovers(backend, url) == []

    await alembic_run("upgrade", url, "head")
    manager = db_factory(url)
    try:

        async def add(session: Any) -> int:
            row = ValidationSession(
                request_id="before-downgrade",  # the old row is gone: no conflict
                source_technology=TechnologyType.PHP_LARAVEL,
                target_technology=TechnologyType.TYPESCRIPT_VUE,
                validation_scope=ValidationScope.UI_LAYOUT,
                source_input_type=InputType.SCREENSHOTS,
                target_input_type=InputType.SCREENSHOTS,
            )
            session.add(row)
            await session.flush()
            assert row.id is not None
            return row.id

        new_id = await manager.run_write(add)
        async with manager.read_session() as session:
            rows = (await session.execute(sa.select(ValidationSession))).scalars().all()
    finally:
        await manager.dispose()
    assert new_id == 1
    assert [(r.request_id, r.source_technology) for r in rows] == [
        ("before-downgrade", TechnologyType.PHP_LARAVEL)
    ]


async def test_every_model_index_and_unique_constraint_exists(
    backend: str, migrated_url: str
) -> None:
    def reflect(conn: sa.Connection) -> tuple[dict[str, dict[str, Any]], set[str]]:
        inspector = sa.inspect(conn)
        indexes: dict[str, dict[str, Any]] = {}
        uniques: set[str] = set()
        for table in MODEL_TABLES:
            for index in inspector.get_indexes(table):
                if index.get("duplicates_constraint"):
                    continue  # PostgreSQL's index behind a UNIQUE constraint
                indexes[str(index["name"])] = {"table": table, **index}
            uniques |= {str(u["name"]) for u in inspector.get_unique_constraints(table)}
        return indexes, uniques

    actual, uniques = await inspect_db(migrated_url, reflect)
    expected = _expected_indexes(backend)
    assert expected, "the models declare indexes"
    missing = sorted(set(expected) - set(actual))
    assert missing == []
    # Nothing the models do not know about (a stray index is drift too).
    assert sorted(set(actual) - set(expected)) == []
    for name, index in expected.items():
        found = actual[name]
        assert found["table"] == index.table.name, name  # type: ignore[union-attr]
        assert bool(found["unique"]) == bool(index.unique), name
        if not index.expressions or all(isinstance(e, sa.Column) for e in index.expressions):
            assert found["column_names"] == [c.name for c in index.columns], name
    assert "uq_validation_metrics_metric_date_metric_period" in uniques
    if backend == "postgresql":
        assert {"ix_session_metadata_type", "ix_validation_scenarios"} <= set(actual)
    else:
        assert not {"ix_session_metadata_type", "ix_validation_scenarios"} & set(actual)


def _named_constraints(
    conn: sa.Connection,
) -> dict[str, set[tuple[str, str]]]:
    inspector = sa.inspect(conn)
    found: dict[str, set[tuple[str, str]]] = {"check": set(), "other": set()}
    for table in MODEL_TABLES:
        found["check"] |= {(table, str(c["name"])) for c in inspector.get_check_constraints(table)}
        found["other"] |= {(table, str(c["name"])) for c in inspector.get_foreign_keys(table)}
        found["other"] |= {(table, str(c["name"])) for c in inspector.get_unique_constraints(table)}
        found["other"].add((table, str(inspector.get_pk_constraint(table)["name"])))
    return found


def _model_constraints(dialect: str) -> dict[str, set[tuple[str, str]]]:
    expected: dict[str, set[tuple[str, str]]] = {"check": set(), "other": set()}
    for table in metadata.sorted_tables:
        for constraint in table.constraints:
            ddl_if = getattr(constraint, "_ddl_if", None)
            if ddl_if is not None and ddl_if.dialect not in (None, dialect):
                continue
            kind = "check" if isinstance(constraint, sa.CheckConstraint) else "other"
            expected[kind].add((table.name, str(constraint.name)))
    return expected


async def test_key_constraint_names_match_the_models(backend: str, migrated_url: str) -> None:
    """Primary, foreign and unique keys carry the models' names, so later migrations
    can address them."""
    found = await inspect_db(migrated_url, _named_constraints)
    assert found["other"] == _model_constraints(backend)["other"]


async def test_check_constraint_names_match_the_models(backend: str, migrated_url: str) -> None:
    found = await inspect_db(migrated_url, _named_constraints)
    assert found["check"] == _model_constraints(backend)["check"]


@pytest.mark.postgres_only
async def test_postgresql_native_enums_jsonb_and_json_indexes(migrated_url: str) -> None:
    enum_rows = await inspect_db(
        migrated_url,
        _rows(
            "SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
            "ORDER BY t.typname, e.enumsortorder"
        ),
    )
    found: dict[str, list[str]] = {}
    for name, label in enum_rows:
        found.setdefault(name, []).append(label)
    assert found == {name: [m.value for m in enum] for name, enum in NATIVE_ENUMS.items()}

    columns = await inspect_db(
        migrated_url,
        _rows(
            "SELECT table_name, column_name, data_type, udt_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ),
    )
    by_column = {(t, c): (data_type, udt) for t, c, data_type, udt in columns}
    json_columns = {
        (table.name, column.name)
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, sa.JSON)
    }
    assert len(json_columns) > 20
    assert {k for k, (data_type, _) in by_column.items() if data_type == "jsonb"} == json_columns
    assert [k for k, (data_type, _) in by_column.items() if data_type == "json"] == []
    enum_columns = {
        (table.name, column.name): column.type.name
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, sa.Enum)
    }
    assert len(enum_columns) == 6
    for key, type_name in enum_columns.items():
        assert by_column[key] == ("USER-DEFINED", type_name), key

    indexdefs = dict(
        await inspect_db(
            migrated_url,
            _rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"),
        )
    )
    metadata_type = indexdefs["ix_session_metadata_type"]
    assert "USING btree" in metadata_type
    assert "(session_metadata ->> 'type'::text)" in metadata_type
    scenarios = indexdefs["ix_validation_scenarios"]
    assert "USING gin (validation_scenarios jsonb_path_ops)" in scenarios


async def test_alembic_check_reports_no_drift(migrated_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": migrated_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "check",
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "No new upgrade operations detected" in text


async def test_health_follows_the_schema_revision(
    backend: str, empty_database_url: str, alembic_run: AlembicRun, db_factory: DbFactory
) -> None:
    manager = db_factory(empty_database_url)
    try:
        empty = await manager.health()
        assert (empty.ok, empty.at_head, empty.schema_revision) == (False, False, None)
        assert empty.error is None  # reachable, just not migrated
        assert empty.head_revision == head_revision()
        assert empty.dialect == backend

        await alembic_run("upgrade", empty_database_url, "head")
        migrated = await manager.health()
        assert (migrated.ok, migrated.at_head) == (True, True)
        assert migrated.schema_revision == head_revision()

        await alembic_run("downgrade", empty_database_url, "base")
        downgraded = await manager.health()
        assert (downgraded.ok, downgraded.at_head, downgraded.schema_revision) == (
            False,
            False,
            None,
        )
    finally:
        await manager.dispose()
