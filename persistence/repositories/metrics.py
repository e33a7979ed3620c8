"""SQL for validation_metrics."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.enums import MetricPeriod
from persistence.models import ValidationMetric

V = ValidationMetric


class MetricRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_period(
        self, period: MetricPeriod, start: datetime | None, end: datetime | None
    ) -> Sequence[ValidationMetric]:
        """Stored rollups of ``period`` with metric_date in [start, end), oldest first."""
        conds: list[sa.ColumnElement[bool]] = [_c("metric_period") == period]
        if start is not None:
            conds.append(_c("metric_date") >= start)
        if end is not None:
            conds.append(_c("metric_date") < end)
        stmt = sa.select(V).where(*conds).order_by(_c("metric_date")).limit(1000)
        return (await self.session.scalars(stmt)).all()


def _c(name: str) -> sa.Column[Any]:
    return V.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
