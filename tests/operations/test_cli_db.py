"""``migval db init|stats|cleanup|optimize|validate|backup|restore`` and ``migval
maintenance``, run as subprocesses on real SQLite and PostgreSQL databases seeded
through the persistence services.

Helpers shared with test_export_import.py and test_legacy_import.py: ``run_cli``,
``run_cli_many`` (independent commands concurrently), ``seed`` and ``dump_all``.
"""

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from graph.cli import main
from persistence.actor import SYSTEM
from persistence.database import DatabaseManager
from persistence.idempotency import IdempotencyRequest
from persistence.maintenance.integrity import validate
from persistence.maintenance.tables import TABLES, row_counts
from persistence.models import metadata
from persistence.schema_version import head_revision
from persistence.services import (
    BehavioralTestService,
    DiscrepancyService,
    ResultService,
    SessionService,
)
from persistence.services.tokens import TokenService
from tests.conftest import DbFactory, PgServer
from tests.persistence.factories import (
    behavioral_test_input,
    discrepancy_input,
    result_input,
    session_input,
)

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = metadata.tables["validation_sessions"]
METRICS = metadata.tables["validation_metrics"]
AUDIT = metadata.tables["audit_log"]


# --------------------------------------------------------------------------- helpers


def _cli_command(
    args: Sequence[str], database_url: str, env: Mapping[str, str] | None
) -> tuple[list[str], dict[str, str]]:
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIGVAL_")},
        "DATABASE_URL": database_url,
        **(env or {}),
    }
    return [sys.executable, "-m", "graph.cli", *args], full_env


def run_cli(
    *args: str, database_url: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``migval ARGS`` as a subprocess on ``database_url``."""
    argv, full_env = _cli_command(args, database_url, env)
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        argv,
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli_many(
    *commands: tuple[Sequence[str], str] | tuple[Sequence[str], str, Mapping[str, str]],
    timeout: float = 60,
) -> list[subprocess.CompletedProcess[str]]:
    """Independent ``(args, database_url[, env])`` commands, run concurrently."""
    started = []
    for command in commands:
        args, url = command[0], command[1]
        env = command[2] if len(command) == 3 else None
        argv, full_env = _cli_command(args, url, env)
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((argv, process))
    done = []
    for argv, process in started:
        out, err = process.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return done


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


async def seed(db: DatabaseManager, prefix: str = "seed") -> dict[str, int]:
    """Two sessions (one completed with a result, two discrepancies, one of them
    resolved, and a behavioral test; one with a rejected result, recorded with an
    idempotency key), a token, a metric row; the services write the audit entries.
    Returns the session ids."""
    sessions = SessionService(db)
    first = (
        await sessions.create(
            session_input(
                f"{prefix}-1",
                source_files=["app.py", "models.py"],
                session_metadata={"team": "payments", "ratio": 1.5, "nested": {"x": None}},
                validation_scenarios=["login", "checkout"],
                execution_time=12.25,
                source_technology_version="2.3",
            )
        )
    ).session
    assert first.id is not None
    await sessions.update_status(first.id, "processing")
    await sessions.update_status(first.id, "completed")
    await ResultService(db).record(
        first.id,
        result_input(
            overall_status="approved_with_warnings",
            fidelity_score=0.875,
            result_metadata={"model": "m-1", "scores": [0.5, 1, 2.25]},
        ),
        [
            discrepancy_input(0, validation_context={"line": 3, "ok": True}),
            discrepancy_input(1, severity="CRITICAL", confidence=0.25, component_type="form"),
        ],
    )
    await BehavioralTestService(db).record(
        first.id,
        [
            behavioral_test_input(
                "login", interaction_log=[{"step": "click", "ms": 12}], source_load_time=0.5
            )
        ],
    )
    second = (
        await sessions.create(
            session_input(
                f"{prefix}-2",
                source_technology="JAVASCRIPT_REACT",
                target_technology="TYPESCRIPT_VUE",
                validation_scope="UI_LAYOUT",
                source_input_type="SCREENSHOTS",
                target_input_type="HYBRID",
                session_metadata={"text": "unicode: é 漢字 \u2603"},
            )
        )
    ).session
    assert second.id is not None
    # Sent with an idempotency key, so idempotency_keys has a row too.
    await ResultService(db).record(
        second.id,
        result_input(overall_status="rejected", fidelity_score=0.125, summary="too different"),
        [discrepancy_input(2, severity="INFO")],
        IdempotencyRequest.for_input(
            SYSTEM, f"{prefix}-rejected", "recordValidationResult", {"session": second.id}
        ),
    )
    async with db.read_session() as s:
        first_discrepancy = await s.scalar(
            sa.select(sa.func.min(metadata.tables["validation_discrepancies"].c.id))
        )
    await DiscrepancyService(db).resolve(int(first_discrepancy), "alice", "fixed upstream")
    await TokenService(db).create(f"{prefix}-bot", "viewer")
    async with db.write_session() as s:
        existing = int(await s.scalar(sa.select(sa.func.count()).select_from(METRICS)) or 0)
        await s.execute(
            sa.insert(METRICS).values(
                metric_date=datetime(2026, 1, 5, tzinfo=UTC) + timedelta(days=existing),
                metric_period="daily",
                total_sessions=2,
                avg_fidelity_score=0.5,
                technology_breakdown={"PYTHON_FLASK->JAVA_SPRING": 2},
            )
        )
    return {"first": first.id, "second": second.id}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


async def dump_all(db: DatabaseManager) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (as stored: Core, no decryption), ordered by id."""
    out: dict[str, list[dict[str, Any]]] = {}
    async with db.read_session() as s:
        for table in TABLES:
            rows = (await s.execute(sa.select(table).order_by(table.c.id))).mappings().all()
            out[table.name] = [{k: _plain(v) for k, v in row.items()} for row in rows]
    return out


async def set_created_at(db: DatabaseManager, session_id: int, when: datetime) -> None:
    async with db.write_session() as s:
        await s.execute(
            sa.update(SESSIONS).where(SESSIONS.c.id == session_id).values(created_at=when)
        )


async def counts(db: DatabaseManager) -> dict[str, int]:
    async with db.read_session() as s:
        return await row_counts(s)


# ----------------------------------------------------------------------------- tests


def in_process(monkeypatch: pytest.MonkeyPatch, database_url: str, *argv: str, **env: str) -> int:
    """``graph.cli.main(argv)`` in this process (refusals only: a second faster than a
    subprocess, same code); argparse's own exit is returned as its code."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        return main(list(argv))
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.sqlite_only
def test_usage_and_input_errors_exit_2_or_1(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    days = run_cli("db", "cleanup", "--days", "0", database_url=database_url)
    assert days.returncode == 2, explain(days)
    assert "--days: must be between 1 and" in days.stderr

    def refused(*argv: str, **env: str) -> tuple[int, str]:
        code = in_process(monkeypatch, database_url, *argv, **env)
        return code, capsys.readouterr().err

    code, err = refused("db", "cleanup", "--dry-run", MIGVAL_RETENTION_DAYS="soon")
    assert (code, "MIGVAL_RETENTION_DAYS: must be an integer" in err) == (2, True), err
    code, err = refused("db", "restore", str(tmp_path / "missing.db"))
    assert (code, "does not exist" in err) == (2, True), err
    existing = tmp_path / "exists.db"
    existing.write_text("x")
    code, err = refused("db", "backup", str(existing))
    assert (code, "use --force" in err) == (1, True), err
    assert existing.read_text() == "x"  # refused: untouched
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello, not a database")
    code, err = refused("db", "restore", str(not_a_backup))
    assert (code, "neither a SQLite backup nor a pg_dump" in err) == (1, True), err
    code, err = refused("db", "import", str(tmp_path))
    assert (code, "manifest.json not found" in err) == (1, True), err


async def test_init_creates_then_only_migrates(
    database_url: str, backend_pg_server: PgServer | None, db_factory: DbFactory, tmp_path: Path
) -> None:
    if backend_pg_server is None:
        path = tmp_path / "fresh.db"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        name = f"migval_init_{os.getpid()}_{os.urandom(3).hex()}"
        url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    try:
        first = run_cli("db", "init", database_url=url)
        assert first.returncode == 0, explain(first)
        assert "created" in first.stdout
        assert f"revision {head_revision()}" in first.stdout
        assert "Running upgrade" in first.stderr
        again = run_cli("db", "init", database_url=url)
        assert again.returncode == 0, explain(again)
        assert "exists" in again.stdout
        db = db_factory(url=url)
        try:
            health = await db.health()
            assert health.at_head
            assert set((await counts(db)).values()) == {0}
        finally:
            await db.dispose()  # before the database is dropped
    finally:
        if backend_pg_server is not None:
            await backend_pg_server.drop_database(name)


async def test_stats_counts_sizes_and_session_bounds(
    db: DatabaseManager, database_url: str
) -> None:
    ids = await seed(db)
    old = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    await set_created_at(db, ids["first"], old)
    commands: list[tuple[Sequence[str], str]] = [(["db", "stats", "--json"], database_url)]
    if db.dialect == "sqlite":  # the text rendering is the same code on both
        commands.append((["db", "stats"], database_url))
    as_json, *as_text = run_cli_many(*commands)
    assert as_json.returncode == 0, explain(as_json)
    stats = json.loads(as_json.stdout)
    tables = {t["name"]: t for t in stats["tables"]}
    assert set(tables) == {t.name for t in TABLES}
    assert tables["validation_sessions"]["rows"] == 2
    assert tables["validation_results"]["rows"] == 2
    assert tables["validation_discrepancies"]["rows"] == 3
    assert tables["behavioral_test_results"]["rows"] == 1
    assert tables["validation_metrics"]["rows"] == 1
    assert tables["api_tokens"]["rows"] == 1
    assert tables["audit_log"]["rows"] >= 6
    assert all(t["size_bytes"] > 0 for t in tables.values())
    assert stats["size_bytes"] > 0
    assert stats["oldest_session_created_at"] == "2025-01-02T03:04:05.678901Z"
    assert stats["newest_session_created_at"] > stats["oldest_session_created_at"]
    assert stats["revision"] == head_revision()
    assert stats["at_head"] is True
    assert {"size", "checked_out", "overflow", "configured_pool_size"} <= set(stats["pool"])
    if stats["dialect"] == "postgresql":
        assert sum(stats["server_connections"].values()) >= 1
    for text in as_text:
        assert text.returncode == 0, explain(text)
        assert "validation_discrepancies" in text.stdout
        assert "oldest 2025-01-02T03:04:05.678901Z" in text.stdout


async def test_cleanup_dry_run_then_delete_old_sessions_and_children(
    db: DatabaseManager, database_url: str
) -> None:
    now = datetime.now(UTC)
    old = await seed(db, "old")  # 2 sessions, 2 results, 3 discrepancies, 1 test
    recent = await seed(db, "recent")
    await set_created_at(db, old["first"], now - timedelta(days=40))
    await set_created_at(db, old["second"], now - timedelta(days=31))
    await set_created_at(db, recent["first"], now - timedelta(days=29))
    before = await dump_all(db)

    dry = run_cli("db", "cleanup", "--dry-run", "--json", database_url=database_url)
    assert dry.returncode == 0, explain(dry)
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert report["days"] == 30
    assert report["would_delete"] == {
        "sessions": 2,
        "results": 2,
        "discrepancies": 3,
        "behavioral_tests": 1,
    }
    assert await dump_all(db) == before  # nothing deleted

    real = run_cli(
        "db",
        "cleanup",
        "--batch-size",
        "1",
        database_url=database_url,
        env={"MIGVAL_RETENTION_DAYS": "30"},
    )
    assert real.returncode == 0, explain(real)
    assert "deleted 2 sessions, 2 results, 3 discrepancies, 1 behavioral tests" in real.stdout
    assert "batch 2" in real.stderr  # progress, one transaction per batch
    after = await dump_all(db)
    kept = {s["request_id"] for s in after["validation_sessions"]}
    assert kept == {"recent-1", "recent-2"}
    assert {r["session_id"] for r in after["validation_results"]} == set(recent.values())
    assert {d["session_id"] for d in after["validation_discrepancies"]} == set(recent.values())
    assert len(after["validation_discrepancies"]) == 3
    assert [t["session_id"] for t in after["behavioral_test_results"]] == [recent["first"]]
    assert after["validation_metrics"] == before["validation_metrics"]  # metrics kept
    audit = after["audit_log"]
    assert audit[: len(before["audit_log"])] == before["audit_log"]  # audit log kept
    cleanups = [e for e in audit if e["operation"] == "retentionCleanup"]
    assert len(cleanups) == 2
    assert sorted(i for e in cleanups for i in e["before"]["session_ids"]) == sorted(old.values())
    integrity = await validate(db)
    assert integrity.ok, integrity.lines()  # no orphans


async def test_optimize_exits_0(db: DatabaseManager, database_url: str) -> None:
    await seed(db)
    result = run_cli("db", "optimize", database_url=database_url)
    assert result.returncode == 0, explain(result)
    assert "optimized" in result.stdout
    assert "VACUUM" in result.stderr
    assert "ANALYZE" in result.stderr


async def _corrupt(db: DatabaseManager, database_url: str, session_id: int) -> None:
    """An orphan discrepancy (its session does not exist), written past the foreign
    keys; on SQLite also a fidelity_score out of range, past the CHECK constraints."""
    orphan = (
        "INSERT INTO validation_discrepancies (session_id, discrepancy_type, severity, "
        "description, confidence, is_resolved, version, created_at, updated_at) VALUES "
        "(987654, 'layout', 'WARNING', 'orphan', 1.0, {false}, 1, {now}, {now})"
    )
    if db.dialect == "sqlite":
        path = make_url(database_url).database
        assert path is not None
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("PRAGMA ignore_check_constraints=ON")
            conn.execute(orphan.format(false=0, now="'2026-01-01 00:00:00.000000'"))
            conn.execute(
                "UPDATE validation_results SET fidelity_score = 1.5 WHERE session_id = ?",
                (session_id,),
            )
            conn.commit()
        finally:
            conn.close()
        return
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        # Foreign keys are triggers: the replica role skips them for this session only.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(orphan.format(false="false", now="now()"))
    finally:
        await conn.close()


async def test_validate_passes_clean_and_reports_corruption(
    db: DatabaseManager, database_url: str
) -> None:
    ids = await seed(db)
    clean = run_cli("db", "validate", "--json", database_url=database_url)
    assert clean.returncode == 0, explain(clean)
    report = json.loads(clean.stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {
        "schema",
        "foreign_keys",
        "orphans",
        "ranges",
        "enum_values",
    }

    await _corrupt(db, database_url, ids["first"])
    commands: list[tuple[Sequence[str], str]] = [(["db", "validate"], database_url)]
    if db.dialect == "sqlite":  # maintenance fails when validate does (same code on both)
        skip = ["--skip", "rollup", "--skip", "cleanup", "--skip", "optimize"]
        commands.append((["maintenance", *skip], database_url))
    broken, *routine = run_cli_many(*commands)
    assert broken.returncode == 1, explain(broken)
    out = broken.stdout
    assert "FAIL  orphans" in out
    assert "validation_discrepancies.session_id -> validation_sessions.id: 1 rows" in out
    assert "problems found" in out
    if db.dialect == "sqlite":
        assert "PRAGMA foreign_key_check: 1 rows of validation_discrepancies" in out
        assert "validation_results.fidelity_score: 1 values outside [0, 1]" in out
    for failed in routine:
        assert failed.returncode == 1, explain(failed)
        assert "maintenance validate: failed" in failed.stdout
        assert "orphans" in failed.stdout
        assert failed.stdout.splitlines()[-1] == "maintenance: FAILED steps: validate"


async def test_backup_and_restore_round_trip(
    db: DatabaseManager,
    database_url: str,
    empty_database_url: str,
    db_factory: DbFactory,
    tmp_path: Path,
) -> None:
    await seed(db)
    expected = await dump_all(db)
    target = tmp_path / ("backup.db" if db.dialect == "sqlite" else "backup.dump")
    made = run_cli("db", "backup", str(target), database_url=database_url)
    assert made.returncode == 0, explain(made)
    # One self-contained file: no PATH.partial left, no -wal/-shm beside it.
    assert files_in(tmp_path) == {target.name}
    restored = run_cli("db", "restore", str(target), database_url=empty_database_url)
    assert restored.returncode == 0, explain(restored)
    copy = db_factory(url=empty_database_url)
    assert await dump_all(copy) == expected
    health = await copy.health()
    assert health.at_head
    assert (await validate(copy)).ok


async def test_maintenance_runs_every_step(db: DatabaseManager, database_url: str) -> None:
    ids = await seed(db)
    await set_created_at(db, ids["first"], datetime.now(UTC) - timedelta(days=45))
    result = run_cli("maintenance", "--days", "30", database_url=database_url)
    assert result.returncode == 0, explain(result)
    lines = result.stdout.splitlines()
    steps = [line.split(":")[0] for line in lines if line.startswith("maintenance ")]
    assert steps == [
        "maintenance rollup",
        "maintenance cleanup",
        "maintenance optimize",
        "maintenance validate",
    ]
    assert "maintenance cleanup: ok" in result.stdout
    assert "deleted 1 sessions" in result.stdout
    assert "maintenance validate: ok" in result.stdout
    assert lines[-1] == "maintenance: done"
    remaining = await counts(db)
    assert remaining["validation_sessions"] == 1
