"""validation_discrepancies: one difference found between source and target."""

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Field, Relationship, SQLModel

from persistence.enums import SeverityLevel
from persistence.models.base import created_at_column, updated_at_column
from persistence.sqltypes import JSONType, UTCDateTime, in_values_check, native_enum

if TYPE_CHECKING:
    from persistence.models.validation_result import ValidationResult
    from persistence.models.validation_session import ValidationSession

severity_level = native_enum(SeverityLevel, "severity_level")


class ValidationDiscrepancy(SQLModel, table=True):
    __tablename__ = "validation_discrepancies"
    __table_args__ = (
        sa.Index("ix_validation_discrepancies_session_id", "session_id"),
        sa.Index("ix_validation_discrepancies_created_at", "created_at"),  # live metrics windows
        # Foreign keys are indexed (design: "all foreign key columns"); SET NULL on
        # result delete would otherwise scan the table.
        sa.Index("ix_validation_discrepancies_result_id", "result_id"),
        sa.Index("ix_discrepancies_severity_type", "severity", "discrepancy_type"),
        sa.Index("ix_discrepancies_component_resolved", "component_type", "is_resolved"),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint(
            in_values_check("severity", SeverityLevel), name="severity_valid"
        ).ddl_if(dialect="sqlite"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    session_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("validation_sessions.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    result_id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("validation_results.id", ondelete="SET NULL")
        ),
    )

    discrepancy_type: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    severity: SeverityLevel = Field(sa_column=sa.Column(severity_level, nullable=False))
    description: str = Field(sa_column=sa.Column(sa.Text, nullable=False))

    source_element: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))
    target_element: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))

    recommendation: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    confidence: float = Field(
        default=1.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="1.0")
    )

    component_type: str | None = Field(default=None, sa_column=sa.Column(sa.String(50)))
    validation_context: Any = Field(default=None, sa_column=sa.Column(JSONType))

    is_resolved: bool = Field(
        default=False,
        sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()),
    )
    resolution_notes: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    resolved_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    resolved_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))

    # Optimistic concurrency: every resolve/reopen bumps it; a stale expected
    # version is a conflict.
    version: int = Field(
        default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1")
    )

    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())

    session: "ValidationSession" = Relationship(
        back_populates="discrepancies", sa_relationship_kwargs={"lazy": "raise"}
    )
    result: "ValidationResult" = Relationship(
        back_populates="discrepancies", sa_relationship_kwargs={"lazy": "raise"}
    )
