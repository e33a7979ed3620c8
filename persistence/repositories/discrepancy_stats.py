"""SQL for dashboard aggregates of validation_discrepancies: counts grouped by any
combination of keys and an optional time bucket, in one statement.

Rows come ordered by bucket start, then by the grouped keys in the order asked for
(as text, nulls last, the same on both databases). At most ``MAX_STATS_ROWS`` groups:
a query that would return more is refused (ValidationFailed on ``group_by``) rather
than silently cut, since a truncated aggregate is a wrong one.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.enums import MetricPeriod, SeverityLevel, TechnologyType, ValidationScope
from persistence.errors import ValidationFailed
from persistence.filters import DiscrepancyFilter
from persistence.models import ValidationDiscrepancy, ValidationSession
from persistence.repositories.base import dialect_name
from persistence.repositories.discrepancies import discrepancy_conditions
from persistence.repositories.metrics import period_start

DISCREPANCIES = ValidationDiscrepancy.__table__  # type: ignore[attr-defined]
SESSIONS = ValidationSession.__table__  # type: ignore[attr-defined]

MAX_STATS_ROWS = 1000


class DiscrepancyGroupKey(StrEnum):
    """What discrepancies can be grouped by (value: the row field it fills)."""

    SEVERITY = "severity"
    DISCREPANCY_TYPE = "discrepancy_type"
    COMPONENT_TYPE = "component_type"
    SOURCE_TECHNOLOGY = "source_technology"
    TARGET_TECHNOLOGY = "target_technology"
    SCOPE = "scope"


# Keys read from the session of the discrepancy (the statement joins sessions).
_SESSION_KEYS = {
    DiscrepancyGroupKey.SOURCE_TECHNOLOGY: "source_technology",
    DiscrepancyGroupKey.TARGET_TECHNOLOGY: "target_technology",
    DiscrepancyGroupKey.SCOPE: "validation_scope",
}


@dataclass(frozen=True, slots=True)
class DiscrepancyStatsRow:
    """One group: its key values (None when not grouped by that key, or when the
    grouped value is null), its discrepancy count and how many are resolved."""

    count: int
    resolved_count: int
    severity: SeverityLevel | None = None
    discrepancy_type: str | None = None
    component_type: str | None = None
    source_technology: TechnologyType | None = None
    target_technology: TechnologyType | None = None
    scope: ValidationScope | None = None
    bucket_start: datetime | None = None


class DiscrepancyStatsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def grouped(
        self,
        filter_: DiscrepancyFilter,
        group_by: Sequence[DiscrepancyGroupKey],
        bucket: MetricPeriod | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int | None = None,
    ) -> list[DiscrepancyStatsRow]:
        """Counts of discrepancies matching ``filter_`` and created in [created_from,
        created_to), grouped by ``group_by`` (duplicates ignored; none: one row with
        the totals, even when nothing matches) and by the start of their ``bucket``
        period (UTC). Groups without any discrepancy have no row."""
        cap = MAX_STATS_ROWS if limit is None else limit
        keys = list(dict.fromkeys(group_by))
        d = DISCREPANCIES.c
        groups: list[sa.ColumnElement[Any]] = []
        labelled: list[sa.ColumnElement[Any]] = []
        order: list[sa.ColumnElement[Any]] = []
        if bucket is not None:
            start = period_start(d.created_at, bucket, dialect_name(self.session))
            groups.append(start)
            labelled.append(start.label("bucket_start"))
            order.append(start)
        for key in keys:
            column = SESSIONS.c[_SESSION_KEYS[key]] if key in _SESSION_KEYS else d[key.value]
            groups.append(column)
            labelled.append(column.label(key.value))
            # as text: PostgreSQL would sort its enum types in declaration order
            order.append(sa.cast(column, sa.Text).nulls_last())
        conditions = discrepancy_conditions(filter_)
        if created_from is not None:
            conditions.append(d.created_at >= created_from)
        if created_to is not None:
            conditions.append(d.created_at < created_to)
        source: sa.FromClause = DISCREPANCIES
        if any(key in _SESSION_KEYS for key in keys):
            source = DISCREPANCIES.join(SESSIONS, SESSIONS.c.id == d.session_id)
        stmt = (
            sa.select(
                *labelled,
                sa.func.count().label("count"),
                sa.func.count().filter(d.is_resolved.is_(True)).label("resolved_count"),
            )
            .select_from(source)
            .where(*conditions)
            .group_by(*groups)
            .order_by(*order)
            .limit(cap + 1)
        )
        rows = (await self.session.execute(stmt)).all()
        if len(rows) > cap:
            raise ValidationFailed(
                "group_by",
                f"more than {cap} groups; narrow the filter, group by fewer keys or use "
                "a coarser bucket",
            )
        return [DiscrepancyStatsRow(**row._mapping) for row in rows]
