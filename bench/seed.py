"""Scratch databases for the benchmark: created, migrated by Alembic, seeded raw.

Seeding is not what is measured, so it bypasses migval: asyncpg COPY on PostgreSQL,
one sqlite3 executemany transaction on SQLite. Rows are valid under the schema (enum
values from persistence.enums, CHECK ranges respected) and deterministic (seeded RNG).
"""

import asyncio
import atexit
import contextlib
import random
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.servers import BenchError
from persistence.enums import (
    ExecutionStatus,
    InputType,
    OverallStatus,
    ResultType,
    SessionStatus,
    SeverityLevel,
    TechnologyType,
    ValidationScope,
)

Row = tuple[Any, ...]

SESSION_COLUMNS = (
    "id",
    "request_id",
    "status",
    "source_technology",
    "target_technology",
    "validation_scope",
    "source_input_type",
    "target_input_type",
    "behavioral_timeout",
    "execution_time",
    "created_at",
    "updated_at",
)
RESULT_COLUMNS = (
    "id",
    "session_id",
    "overall_status",
    "fidelity_score",
    "summary",
    "execution_time",
    "result_type",
    "created_at",
    "updated_at",
)
DISCREPANCY_COLUMNS = (
    "id",
    "session_id",
    "result_id",
    "discrepancy_type",
    "severity",
    "description",
    "source_element",
    "target_element",
    "recommendation",
    "confidence",
    "component_type",
    "is_resolved",
    "resolution_notes",
    "resolved_at",
    "resolved_by",
    "version",
    "created_at",
    "updated_at",
)
TEST_COLUMNS = (
    "id",
    "session_id",
    "scenario_name",
    "scenario_description",
    "source_url",
    "target_url",
    "execution_status",
    "source_load_time",
    "target_load_time",
    "execution_duration",
    "created_at",
    "updated_at",
)
TABLES: dict[str, tuple[str, ...]] = {
    "validation_sessions": SESSION_COLUMNS,
    "validation_results": RESULT_COLUMNS,
    "validation_discrepancies": DISCREPANCY_COLUMNS,
    "behavioral_test_results": TEST_COLUMNS,
}

DISCREPANCY_TYPES = ("missing_field", "layout", "behavior", "type_mismatch", "style", "route")
COMPONENTS = ("form", "table", "button", "endpoint", "model", "page")
SCENARIOS = ("login", "checkout", "search", "signup", "profile", "logout")
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Shape:
    """How many rows: per session 1 result, ``discrepancies`` and ``tests``."""

    sessions: int = 10_000
    discrepancies: int = 20
    tests: int = 2
    seed: int = 1


@dataclass
class Dataset:
    sessions: list[Row] = field(default_factory=list)
    results: list[Row] = field(default_factory=list)
    discrepancies: list[Row] = field(default_factory=list)
    tests: list[Row] = field(default_factory=list)

    def tables(self) -> Iterator[tuple[str, tuple[str, ...], list[Row]]]:
        yield "validation_sessions", SESSION_COLUMNS, self.sessions
        yield "validation_results", RESULT_COLUMNS, self.results
        yield "validation_discrepancies", DISCREPANCY_COLUMNS, self.discrepancies
        yield "behavioral_test_results", TEST_COLUMNS, self.tests

    @property
    def row_count(self) -> int:
        return sum(len(rows) for _, _, rows in self.tables())


def _stamp(rng: random.Random, at: datetime) -> datetime:
    # One in 50 timestamps has zero microseconds: isoformat() then omits the fraction,
    # which the floors must reproduce.
    return at.replace(microsecond=0 if rng.random() < 0.02 else rng.randint(1, 999_999))


def generate(shape: Shape) -> Dataset:
    """Deterministic rows; ids are explicit and timestamps increase with the id."""
    rng = random.Random(shape.seed)
    data = Dataset()
    techs, scopes, inputs = list(TechnologyType), list(ValidationScope), list(InputType)
    statuses = [SessionStatus.COMPLETED] * 6 + list(SessionStatus)
    verdicts, severities = list(OverallStatus), list(SeverityLevel)
    outcomes = [ExecutionStatus.PASSED] * 4 + list(ExecutionStatus)
    discrepancy_id = test_id = 0
    for sid in range(1, shape.sessions + 1):
        created = _stamp(rng, BASE_TIME + timedelta(minutes=sid))
        data.sessions.append(
            (
                sid,
                f"bench-{sid:07d}",
                rng.choice(statuses).value,
                rng.choice(techs).value,
                rng.choice(techs).value,
                rng.choice(scopes).value,
                rng.choice(inputs).value,
                rng.choice(inputs).value,
                300,
                round(rng.uniform(1, 600), 3),
                created,
                created,
            )
        )
        recorded = _stamp(rng, created + timedelta(seconds=30))
        verdict = rng.choice(verdicts)
        # Some perfect scores: 1.0 must come out as 1.0 (a float), not 1.
        score = 1.0 if rng.random() < 0.05 else round(rng.uniform(0.3, 0.999), 4)
        data.results.append(
            (
                sid,
                sid,
                verdict.value,
                score,
                f"session {sid}: {verdict.value}, score {score}",
                round(rng.uniform(0.5, 120), 3),
                ResultType.STATIC.value,
                recorded,
                recorded,
            )
        )
        for k in range(shape.discrepancies):
            discrepancy_id += 1
            resolved = rng.random() < 0.1
            data.discrepancies.append(
                (
                    discrepancy_id,
                    sid,
                    sid,
                    rng.choice(DISCREPANCY_TYPES),
                    rng.choice(severities).value,
                    f"element #{k} differs between source and target (check {discrepancy_id})",
                    f"src/components/c{k}.py",
                    f"web/components/C{k}.tsx",
                    "align the target with the source",
                    round(rng.uniform(0.5, 1), 3),
                    rng.choice(COMPONENTS),
                    resolved,
                    "fixed" if resolved else None,
                    recorded + timedelta(hours=1) if resolved else None,
                    "bench" if resolved else None,
                    2 if resolved else 1,
                    recorded,
                    recorded,
                )
            )
        for k in range(shape.tests):
            test_id += 1
            scenario = SCENARIOS[(sid + k) % len(SCENARIOS)]
            data.tests.append(
                (
                    test_id,
                    sid,
                    f"{scenario}-{k}",
                    f"the {scenario} flow",
                    f"http://source.local/{scenario}",
                    f"http://target.local/{scenario}",
                    rng.choice(outcomes).value,
                    round(rng.uniform(0.1, 3), 3),
                    round(rng.uniform(0.1, 3), 3),
                    round(rng.uniform(1, 30), 3),
                    recorded,
                    recorded,
                )
            )
    return data


# --- migrations -------------------------------------------------------------------


_MIGRATE = (
    "import sys; from alembic import command; "
    "from persistence.schema_version import alembic_config; "
    "command.upgrade(alembic_config(sys.argv[1]), 'head')"
)


async def migrate(sqlalchemy_url: str, timeout_s: float = 180.0) -> None:
    """``alembic upgrade head`` (persistence.schema_version.alembic_config) in a child
    process: Alembic's env.py calls asyncio.run(), and a child can be stopped."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _MIGRATE,
        sqlalchemy_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"migration did not finish in {timeout_s:.0f}s") from None
    if process.returncode != 0:
        raise BenchError(f"migration failed:\n{out.decode(errors='replace')}")


# --- PostgreSQL -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PgTarget:
    """The admin DSN (a database we may connect to) and the scratch database name."""

    admin_dsn: str
    database: str

    @property
    def dsn(self) -> str:
        """asyncpg DSN of the scratch database."""
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{self.database}"))

    @property
    def sqlalchemy_url(self) -> str:
        return "postgresql+asyncpg://" + self.dsn.split("://", 1)[1]

    def via(self, host: str, port: int) -> str:
        """The scratch database's DSN through another address (the counting proxy)."""
        parts = urlsplit(self.dsn)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.admin_dsn)
        return parts.hostname or "127.0.0.1", parts.port or 5432


_CREATED: set[PgTarget] = set()


@atexit.register
def _drop_leftovers() -> None:
    """Last resort (an exit that skipped the harness's ``finally``)."""
    for target in list(_CREATED):
        with contextlib.suppress(Exception):
            asyncio.run(pg_drop(target))


async def pg_create(target: PgTarget) -> None:
    """Drop (if left over by an aborted run) and create the scratch database."""
    _CREATED.add(target)
    conn = await asyncpg.connect(target.admin_dsn, timeout=30)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)', timeout=120)
        await conn.execute(f'CREATE DATABASE "{target.database}"', timeout=120)
    finally:
        await conn.close()


async def pg_drop(target: PgTarget) -> None:
    conn = await asyncpg.connect(target.admin_dsn, timeout=30)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)', timeout=120)
        _CREATED.discard(target)
    finally:
        await conn.close()


async def pg_seed(target: PgTarget, data: Dataset) -> None:
    """COPY every table in one transaction, move the id sequences past the seeded ids,
    then ANALYZE (the steady state of a database autovacuum has seen)."""
    conn = await asyncpg.connect(target.dsn, timeout=30)
    try:
        async with conn.transaction():
            for table, columns, rows in data.tables():
                await conn.copy_records_to_table(
                    table, records=rows, columns=list(columns), timeout=600
                )
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 - own table names
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
        await conn.execute("ANALYZE", timeout=600)
    finally:
        await conn.close()


# --- SQLite -----------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _sqlite_value(value: Any) -> Any:
    # The text format SQLAlchemy's SQLite DateTime writes and reads (UTC, naive).
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def sqlite_seed(path: Path, data: Dataset) -> None:
    """One transaction of executemany INSERTs, then ANALYZE."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        for table, columns, rows in data.tables():
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
            conn.executemany(sql, (tuple(_sqlite_value(v) for v in row) for row in rows))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def count_rows(path: Path, tables: Sequence[str] = tuple(TABLES)) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608
    finally:
        conn.close()
