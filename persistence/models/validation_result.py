"""validation_results: the outcome and fidelity score of one validation pass."""

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Field, Relationship, SQLModel

from persistence.enums import OverallStatus, ResultType
from persistence.models.base import created_at_column, updated_at_column
from persistence.sqltypes import JSONType, StrEnumType, in_values_check

if TYPE_CHECKING:
    from persistence.models.validation_discrepancy import ValidationDiscrepancy
    from persistence.models.validation_session import ValidationSession


class ValidationResult(SQLModel, table=True):
    __tablename__ = "validation_results"
    __table_args__ = (
        sa.Index("ix_validation_results_session_id", "session_id"),
        sa.Index("ix_validation_results_created_at", "created_at"),  # live metrics windows
        sa.Index("ix_validation_results_status_score", "overall_status", "fidelity_score"),
        sa.Index("ix_validation_results_type_created", "result_type", "created_at"),
        sa.CheckConstraint(
            "fidelity_score >= 0 AND fidelity_score <= 1", name="fidelity_score_range"
        ),
        sa.CheckConstraint(
            in_values_check("overall_status", OverallStatus), name="overall_status_valid"
        ),
        sa.CheckConstraint(in_values_check("result_type", ResultType), name="result_type_valid"),
        sa.CheckConstraint(
            "execution_time IS NULL OR execution_time >= 0", name="execution_time_non_negative"
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    # NOT NULL although the design leaves it nullable: a result without its session
    # cannot be reached or cleaned up (docs/decisions/0001-data-model-corrections.md).
    session_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("validation_sessions.id", ondelete="CASCADE"),
            nullable=False,
        )
    )

    overall_status: OverallStatus = Field(
        sa_column=sa.Column(StrEnumType(OverallStatus, 50), nullable=False)
    )
    fidelity_score: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    summary: str = Field(sa_column=sa.Column(sa.Text, nullable=False))

    source_representation: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_representation: Any = Field(default=None, sa_column=sa.Column(JSONType))

    execution_time: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    result_metadata: Any = Field(default=None, sa_column=sa.Column(JSONType))
    result_type: ResultType = Field(
        default=ResultType.STATIC,
        sa_column=sa.Column(StrEnumType(ResultType, 50), nullable=False, server_default="static"),
    )

    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())

    session: "ValidationSession" = Relationship(
        back_populates="results", sa_relationship_kwargs={"lazy": "raise"}
    )
    discrepancies: list["ValidationDiscrepancy"] = Relationship(
        back_populates="result", sa_relationship_kwargs={"lazy": "raise", "passive_deletes": True}
    )
