"""behavioral_test_results: one scenario executed against source and target."""

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Field, Relationship, SQLModel

from persistence.enums import ExecutionStatus
from persistence.models.base import created_at_column, updated_at_column
from persistence.sqltypes import JSONType, StrEnumType, in_values_check

if TYPE_CHECKING:
    from persistence.models.validation_session import ValidationSession


class BehavioralTestResult(SQLModel, table=True):
    __tablename__ = "behavioral_test_results"
    __table_args__ = (
        # Not named in the design; foreign keys are indexed (loaders batch on it).
        sa.Index("ix_behavioral_test_results_session_id", "session_id"),
        sa.Index("ix_behavioral_test_results_created_at", "created_at"),  # live metrics windows
        sa.CheckConstraint(
            in_values_check("execution_status", ExecutionStatus), name="execution_status_valid"
        ),
        sa.CheckConstraint(
            "(source_load_time IS NULL OR source_load_time >= 0)"
            " AND (target_load_time IS NULL OR target_load_time >= 0)"
            " AND (execution_duration IS NULL OR execution_duration >= 0)",
            name="durations_non_negative",
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    session_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("validation_sessions.id", ondelete="CASCADE"),
            nullable=False,
        )
    )

    scenario_name: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    scenario_description: str | None = Field(default=None, sa_column=sa.Column(sa.Text))

    source_url: str = Field(sa_column=sa.Column(sa.String(1000), nullable=False))
    target_url: str = Field(sa_column=sa.Column(sa.String(1000), nullable=False))
    execution_status: ExecutionStatus = Field(
        sa_column=sa.Column(StrEnumType(ExecutionStatus, 50), nullable=False)
    )

    source_result: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_result: Any = Field(default=None, sa_column=sa.Column(JSONType))
    comparison_result: Any = Field(default=None, sa_column=sa.Column(JSONType))

    source_screenshots: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_screenshots: Any = Field(default=None, sa_column=sa.Column(JSONType))
    interaction_log: Any = Field(default=None, sa_column=sa.Column(JSONType))

    source_load_time: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    target_load_time: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    execution_duration: float | None = Field(default=None, sa_column=sa.Column(sa.Float))

    error_message: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    error_stack_trace: str | None = Field(default=None, sa_column=sa.Column(sa.Text))

    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())

    session: "ValidationSession" = Relationship(
        back_populates="behavioral_tests", sa_relationship_kwargs={"lazy": "raise"}
    )
