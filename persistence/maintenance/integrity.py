"""``migval db validate``: checks that the constraints should make impossible, and
report anything that is wrong anyway (rows written with foreign keys or CHECKs off, a
restored dump, a disabled trigger, disk corruption).

Checks, in order (each is independent; the first needs the schema to exist):

- ``schema``: the database is at the migration head;
- ``sqlite_integrity``: SQLite ``PRAGMA integrity_check``;
- ``foreign_keys``: SQLite ``PRAGMA foreign_key_check``; PostgreSQL: no foreign key or
  CHECK constraint left NOT VALID, no disabled trigger (foreign keys are triggers);
- ``orphans``: for every foreign key, rows whose key points at no row;
- ``consistency``: a discrepancy's result belongs to the discrepancy's session;
- ``ranges``: fidelity_score/confidence in [0, 1], durations >= 0, timeouts > 0,
  versions >= 1;
- ``enum_values``: every enum-like column holds one of its enum's values;
- ``json``: SQLite JSON columns hold valid JSON text.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager, current_revision
from persistence.maintenance.tables import (
    DISCREPANCIES,
    RESULTS,
    TABLE_NAMES,
    TABLES,
    unbounded,
)
from persistence.schema_version import head_revision
from persistence.sqltypes import StrEnumType
from persistence.validation import NON_NEGATIVE, POSITIVE, RANGES

SAMPLE = 10  # ids shown per problem


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    message: str
    count: int = 1
    sample_ids: tuple[Any, ...] = ()

    def describe(self) -> str:
        ids = ""
        if self.sample_ids:
            more = ", ..." if self.count > len(self.sample_ids) else ""
            ids = f" (ids: {', '.join(str(i) for i in self.sample_ids)}{more})"
        return f"{self.message}{ids}"


@dataclass(slots=True)
class IntegrityReport:
    dialect: str
    checks: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dialect": self.dialect,
            "checks": [
                {"name": c, "ok": not any(p.check == c for p in self.problems)} for c in self.checks
            ],
            "skipped": self.skipped,
            "problems": [
                {
                    "check": p.check,
                    "message": p.message,
                    "count": p.count,
                    "sample_ids": list(p.sample_ids),
                }
                for p in self.problems
            ],
        }

    def lines(self) -> list[str]:
        out = []
        for check in self.checks:
            found = [p for p in self.problems if p.check == check]
            out.append(f"{'FAIL' if found else 'ok':<6}{check}")
            out.extend(f"      - {p.describe()}" for p in found)
        out.extend(f"skip  {reason}" for reason in self.skipped)
        total = sum(p.count for p in self.problems)
        out.append(
            "database is consistent"
            if self.ok
            else f"{len(self.problems)} problems found ({total} rows or items affected)"
        )
        return out

    def summary(self) -> str:
        if self.ok:
            return f"{len(self.checks)} checks passed"
        return "; ".join(f"{p.check}: {p.describe()}" for p in self.problems)


async def validate(db: DatabaseManager) -> IntegrityReport:
    report = IntegrityReport(db.dialect)
    async with db.read_session() as session, unbounded(session):
        report.checks.append("schema")
        revision = await current_revision(session)
        head = head_revision()
        if revision is None:
            report.problems.append(
                Problem(
                    "schema",
                    "the database is not migrated (no alembic_version); run "
                    "`migval db init` or `migval db migrate`",
                )
            )
            report.skipped.append("data checks: no schema")
            return report
        if revision != head:
            report.problems.append(
                Problem(
                    "schema",
                    f"schema revision {revision} is not the head {head}; run `migval db migrate`",
                )
            )
        if db.dialect == "sqlite":
            report.checks.append("sqlite_integrity")
            await _sqlite_integrity(session, report)
        report.checks.append("foreign_keys")
        if db.dialect == "sqlite":
            await _sqlite_foreign_keys(session, report)
        else:
            await _pg_constraints(session, report)
        for name, check in (
            ("orphans", _orphans),
            ("consistency", _consistency),
            ("ranges", _ranges),
            ("enum_values", _enum_values),
        ):
            report.checks.append(name)
            await check(session, report)
        if db.dialect == "sqlite":
            report.checks.append("json")
            await _sqlite_json(session, report)
    return report


async def _sample(
    session: AsyncSession, table: sa.Table, condition: sa.ColumnElement[bool]
) -> tuple[int, tuple[Any, ...]]:
    count = int(
        await session.scalar(sa.select(sa.func.count()).select_from(table).where(condition)) or 0
    )
    if not count:
        return 0, ()
    ids = await session.scalars(
        sa.select(table.c.id).where(condition).order_by(table.c.id).limit(SAMPLE)
    )
    return count, tuple(ids.all())


async def _sqlite_integrity(session: AsyncSession, report: IntegrityReport) -> None:
    rows = [str(r[0]) for r in (await session.execute(sa.text("PRAGMA integrity_check"))).all()]
    if rows != ["ok"]:
        for message in rows[:SAMPLE]:
            report.problems.append(Problem("sqlite_integrity", message))


async def _sqlite_foreign_keys(session: AsyncSession, report: IntegrityReport) -> None:
    rows = (await session.execute(sa.text("PRAGMA foreign_key_check"))).all()
    grouped: dict[tuple[str, str], list[Any]] = {}
    for table, rowid, parent, _fkid in rows:
        grouped.setdefault((str(table), str(parent)), []).append(rowid)
    for (table, parent), rowids in grouped.items():
        report.problems.append(
            Problem(
                "foreign_keys",
                f"PRAGMA foreign_key_check: {len(rowids)} rows of {table} reference missing "
                f"rows of {parent}",
                len(rowids),
                tuple(rowids[:SAMPLE]),
            )
        )


async def _pg_constraints(session: AsyncSession, report: IntegrityReport) -> None:
    not_valid = await session.execute(
        sa.text(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = current_schema() AND NOT c.convalidated "
            "AND t.relname = ANY(:names) ORDER BY 1, 2"
        ),
        {"names": list(TABLE_NAMES)},
    )
    for table, name in not_valid.all():
        report.problems.append(
            Problem(
                "foreign_keys",
                f"constraint {name} on {table} is NOT VALID (not enforced for existing rows)",
            )
        )
    disabled = await session.execute(
        sa.text(
            "SELECT tg.tgrelid::regclass::text, tg.tgname FROM pg_trigger tg "
            "JOIN pg_class t ON t.oid = tg.tgrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = current_schema() AND tg.tgenabled = 'D' "
            "AND t.relname = ANY(:names) ORDER BY 1, 2"
        ),
        {"names": list(TABLE_NAMES)},
    )
    for table, name in disabled.all():
        kind = "foreign key trigger" if name.startswith("RI_ConstraintTrigger") else "trigger"
        report.problems.append(Problem("foreign_keys", f"{kind} {name} on {table} is disabled"))


async def _orphans(session: AsyncSession, report: IntegrityReport) -> None:
    for table in TABLES:
        for fk in sorted(table.foreign_keys, key=lambda f: f.parent.name):
            child, parent = fk.parent, fk.column
            parent_table = parent.table
            missing = sa.and_(
                child.isnot(None),
                ~sa.exists().where(parent == child),
            )
            count, ids = await _sample(session, table, missing)
            if count:
                report.problems.append(
                    Problem(
                        "orphans",
                        f"{table.name}.{child.name} -> {parent_table.name}.{parent.name}: "
                        f"{count} rows point at no row",
                        count,
                        ids,
                    )
                )


async def _consistency(session: AsyncSession, report: IntegrityReport) -> None:
    mismatch = sa.exists().where(
        RESULTS.c.id == DISCREPANCIES.c.result_id,
        RESULTS.c.session_id != DISCREPANCIES.c.session_id,
    )
    count, ids = await _sample(session, DISCREPANCIES, mismatch)
    if count:
        report.problems.append(
            Problem(
                "consistency",
                f"validation_discrepancies: {count} rows belong to a result of another session",
                count,
                ids,
            )
        )


def _range_condition(column: sa.Column[Any]) -> tuple[sa.ColumnElement[bool], str] | None:
    name = column.name
    if name in RANGES:
        low, high = RANGES[name]
        return sa.or_(column < low, column > high), f"outside [{low:g}, {high:g}]"
    if name in NON_NEGATIVE:
        return column < 0, "negative"
    if name in POSITIVE:
        return column <= 0, "not greater than 0"
    if name == "version":
        return column < 1, "below 1"
    return None


async def _ranges(session: AsyncSession, report: IntegrityReport) -> None:
    for table in TABLES:
        for column in table.c:
            found = _range_condition(column)
            if found is None:
                continue
            condition, what = found
            count, ids = await _sample(session, table, condition)
            if count:
                report.problems.append(
                    Problem(
                        "ranges", f"{table.name}.{column.name}: {count} values {what}", count, ids
                    )
                )


def _enum_class(type_: sa.types.TypeEngine[Any]) -> type[StrEnum] | None:
    if isinstance(type_, StrEnumType):
        return type_.enum_cls
    if isinstance(type_, sa.Enum) and type_.enum_class is not None:
        return type_.enum_class  # type: ignore[return-value]
    return None


async def _enum_values(session: AsyncSession, report: IntegrityReport) -> None:
    for table in TABLES:
        for column in table.c:
            enum_cls = _enum_class(column.type)
            if enum_cls is None:
                continue
            # Compare the raw text: a bad value must not go through the enum's own
            # (validating) bind/result processing.
            raw = sa.cast(column, sa.String)
            allowed = [m.value for m in enum_cls]
            condition = sa.and_(column.isnot(None), raw.notin_(allowed))
            count, ids = await _sample(session, table, condition)
            if count:
                values = await session.scalars(
                    sa.select(raw).where(condition).distinct().order_by(raw).limit(5)
                )
                shown = ", ".join(repr(v) for v in values.all())
                report.problems.append(
                    Problem(
                        "enum_values",
                        f"{table.name}.{column.name}: {count} invalid values ({shown}); "
                        f"allowed: {', '.join(allowed)}",
                        count,
                        ids,
                    )
                )


async def _sqlite_json(session: AsyncSession, report: IntegrityReport) -> None:
    for table in TABLES:
        for column in table.c:
            if not isinstance(column.type, sa.JSON):
                continue
            condition = sa.and_(
                column.isnot(None), sa.func.json_valid(sa.cast(column, sa.Text)) == 0
            )
            count, ids = await _sample(session, table, condition)
            if count:
                report.problems.append(
                    Problem(
                        "json",
                        f"{table.name}.{column.name}: {count} values are not JSON",
                        count,
                        ids,
                    )
                )
