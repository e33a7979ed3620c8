"""ValidationMetric: aggregated figures of one day, ISO week or month (UTC)."""

from datetime import datetime

import strawberry

from graph.types.common import JSON, FromRow, MetricPeriod, Node, desc


@strawberry.type(description="Aggregated figures of one period.")
class ValidationMetric(Node, FromRow):
    database_id: int = desc("Database primary key.")
    metric_date: datetime = desc("Start of the period (UTC).")
    metric_period: MetricPeriod = desc("Length of the period.")
    total_sessions: int = desc("Sessions created in the period.")
    completed_sessions: int = desc("Of which completed.")
    failed_sessions: int = desc("Of which failed.")
    approved_count: int = desc("Results approved.")
    approved_with_warnings_count: int = desc("Results approved with warnings.")
    rejected_count: int = desc("Results rejected.")
    avg_execution_time: float | None = desc("Mean session execution time, seconds.")
    max_execution_time: float | None = desc("Longest session execution time, seconds.")
    min_execution_time: float | None = desc("Shortest session execution time, seconds.")
    avg_fidelity_score: float | None = desc("Mean fidelity score.")
    max_fidelity_score: float | None = desc("Highest fidelity score.")
    min_fidelity_score: float | None = desc("Lowest fidelity score.")
    technology_breakdown: JSON | None = desc("Session counts per source->target technology.")
    scope_breakdown: JSON | None = desc("Session counts per validation scope.")
    total_discrepancies: int = desc("Discrepancies recorded.")
    critical_discrepancies: int = desc("Of which critical.")
    warning_discrepancies: int = desc("Of which warnings.")
    info_discrepancies: int = desc("Of which informational.")
    additional_metrics: JSON | None = desc("Other figures.")
    created_at: datetime = desc("When the row was computed (UTC).")
    updated_at: datetime = desc("When the row was last recomputed (UTC).")
