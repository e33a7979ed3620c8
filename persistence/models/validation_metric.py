"""validation_metrics: aggregated figures for one day, ISO week or month (UTC)."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from persistence.enums import MetricPeriod
from persistence.models.base import created_at_column, updated_at_column
from persistence.sqltypes import JSONType, StrEnumType, UTCDateTime, in_values_check


def _count() -> Any:
    return Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))


def _stat() -> Any:
    return Field(default=None, sa_column=sa.Column(sa.Float))


def _json() -> Any:
    return Field(default=None, sa_column=sa.Column(JSONType))


class ValidationMetric(SQLModel, table=True):
    __tablename__ = "validation_metrics"
    __table_args__ = (
        sa.UniqueConstraint("metric_date", "metric_period"),
        sa.CheckConstraint(
            in_values_check("metric_period", MetricPeriod), name="metric_period_valid"
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))

    metric_date: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    metric_period: MetricPeriod = Field(
        sa_column=sa.Column(StrEnumType(MetricPeriod, 20), nullable=False)
    )

    total_sessions: int = _count()
    completed_sessions: int = _count()
    failed_sessions: int = _count()

    approved_count: int = _count()
    approved_with_warnings_count: int = _count()
    rejected_count: int = _count()

    avg_execution_time: float | None = _stat()
    max_execution_time: float | None = _stat()
    min_execution_time: float | None = _stat()

    avg_fidelity_score: float | None = _stat()
    max_fidelity_score: float | None = _stat()
    min_fidelity_score: float | None = _stat()

    technology_breakdown: Any = _json()
    scope_breakdown: Any = _json()

    total_discrepancies: int = _count()
    critical_discrepancies: int = _count()
    warning_discrepancies: int = _count()
    info_discrepancies: int = _count()

    additional_metrics: Any = _json()

    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())
