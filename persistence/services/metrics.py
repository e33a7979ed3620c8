"""Metric rollups (validation_metrics) and the metrics listing, stored plus live.

Periods are UTC days, ISO weeks (starting Monday) and calendar months; a period is
*closed* once its end has passed, the one containing "now" is *open*.

Rollup (``MetricsService.rollup``, ``run_rollup`` for the CLI):

- Materializes CLOSED periods only, each aggregated whole by the one aggregation
  statement (``MetricRepository.aggregate``); the open period is never stored.
- Recomputes every closed period overlapping [since, until): ``since`` is floored to
  its period start. Late writes (a result, a discrepancy or a resolution landing in a
  period that has closed) are picked up by the next rollup whose window covers that
  period: ``run_rollup(days=N)`` recomputes the last N days (default 35: the previous
  month and five weeks), ``full=True`` all history.
- Catch-up: the window always reaches back to the end of the newest stored period of
  its kind, so no closed period is ever left unrolled between stored rows (the first
  run stores all history). Hence the invariant the listing relies on: every closed
  period before the newest stored row has been rolled up.
- Idempotent: the stored rows of the window are compared with the fresh figures and
  only new or changed periods are written (INSERT ... ON CONFLICT (metric_date,
  metric_period) DO UPDATE); a second run writes nothing and updated_at stays put.
- Only periods with activity (any session, result, discrepancy or behavioral test
  created in it) have rows. A rollup never deletes stored rows: rollups are the
  history that outlives raw rows, so a period whose source rows were all deleted keeps
  its last figures (a partially deleted one by retention cleanup is frozen, below).
- Frozen periods: retention cleanup records in its audit entries a mark of what is
  gone (``RetentionMark``: the newest creation time of the deleted sessions, and the
  days of their children created later). Periods up to the one holding the former,
  those holding one of the latter, and those starting before an explicit
  ``frozen_before`` have incomplete raw rows: recomputing them would shrink history,
  so their stored figures are kept whatever the window (``migval maintenance`` and
  ``db rollup --full`` included). One with no stored row yet (a month longer than the
  retention: its first days are deleted before it closes) is stored once, from the
  rows still there, and then kept.
- One transaction per period kind; concurrent rollups serialize (advisory lock on
  PostgreSQL, BEGIN IMMEDIATE on SQLite).

Listing (``MetricsService.list_metrics``, behind GraphQL ``metrics``): stored rows for
periods before ``live_from`` = min(end of the newest stored period, start of the open
period), and figures computed live by the same statement from there on (the open
period, plus closed periods not rolled up yet). Live rows are never stored; they carry
id 0 (``LIVE_METRIC_ID``) and created_at = updated_at = the time of computation.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.enums import MetricPeriod
from persistence.errors import ValidationFailed
from persistence.models import ValidationMetric
from persistence.repositories.audit import AuditRepository
from persistence.repositories.metrics import MAX_METRIC_ROWS, MetricRepository, PeriodFigures
from persistence.validation import coerce_enum

ALL_PERIODS: tuple[MetricPeriod, ...] = (
    MetricPeriod.DAILY,
    MetricPeriod.WEEKLY,
    MetricPeriod.MONTHLY,
)
DEFAULT_ROLLUP_DAYS = 35
LIVE_METRIC_ID = 0
_MICROSECOND = timedelta(microseconds=1)


# ------------------------------------------------------------------ period arithmetic


def period_floor(moment: datetime, period: MetricPeriod) -> datetime:
    """Start (UTC midnight) of the period containing ``moment``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: timestamps must carry a timezone")
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is MetricPeriod.WEEKLY:
        return day - timedelta(days=day.weekday())  # ISO: Monday is 0
    if period is MetricPeriod.MONTHLY:
        return day.replace(day=1)
    return day


def period_next(start: datetime, period: MetricPeriod) -> datetime:
    """Start of the period after the one containing ``start``."""
    start = period_floor(start, period)
    if period is MetricPeriod.DAILY:
        return start + timedelta(days=1)
    if period is MetricPeriod.WEEKLY:
        return start + timedelta(days=7)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def period_ceil(moment: datetime, period: MetricPeriod) -> datetime:
    """The first period start at or after ``moment``."""
    floor = period_floor(moment, period)
    return floor if floor == moment else period_next(floor, period)


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class PeriodRollup:
    """What one rollup did for one period kind."""

    period: MetricPeriod
    # Recomputed range of period starts, [window_start, window_end); None: unbounded.
    window_start: datetime | None
    window_end: datetime
    computed: int  # closed periods with activity in the window
    inserted: int
    updated: int
    # Periods starting before it keep their stored figures (see "Frozen periods").
    frozen_until: datetime | None = None

    @property
    def unchanged(self) -> int:
        return self.computed - self.inserted - self.updated

    def to_dict(self) -> dict[str, object]:
        return {
            "period": self.period.value,
            "window_start": None if self.window_start is None else self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "computed": self.computed,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "frozen_until": None if self.frozen_until is None else self.frozen_until.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class RollupReport:
    """What a rollup did, per period kind (JSON-ready through ``to_dict``)."""

    now: datetime
    periods: tuple[PeriodRollup, ...] = field(default=())

    @property
    def written(self) -> int:
        return sum(p.inserted + p.updated for p in self.periods)

    def to_dict(self) -> dict[str, object]:
        return {
            "now": self.now.isoformat(),
            "written": self.written,
            "periods": [p.to_dict() for p in self.periods],
        }


# ---------------------------------------------------------------------------- service


class MetricsService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def rollup(
        self,
        periods: Iterable[MetricPeriod | str] = ALL_PERIODS,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        now: datetime | None = None,
        frozen_before: datetime | None = None,
    ) -> RollupReport:
        """Store the figures of every closed period overlapping [since, until) (None:
        unbounded), reaching back to the newest stored period (catch-up); frozen
        periods (before ``frozen_before`` or holding rows retention cleanup deleted)
        are only inserted when absent. One transaction per period kind."""
        for name, value in (
            ("since", since),
            ("until", until),
            ("now", now),
            ("frozen_before", frozen_before),
        ):
            _check_aware(value, name)
        kinds = [coerce_enum(MetricPeriod, p, "periods") for p in periods]
        now = now or datetime.now(UTC)
        done: list[PeriodRollup] = []
        for period in dict.fromkeys(kinds):  # each kind once, in the given order

            async def work(session: AsyncSession, period: MetricPeriod = period) -> PeriodRollup:
                return await _rollup_period(session, period, since, until, now, frozen_before)

            done.append(await self.db.run_write(work))
        return RollupReport(now=now, periods=tuple(done))

    async def list_metrics(
        self,
        period: MetricPeriod,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        now: datetime | None = None,
        limit: int = MAX_METRIC_ROWS,
    ) -> list[ValidationMetric]:
        """Periods of ``period`` starting in [start, end), oldest first, at most
        ``limit``: stored rollups, then live figures from ``live_from`` on (see the
        module docstring). Live rows have id LIVE_METRIC_ID and are never stored."""
        for name, value in (("from", start), ("to", end), ("now", now)):
            _check_aware(value, name)
        now = now or datetime.now(UTC)
        open_start = period_floor(now, period)
        async with self.db.read_session() as session:
            repo = MetricRepository(session)
            newest = await repo.newest_date(period)
            rows: list[ValidationMetric] = []
            live_from: datetime | None = None  # None: nothing stored, everything is live
            if newest is not None:
                live_from = min(period_next(newest, period), open_start)
                stored_end = live_from if end is None else min(end, live_from)
                if start is None or start < stored_end:
                    rows.extend(await repo.list_period(period, start, stored_end, limit))
            live_start = _latest(None if start is None else period_ceil(start, period), live_from)
            live_end = None if end is None else period_ceil(end, period)
            remaining = limit - len(rows)
            if remaining > 0 and (live_start is None or live_end is None or live_start < live_end):
                figures = await repo.aggregate(period, live_start, live_end, remaining)
                computed_at = datetime.now(UTC)
                rows.extend(_live_row(period, f, computed_at) for f in figures)
        return rows


async def run_rollup(
    db: DatabaseManager,
    *,
    full: bool,
    days: int = DEFAULT_ROLLUP_DAYS,
    now: datetime | None = None,
    frozen_before: datetime | None = None,
) -> RollupReport:
    """The ``migval db rollup`` operation: daily, weekly and monthly rollups of every
    closed period in the last ``days`` days (each period whole, plus catch-up), or of
    all history with ``full``; frozen periods (see the module docstring) are left as
    stored. Raises ValidationFailed on a negative ``days`` or a naive datetime."""
    if days < 0:
        raise ValidationFailed("days", "must be zero or positive")
    _check_aware(now, "now")
    now = now or datetime.now(UTC)
    since = None if full else now - timedelta(days=days)
    return await MetricsService(db).rollup(
        ALL_PERIODS, since, None, now=now, frozen_before=frozen_before
    )


# ---------------------------------------------------------------------------- helpers


async def _rollup_period(
    session: AsyncSession,
    period: MetricPeriod,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    frozen_before: datetime | None,
) -> PeriodRollup:
    repo = MetricRepository(session)
    await repo.lock_for_rollup()
    end = period_floor(now, period)  # the open period starts here: never stored
    if until is not None:
        end = min(end, period_ceil(until, period))
    start = None if since is None else period_floor(since, period)
    newest = await repo.newest_date(period)
    if newest is None:
        start = None  # first rollup of this kind: all history
    elif start is not None:
        start = min(start, period_next(newest, period))  # catch-up
    mark = await AuditRepository(session).retention_mark()
    late: set[datetime] = set()  # periods holding children deleted with older sessions
    if mark is not None:
        if mark.through is not None:  # the period holding that session is frozen too
            frozen_before = _latest(frozen_before, mark.through + _MICROSECOND)
        days = (datetime.combine(day, time(), UTC) for day in mark.later_days)
        late = {period_floor(day, period) for day in days}
    frozen_until = None if frozen_before is None else period_ceil(frozen_before, period)
    if start is not None and start >= end:
        return PeriodRollup(period, start, end, 0, 0, 0, frozen_until)
    fresh = await repo.aggregate(period, start, end)
    stored = await repo.stored_by_date(period, start, end)
    changed: list[PeriodFigures] = []
    inserted = 0
    for figures in fresh:
        row = stored.get(figures.metric_date)
        if row is None:  # frozen or not: a period is stored at least once
            inserted += 1
            changed.append(figures)
        elif (
            frozen_until is not None and figures.metric_date < frozen_until
        ) or figures.metric_date in late:
            continue  # its raw rows are incomplete: keep what was stored
        elif not figures.same_as(PeriodFigures.from_stored(row)):
            changed.append(figures)
    await repo.upsert(period, changed)
    return PeriodRollup(
        period, start, end, len(fresh), inserted, len(changed) - inserted, frozen_until
    )


def _live_row(period: MetricPeriod, figures: PeriodFigures, at: datetime) -> ValidationMetric:
    return ValidationMetric(
        id=LIVE_METRIC_ID,
        metric_period=period,
        created_at=at,
        updated_at=at,
        **figures.values(),
    )


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _check_aware(value: datetime | None, name: str) -> None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(name, "must include a timezone offset")


__all__ = [
    "ALL_PERIODS",
    "DEFAULT_ROLLUP_DAYS",
    "LIVE_METRIC_ID",
    "MetricsService",
    "PeriodRollup",
    "RollupReport",
    "period_ceil",
    "period_floor",
    "period_next",
    "run_rollup",
]
