"""validation_sessions: one validation run of a source against a target application."""

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Field, Relationship, SQLModel

from persistence.enums import InputType, SessionStatus, TechnologyType, ValidationScope
from persistence.models.base import created_at_column, updated_at_column
from persistence.sqltypes import JSONType, StrEnumType, in_values_check, native_enum

if TYPE_CHECKING:
    from persistence.models.behavioral_test_result import BehavioralTestResult
    from persistence.models.validation_discrepancy import ValidationDiscrepancy
    from persistence.models.validation_result import ValidationResult

technology_type = native_enum(TechnologyType, "technology_type")
validation_scope = native_enum(ValidationScope, "validation_scope")
input_type = native_enum(InputType, "input_type")

_RAISE: dict[str, Any] = {"lazy": "raise", "passive_deletes": True}


class ValidationSession(SQLModel, table=True):
    __tablename__ = "validation_sessions"
    __table_args__ = (
        sa.Index("ix_validation_sessions_request_id", "request_id", unique=True),
        sa.Index("ix_validation_sessions_status_created", "status", "created_at"),
        sa.Index("ix_validation_sessions_technologies", "source_technology", "target_technology"),
        # Keyset pagination of the session list walks (created_at, id).
        sa.Index("ix_validation_sessions_created_id", "created_at", "id"),
        sa.Index("ix_session_metadata_type", sa.text("(session_metadata ->> 'type')")).ddl_if(
            dialect="postgresql"
        ),
        sa.Index(
            "ix_validation_scenarios",
            "validation_scenarios",
            postgresql_using="gin",
            postgresql_ops={"validation_scenarios": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
        sa.CheckConstraint(in_values_check("status", SessionStatus), name="status_valid"),
        sa.CheckConstraint(
            "behavioral_timeout IS NULL OR behavioral_timeout > 0",
            name="behavioral_timeout_positive",
        ),
        sa.CheckConstraint(
            "execution_time IS NULL OR execution_time >= 0", name="execution_time_non_negative"
        ),
        sa.CheckConstraint(
            in_values_check("source_technology", TechnologyType), name="source_technology_valid"
        ).ddl_if(dialect="sqlite"),
        sa.CheckConstraint(
            in_values_check("target_technology", TechnologyType), name="target_technology_valid"
        ).ddl_if(dialect="sqlite"),
        sa.CheckConstraint(
            in_values_check("validation_scope", ValidationScope), name="validation_scope_valid"
        ).ddl_if(dialect="sqlite"),
        sa.CheckConstraint(
            in_values_check("source_input_type", InputType), name="source_input_type_valid"
        ).ddl_if(dialect="sqlite"),
        sa.CheckConstraint(
            in_values_check("target_input_type", InputType), name="target_input_type_valid"
        ).ddl_if(dialect="sqlite"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    request_id: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    status: SessionStatus = Field(
        default=SessionStatus.PENDING,
        sa_column=sa.Column(
            StrEnumType(SessionStatus, 50), nullable=False, server_default="pending"
        ),
    )

    source_technology: TechnologyType = Field(sa_column=sa.Column(technology_type, nullable=False))
    source_technology_version: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    source_framework_details: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_technology: TechnologyType = Field(sa_column=sa.Column(technology_type, nullable=False))
    target_technology_version: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    target_framework_details: Any = Field(default=None, sa_column=sa.Column(JSONType))

    validation_scope: ValidationScope = Field(sa_column=sa.Column(validation_scope, nullable=False))

    source_input_type: InputType = Field(sa_column=sa.Column(input_type, nullable=False))
    source_files: Any = Field(default=None, sa_column=sa.Column(JSONType))
    source_screenshots: Any = Field(default=None, sa_column=sa.Column(JSONType))
    source_urls: Any = Field(default=None, sa_column=sa.Column(JSONType))
    source_metadata: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_input_type: InputType = Field(sa_column=sa.Column(input_type, nullable=False))
    target_files: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_screenshots: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_urls: Any = Field(default=None, sa_column=sa.Column(JSONType))
    target_metadata: Any = Field(default=None, sa_column=sa.Column(JSONType))
    validation_scenarios: Any = Field(default=None, sa_column=sa.Column(JSONType))
    behavioral_timeout: int | None = Field(
        default=300, sa_column=sa.Column(sa.Integer, server_default="300")
    )

    processing_log: Any = Field(default=None, sa_column=sa.Column(JSONType))
    execution_time: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    session_metadata: Any = Field(default=None, sa_column=sa.Column(JSONType))

    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())

    results: list["ValidationResult"] = Relationship(
        back_populates="session", sa_relationship_kwargs=_RAISE
    )
    discrepancies: list["ValidationDiscrepancy"] = Relationship(
        back_populates="session", sa_relationship_kwargs=_RAISE
    )
    behavioral_tests: list["BehavioralTestResult"] = Relationship(
        back_populates="session", sa_relationship_kwargs=_RAISE
    )
