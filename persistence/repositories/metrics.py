"""SQL for validation_metrics: stored rollups, the period aggregation and the upsert.

``aggregate()`` is THE aggregation: one statement that groups sessions, results,
discrepancies and behavioral tests by the start of their period (computed in SQL) and
returns one complete row per period that has any of them. The rollup stores its rows
for closed periods; the ``metrics`` query serves it live for the open period. Both go
through this one function, so stored and live figures cannot drift apart.

Period starts (UTC, 00:00): days; ISO weeks (Monday); calendar months.

- PostgreSQL: ``timezone('UTC', date_trunc(unit, timezone('UTC', created_at)))``,
  independent of the session's TimeZone setting (``date_trunc('week')`` is ISO).
- SQLite (timestamps are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'): the day is
  ``substr(created_at, 1, 10)``; the week ``date(<day>, 'weekday 0', '-6 days')``
  ('weekday 0' moves forward to the next Sunday, or stays on a Sunday; six days back
  is that ISO week's Monday); the month ``substr(created_at, 1, 7) || '-01'``; each
  with ``' 00:00:00.000000'`` appended so it reads back like a stored timestamp. Not
  ``date(created_at, 'weekday 0', ...)``: with a modifier SQLite rounds the time to
  milliseconds first, which moves Sunday 23:59:59.9995 into the next week.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.enums import (
    ExecutionStatus,
    MetricPeriod,
    OverallStatus,
    SessionStatus,
    SeverityLevel,
)
from persistence.models import (
    BehavioralTestResult,
    ValidationDiscrepancy,
    ValidationMetric,
    ValidationResult,
    ValidationSession,
)
from persistence.repositories.base import dialect_name, one_per_key
from persistence.sqltypes import JSONType, UTCDateTime, utcnow

V = ValidationMetric
METRICS = V.__table__  # type: ignore[attr-defined]
SESSIONS = ValidationSession.__table__  # type: ignore[attr-defined]
RESULTS = ValidationResult.__table__  # type: ignore[attr-defined]
DISCREPANCIES = ValidationDiscrepancy.__table__  # type: ignore[attr-defined]
TESTS = BehavioralTestResult.__table__  # type: ignore[attr-defined]

# Cap of the metrics listing (stored plus live rows).
MAX_METRIC_ROWS = 1000

_PG_UNITS = {MetricPeriod.DAILY: "day", MetricPeriod.WEEKLY: "week", MetricPeriod.MONTHLY: "month"}
# Serializes rollups on PostgreSQL (pg_advisory_xact_lock key; any fixed bigint).
_ROLLUP_LOCK_KEY = 0x6D6967_76616C_01


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    """The figures of one period: every value column of validation_metrics.

    ``additional_metrics`` keys (all counts of rows created in the period):
    ``total_results``, ``error_results`` (overall_status = error, in no other
    column), ``cancelled_sessions``, ``resolved_discrepancies`` (resolved when the
    figures were computed), ``behavioral_tests`` and ``behavioral_passed``.
    """

    metric_date: datetime
    total_sessions: int
    completed_sessions: int
    failed_sessions: int
    approved_count: int
    approved_with_warnings_count: int
    rejected_count: int
    avg_execution_time: float | None
    max_execution_time: float | None
    min_execution_time: float | None
    avg_fidelity_score: float | None
    max_fidelity_score: float | None
    min_fidelity_score: float | None
    technology_breakdown: dict[str, int]
    scope_breakdown: dict[str, int]
    total_discrepancies: int
    critical_discrepancies: int
    warning_discrepancies: int
    info_discrepancies: int
    additional_metrics: dict[str, int]

    @classmethod
    def from_stored(cls, row: ValidationMetric) -> "PeriodFigures":
        return cls(**{name: getattr(row, name) for name in FIGURE_NAMES})

    def values(self) -> dict[str, Any]:
        return asdict(self)

    def same_as(self, other: "PeriodFigures") -> bool:
        """Equal figures; floats within 1e-12 relative (an AVG summed in another row
        order may differ in the last bit, which is no change worth a write)."""
        for name in FIGURE_NAMES:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, float) and isinstance(theirs, float):
                if abs(mine - theirs) > 1e-12 * max(abs(mine), abs(theirs), 1.0):
                    return False
            elif mine != theirs:
                return False
        return True


FIGURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(PeriodFigures))
VALUE_NAMES: tuple[str, ...] = FIGURE_NAMES[1:]  # all but metric_date


class MetricRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return dialect_name(self.session)

    # ------------------------------------------------------------------ stored rows

    async def list_by_ids(self, ids: Sequence[int]) -> list[ValidationMetric | None]:
        rows = await self.session.scalars(sa.select(V).where(V.__table__.c.id.in_(ids)))  # type: ignore[attr-defined]
        return one_per_key(rows, ids, lambda m: m.id)

    async def list_period(
        self,
        period: MetricPeriod,
        start: datetime | None,
        end: datetime | None,
        limit: int = MAX_METRIC_ROWS,
    ) -> Sequence[ValidationMetric]:
        """Stored rollups of ``period`` with metric_date in [start, end), oldest first."""
        stmt = (
            sa.select(V)
            .where(*_date_range(period, start, end))
            .order_by(METRICS.c.metric_date)
            .limit(limit)
        )
        return (await self.session.scalars(stmt)).all()

    async def stored_by_date(
        self, period: MetricPeriod, start: datetime | None, end: datetime | None
    ) -> dict[datetime, ValidationMetric]:
        """Every stored rollup of ``period`` in [start, end) (no cap), by metric_date."""
        rows = await self.session.scalars(sa.select(V).where(*_date_range(period, start, end)))
        return {row.metric_date: row for row in rows}

    async def newest_date(self, period: MetricPeriod) -> datetime | None:
        """metric_date of the newest stored rollup of ``period``."""
        stmt = sa.select(sa.func.max(METRICS.c.metric_date)).where(
            METRICS.c.metric_period == period
        )
        return await self.session.scalar(stmt)

    async def upsert(self, period: MetricPeriod, rows: Sequence[PeriodFigures]) -> None:
        """INSERT ... ON CONFLICT (metric_date, metric_period) DO UPDATE every value
        column and updated_at. The caller writes only rows whose figures changed."""
        if not rows:
            return
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = insert(METRICS)
        stmt = stmt.on_conflict_do_update(
            index_elements=[METRICS.c.metric_date, METRICS.c.metric_period],
            set_={
                **{name: stmt.excluded[name] for name in VALUE_NAMES},
                # ON CONFLICT updates skip Column.onupdate: say it explicitly.
                "updated_at": utcnow(),
            },
        )
        await self.session.execute(
            stmt, [{"metric_period": period, **row.values()} for row in rows]
        )

    async def lock_for_rollup(self) -> None:
        """Serialize concurrent rollups (PostgreSQL; SQLite writers already queue on
        BEGIN IMMEDIATE), so compare-then-write sees the other run's rows."""
        if self.dialect == "postgresql":
            await self.session.execute(
                sa.select(sa.func.pg_advisory_xact_lock(sa.literal(_ROLLUP_LOCK_KEY)))
            )

    # ------------------------------------------------------------------ aggregation

    async def aggregate(
        self,
        period: MetricPeriod,
        start: datetime | None,
        end: datetime | None,
        limit: int | None = None,
    ) -> list[PeriodFigures]:
        """Figures of every ``period`` with activity among rows created in [start, end),
        oldest first, in ONE statement. ``start``/``end`` must be period starts (or
        None: unbounded), so each period is aggregated whole."""
        stmt = aggregate_statement(period, self.dialect, start, end)
        if limit is not None:
            stmt = stmt.limit(limit)
        result = await self.session.execute(stmt)
        return [PeriodFigures(**row._mapping) for row in result]


# ------------------------------------------------------------------------ SQL parts


def _date_range(
    period: MetricPeriod, start: datetime | None, end: datetime | None
) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = [METRICS.c.metric_period == period]
    if start is not None:
        conds.append(METRICS.c.metric_date >= start)
    if end is not None:
        conds.append(METRICS.c.metric_date < end)
    return conds


def _lit(text: str) -> sa.ColumnElement[Any]:
    """A fixed SQL string literal. Inline, not bound: PostgreSQL matches GROUP BY
    expressions textually (a bound parameter gets a new number each time it appears)
    and cannot type parameters of jsonb_build_object()."""
    return sa.literal_column("'" + text.replace("'", "''") + "'")


def period_start(
    column: sa.ColumnElement[datetime], period: MetricPeriod, dialect: str
) -> sa.ColumnElement[datetime]:
    """SQL of the start (UTC midnight) of the day, ISO week or month of ``column``."""
    expr: sa.ColumnElement[Any]
    if dialect == "postgresql":
        utc_wall_clock = sa.func.timezone(_lit("UTC"), column)
        truncated = sa.func.date_trunc(_lit(_PG_UNITS[period]), utc_wall_clock)
        expr = sa.func.timezone(_lit("UTC"), truncated)
    else:
        # The date is cut from the text: SQLite's date functions round fractional
        # seconds to milliseconds once a modifier applies, so a Sunday's
        # 23:59:59.9995 would turn into Monday and land in the next week.
        date = sa.func.substr(column, 1, 10)
        day: sa.ColumnElement[Any]
        if period is MetricPeriod.DAILY:
            day = date
        elif period is MetricPeriod.WEEKLY:
            day = sa.func.date(date, _lit("weekday 0"), _lit("-6 days"))
        else:
            day = sa.func.substr(column, 1, 7).op("||")(_lit("-01"))
        expr = day.op("||")(_lit(" 00:00:00.000000"))
    return sa.type_coerce(expr, UTCDateTime())


def _window(
    table: sa.Table, start: datetime | None, end: datetime | None
) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if start is not None:
        conds.append(table.c.created_at >= start)
    if end is not None:
        conds.append(table.c.created_at < end)
    return conds


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.count().filter(condition)


def _json_object_agg(dialect: str, key: Any, value: Any) -> sa.ColumnElement[Any]:
    fn = sa.func.jsonb_object_agg if dialect == "postgresql" else sa.func.json_group_object
    return fn(key, value)


def _json_object(dialect: str, pairs: Mapping[str, Any]) -> sa.ColumnElement[Any]:
    fn = sa.func.jsonb_build_object if dialect == "postgresql" else sa.func.json_object
    args: list[Any] = []
    for key, value in pairs.items():
        args += [_lit(key), value]
    return fn(*args)


def _breakdown(
    dialect: str,
    period: MetricPeriod,
    key: sa.ColumnElement[str],
    start: datetime | None,
    end: datetime | None,
    name: str,
) -> sa.Subquery:
    """{key: session count} per period: counted per (period, key), then folded into
    one JSON object per period."""
    bucket = period_start(SESSIONS.c.created_at, period, dialect)
    counted = (
        sa.select(bucket.label("b"), key.label("k"), sa.func.count().label("n"))
        .where(*_window(SESSIONS, start, end))
        .group_by(bucket, key)
        .subquery(f"{name}_counts")
    )
    return (
        sa.select(counted.c.b, _json_object_agg(dialect, counted.c.k, counted.c.n).label("obj"))
        .group_by(counted.c.b)
        .subquery(name)
    )


def aggregate_statement(
    period: MetricPeriod, dialect: str, start: datetime | None, end: datetime | None
) -> sa.Select[Any]:
    """The one aggregation SELECT: a row per period start with activity, oldest first,
    columns named after validation_metrics."""
    s, r, d, t = SESSIONS.c, RESULTS.c, DISCREPANCIES.c, TESTS.c

    b = period_start(s.created_at, period, dialect)
    sessions = (
        sa.select(
            b.label("b"),
            sa.func.count().label("total"),
            _count_if(s.status == SessionStatus.COMPLETED).label("completed"),
            _count_if(s.status == SessionStatus.FAILED).label("failed"),
            _count_if(s.status == SessionStatus.CANCELLED).label("cancelled"),
            sa.func.avg(s.execution_time).label("avg_time"),
            sa.func.max(s.execution_time).label("max_time"),
            sa.func.min(s.execution_time).label("min_time"),
        )
        .where(*_window(SESSIONS, start, end))
        .group_by(b)
        .subquery("s")
    )

    arrow = _lit("->")
    tech_key = (
        sa.cast(s.source_technology, sa.Text)
        .op("||")(arrow)
        .op("||")(sa.cast(s.target_technology, sa.Text))
    )
    tech = _breakdown(dialect, period, tech_key, start, end, "tech")
    scope = _breakdown(dialect, period, sa.cast(s.validation_scope, sa.Text), start, end, "scope")

    b = period_start(r.created_at, period, dialect)
    results = (
        sa.select(
            b.label("b"),
            sa.func.count().label("total"),
            _count_if(r.overall_status == OverallStatus.APPROVED).label("approved"),
            _count_if(r.overall_status == OverallStatus.APPROVED_WITH_WARNINGS).label("warned"),
            _count_if(r.overall_status == OverallStatus.REJECTED).label("rejected"),
            _count_if(r.overall_status == OverallStatus.ERROR).label("error"),
            sa.func.avg(r.fidelity_score).label("avg_score"),
            sa.func.max(r.fidelity_score).label("max_score"),
            sa.func.min(r.fidelity_score).label("min_score"),
        )
        .where(*_window(RESULTS, start, end))
        .group_by(b)
        .subquery("r")
    )

    b = period_start(d.created_at, period, dialect)
    discrepancies = (
        sa.select(
            b.label("b"),
            sa.func.count().label("total"),
            _count_if(d.severity == SeverityLevel.CRITICAL).label("critical"),
            _count_if(d.severity == SeverityLevel.WARNING).label("warning"),
            _count_if(d.severity == SeverityLevel.INFO).label("info"),
            _count_if(d.is_resolved.is_(True)).label("resolved"),
        )
        .where(*_window(DISCREPANCIES, start, end))
        .group_by(b)
        .subquery("d")
    )

    b = period_start(t.created_at, period, dialect)
    tests = (
        sa.select(
            b.label("b"),
            sa.func.count().label("total"),
            _count_if(t.execution_status == ExecutionStatus.PASSED).label("passed"),
        )
        .where(*_window(TESTS, start, end))
        .group_by(b)
        .subquery("t")
    )

    keys = sa.union(
        *(sa.select(sub.c.b) for sub in (sessions, results, discrepancies, tests))
    ).subquery("k")

    def n(column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(column, 0)

    empty = _json_object(dialect, {})
    additional = _json_object(
        dialect,
        {
            "total_results": n(results.c.total),
            "error_results": n(results.c.error),
            "cancelled_sessions": n(sessions.c.cancelled),
            "resolved_discrepancies": n(discrepancies.c.resolved),
            "behavioral_tests": n(tests.c.total),
            "behavioral_passed": n(tests.c.passed),
        },
    )
    key = sa.type_coerce(keys.c.b, UTCDateTime())
    joined: sa.FromClause = keys
    for sub in (sessions, tech, scope, results, discrepancies, tests):
        joined = joined.outerjoin(sub, sub.c.b == keys.c.b)
    return (
        sa.select(
            key.label("metric_date"),
            n(sessions.c.total).label("total_sessions"),
            n(sessions.c.completed).label("completed_sessions"),
            n(sessions.c.failed).label("failed_sessions"),
            n(results.c.approved).label("approved_count"),
            n(results.c.warned).label("approved_with_warnings_count"),
            n(results.c.rejected).label("rejected_count"),
            sessions.c.avg_time.label("avg_execution_time"),
            sessions.c.max_time.label("max_execution_time"),
            sessions.c.min_time.label("min_execution_time"),
            results.c.avg_score.label("avg_fidelity_score"),
            results.c.max_score.label("max_fidelity_score"),
            results.c.min_score.label("min_fidelity_score"),
            sa.type_coerce(sa.func.coalesce(tech.c.obj, empty), JSONType).label(
                "technology_breakdown"
            ),
            sa.type_coerce(sa.func.coalesce(scope.c.obj, empty), JSONType).label("scope_breakdown"),
            n(discrepancies.c.total).label("total_discrepancies"),
            n(discrepancies.c.critical).label("critical_discrepancies"),
            n(discrepancies.c.warning).label("warning_discrepancies"),
            n(discrepancies.c.info).label("info_discrepancies"),
            sa.type_coerce(additional, JSONType).label("additional_metrics"),
        )
        .select_from(joined)
        .order_by(keys.c.b)
    )
