"""Dashboard aggregates: discrepancy counts grouped by keys and time buckets."""

from datetime import datetime
from enum import Enum
from typing import Self

import strawberry

from graph.types.common import SeverityLevel, TechnologyType, ValidationScope, desc
from persistence.enums import MetricPeriod
from persistence.repositories.discrepancy_stats import DiscrepancyGroupKey, DiscrepancyStatsRow


@strawberry.enum(description="What discrepancy statistics are grouped by.")
class DiscrepancyGroupBy(Enum):
    SEVERITY = strawberry.enum_value("severity", description="The discrepancy's severity.")
    DISCREPANCY_TYPE = strawberry.enum_value(
        "discrepancy_type", description="The discrepancy's type."
    )
    COMPONENT_TYPE = strawberry.enum_value(
        "component_type", description="The discrepancy's component type."
    )
    SOURCE_TECHNOLOGY = strawberry.enum_value(
        "source_technology", description="Its session's source stack."
    )
    TARGET_TECHNOLOGY = strawberry.enum_value(
        "target_technology", description="Its session's target stack."
    )
    SCOPE = strawberry.enum_value("scope", description="Its session's validation scope.")


@strawberry.enum(description="Time bucket of a statistic, on the creation time (UTC).")
class TimeBucket(Enum):
    DAY = strawberry.enum_value("day", description="Calendar day (UTC).")
    WEEK = strawberry.enum_value("week", description="ISO week, starting Monday 00:00 UTC.")
    MONTH = strawberry.enum_value("month", description="Calendar month (UTC).")


_PERIOD_OF_BUCKET = {
    TimeBucket.DAY: MetricPeriod.DAILY,
    TimeBucket.WEEK: MetricPeriod.WEEKLY,
    TimeBucket.MONTH: MetricPeriod.MONTHLY,
}


def to_group_keys(group_by: list[DiscrepancyGroupBy]) -> list[DiscrepancyGroupKey]:
    return [DiscrepancyGroupKey[key.name] for key in group_by]


def to_period(bucket: TimeBucket | None) -> MetricPeriod | None:
    return None if bucket is None else _PERIOD_OF_BUCKET[bucket]


@strawberry.type(
    name="DiscrepancyStatsRow",
    description=(
        "One group of discrepancies. Key fields the query did not group by are null; a "
        "grouped key is null too for discrepancies without that value (componentType)."
    ),
)
class DiscrepancyStatsRowType:
    severity: SeverityLevel | None = desc("Severity of the group (when grouped by SEVERITY).")
    discrepancy_type: str | None = desc("Discrepancy type of the group (DISCREPANCY_TYPE).")
    component_type: str | None = desc("Component type of the group (COMPONENT_TYPE).")
    source_technology: TechnologyType | None = desc("Session source stack (SOURCE_TECHNOLOGY).")
    target_technology: TechnologyType | None = desc("Session target stack (TARGET_TECHNOLOGY).")
    scope: ValidationScope | None = desc("Session validation scope (SCOPE).")
    bucket_start: datetime | None = desc(
        "Start of the time bucket (UTC), when a bucket is asked for."
    )
    count: int = desc("Discrepancies in the group.")
    resolved_count: int = desc("Of which resolved.")

    @classmethod
    def from_row(cls, row: DiscrepancyStatsRow) -> Self:
        return cls(
            severity=row.severity,
            discrepancy_type=row.discrepancy_type,
            component_type=row.component_type,
            source_technology=row.source_technology,
            target_technology=row.target_technology,
            scope=row.scope,
            bucket_start=row.bucket_start,
            count=row.count,
            resolved_count=row.resolved_count,
        )
