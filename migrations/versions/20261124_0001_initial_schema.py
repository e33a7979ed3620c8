"""Initial schema: the five tables, four enum types, indexes and updated_at triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Self-contained on purpose (no imports from persistence/): a migration must keep
producing the same schema when the models move on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TECHNOLOGY = (
    "PYTHON_FLASK", "PYTHON_DJANGO", "JAVA_SPRING", "CSHARP_DOTNET", "PHP_LARAVEL",
    "JAVASCRIPT_REACT", "JAVASCRIPT_VUE", "JAVASCRIPT_ANGULAR", "TYPESCRIPT_REACT",
    "TYPESCRIPT_VUE", "TYPESCRIPT_ANGULAR",
)
SCOPE = (
    "UI_LAYOUT", "BACKEND_FUNCTIONALITY", "DATA_STRUCTURE", "API_ENDPOINTS",
    "BUSINESS_LOGIC", "BEHAVIORAL_VALIDATION", "FULL_SYSTEM",
)
INPUT = ("CODE_FILES", "SCREENSHOTS", "HYBRID")
SEVERITY = ("CRITICAL", "WARNING", "INFO")
NATIVE_ENUMS = {
    "technology_type": TECHNOLOGY,
    "validation_scope": SCOPE,
    "input_type": INPUT,
    "severity_level": SEVERITY,
}
SESSION_STATUS = ("pending", "processing", "completed", "failed", "cancelled")
OVERALL_STATUS = ("approved", "approved_with_warnings", "rejected", "error")
RESULT_TYPE = ("static", "behavioral", "hybrid")
EXECUTION_STATUS = ("passed", "failed", "error", "skipped", "timeout")
METRIC_PERIOD = ("daily", "weekly", "monthly")

TABLES = (
    "validation_sessions",
    "validation_results",
    "validation_discrepancies",
    "behavioral_test_results",
    "validation_metrics",
)


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _json() -> sa.types.TypeEngine[object]:
    return postgresql.JSONB() if _is_pg() else sa.JSON()


def _enum(name: str) -> sa.types.TypeEngine[str]:
    if _is_pg():
        return postgresql.ENUM(*NATIVE_ENUMS[name], name=name, create_type=False)
    return sa.String(max(len(v) for v in NATIVE_ENUMS[name]))


def _enum_checks(table: str, columns: dict[str, str]) -> list[sa.CheckConstraint]:
    """SQLite has no enum types: the same values are enforced by CHECK constraints."""
    if _is_pg():
        return []
    return [
        sa.CheckConstraint(_in(col, NATIVE_ENUMS[enum]), name=op.f(f"ck_{table}_{col}_valid"))
        for col, enum in columns.items()
    ]


def _now() -> sa.TextClause:
    if _is_pg():
        return sa.text("now()")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')")


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
    ]


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def upgrade() -> None:
    if _is_pg():
        bind = op.get_bind()
        for name, values in NATIVE_ENUMS.items():
            postgresql.ENUM(*values, name=name).create(bind)

    op.create_table(
        "validation_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(50), server_default="pending", nullable=False),
        sa.Column("source_technology", _enum("technology_type"), nullable=False),
        sa.Column("source_technology_version", sa.String(100)),
        sa.Column("source_framework_details", _json()),
        sa.Column("target_technology", _enum("technology_type"), nullable=False),
        sa.Column("target_technology_version", sa.String(100)),
        sa.Column("target_framework_details", _json()),
        sa.Column("validation_scope", _enum("validation_scope"), nullable=False),
        sa.Column("source_input_type", _enum("input_type"), nullable=False),
        sa.Column("source_files", _json()),
        sa.Column("source_screenshots", _json()),
        sa.Column("source_urls", _json()),
        sa.Column("source_metadata", _json()),
        sa.Column("target_input_type", _enum("input_type"), nullable=False),
        sa.Column("target_files", _json()),
        sa.Column("target_screenshots", _json()),
        sa.Column("target_urls", _json()),
        sa.Column("target_metadata", _json()),
        sa.Column("validation_scenarios", _json()),
        sa.Column("behavioral_timeout", sa.Integer(), server_default="300"),
        sa.Column("processing_log", _json()),
        sa.Column("execution_time", sa.Float()),
        sa.Column("session_metadata", _json()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_validation_sessions"),
        sa.CheckConstraint(_in("status", SESSION_STATUS), name=op.f("ck_validation_sessions_status_valid")),
        sa.CheckConstraint("behavioral_timeout IS NULL OR behavioral_timeout > 0", name=op.f("ck_validation_sessions_behavioral_timeout_positive")),
        sa.CheckConstraint("execution_time IS NULL OR execution_time >= 0", name=op.f("ck_validation_sessions_execution_time_non_negative")),
        *_enum_checks(
            "validation_sessions",
            {
                "source_technology": "technology_type",
                "target_technology": "technology_type",
                "validation_scope": "validation_scope",
                "source_input_type": "input_type",
                "target_input_type": "input_type",
            },
        ),
    )
    op.create_index("ix_validation_sessions_request_id", "validation_sessions", ["request_id"], unique=True)
    op.create_index("ix_validation_sessions_status_created", "validation_sessions", ["status", "created_at"])
    op.create_index("ix_validation_sessions_technologies", "validation_sessions", ["source_technology", "target_technology"])
    op.create_index("ix_validation_sessions_created_id", "validation_sessions", ["created_at", "id"])
    if _is_pg():
        # docs/decisions/0002-json-indexes.md: btree on the ->> text expression, GIN on
        # the whole document (the design's GIN over ->> text cannot be created).
        op.create_index("ix_session_metadata_type", "validation_sessions", [sa.text("(session_metadata ->> 'type')")])
        op.create_index(
            "ix_validation_scenarios", "validation_sessions", ["validation_scenarios"],
            postgresql_using="gin", postgresql_ops={"validation_scenarios": "jsonb_path_ops"},
        )

    op.create_table(
        "validation_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("overall_status", sa.String(50), nullable=False),
        sa.Column("fidelity_score", sa.Float(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("source_representation", _json()),
        sa.Column("target_representation", _json()),
        sa.Column("execution_time", sa.Float()),
        sa.Column("result_metadata", _json()),
        sa.Column("result_type", sa.String(50), server_default="static", nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_validation_results"),
        sa.ForeignKeyConstraint(["session_id"], ["validation_sessions.id"], name="fk_validation_results_session_id_validation_sessions", ondelete="CASCADE"),
        sa.CheckConstraint("fidelity_score >= 0 AND fidelity_score <= 1", name=op.f("ck_validation_results_fidelity_score_range")),
        sa.CheckConstraint(_in("overall_status", OVERALL_STATUS), name=op.f("ck_validation_results_overall_status_valid")),
        sa.CheckConstraint(_in("result_type", RESULT_TYPE), name=op.f("ck_validation_results_result_type_valid")),
        sa.CheckConstraint("execution_time IS NULL OR execution_time >= 0", name=op.f("ck_validation_results_execution_time_non_negative")),
    )
    op.create_index("ix_validation_results_session_id", "validation_results", ["session_id"])
    op.create_index("ix_validation_results_status_score", "validation_results", ["overall_status", "fidelity_score"])
    op.create_index("ix_validation_results_type_created", "validation_results", ["result_type", "created_at"])

    op.create_table(
        "validation_discrepancies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer()),
        sa.Column("discrepancy_type", sa.String(100), nullable=False),
        sa.Column("severity", _enum("severity_level"), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source_element", sa.String(500)),
        sa.Column("target_element", sa.String(500)),
        sa.Column("recommendation", sa.Text()),
        sa.Column("confidence", sa.Float(), server_default="1.0", nullable=False),
        sa.Column("component_type", sa.String(50)),
        sa.Column("validation_context", _json()),
        sa.Column("is_resolved", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("resolution_notes", sa.Text()),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.String(255)),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_validation_discrepancies"),
        sa.ForeignKeyConstraint(["session_id"], ["validation_sessions.id"], name="fk_validation_discrepancies_session_id_validation_sessions", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["result_id"], ["validation_results.id"], name="fk_validation_discrepancies_result_id_validation_results", ondelete="SET NULL"),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name=op.f("ck_validation_discrepancies_confidence_range")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_validation_discrepancies_version_positive")),
        *_enum_checks("validation_discrepancies", {"severity": "severity_level"}),
    )
    op.create_index("ix_validation_discrepancies_session_id", "validation_discrepancies", ["session_id"])
    op.create_index("ix_validation_discrepancies_result_id", "validation_discrepancies", ["result_id"])
    op.create_index("ix_discrepancies_severity_type", "validation_discrepancies", ["severity", "discrepancy_type"])
    op.create_index("ix_discrepancies_component_resolved", "validation_discrepancies", ["component_type", "is_resolved"])

    op.create_table(
        "behavioral_test_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("scenario_name", sa.String(255), nullable=False),
        sa.Column("scenario_description", sa.Text()),
        sa.Column("source_url", sa.String(1000), nullable=False),
        sa.Column("target_url", sa.String(1000), nullable=False),
        sa.Column("execution_status", sa.String(50), nullable=False),
        sa.Column("source_result", _json()),
        sa.Column("target_result", _json()),
        sa.Column("comparison_result", _json()),
        sa.Column("source_screenshots", _json()),
        sa.Column("target_screenshots", _json()),
        sa.Column("interaction_log", _json()),
        sa.Column("source_load_time", sa.Float()),
        sa.Column("target_load_time", sa.Float()),
        sa.Column("execution_duration", sa.Float()),
        sa.Column("error_message", sa.Text()),
        sa.Column("error_stack_trace", sa.Text()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_behavioral_test_results"),
        sa.ForeignKeyConstraint(["session_id"], ["validation_sessions.id"], name="fk_behavioral_test_results_session_id_validation_sessions", ondelete="CASCADE"),
        sa.CheckConstraint(_in("execution_status", EXECUTION_STATUS), name=op.f("ck_behavioral_test_results_execution_status_valid")),
        sa.CheckConstraint(
            "(source_load_time IS NULL OR source_load_time >= 0)"
            " AND (target_load_time IS NULL OR target_load_time >= 0)"
            " AND (execution_duration IS NULL OR execution_duration >= 0)",
            name=op.f("ck_behavioral_test_results_durations_non_negative"),
        ),
    )
    op.create_index("ix_behavioral_test_results_session_id", "behavioral_test_results", ["session_id"])

    op.create_table(
        "validation_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("metric_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric_period", sa.String(20), nullable=False),
        _count("total_sessions"),
        _count("completed_sessions"),
        _count("failed_sessions"),
        _count("approved_count"),
        _count("approved_with_warnings_count"),
        _count("rejected_count"),
        sa.Column("avg_execution_time", sa.Float()),
        sa.Column("max_execution_time", sa.Float()),
        sa.Column("min_execution_time", sa.Float()),
        sa.Column("avg_fidelity_score", sa.Float()),
        sa.Column("max_fidelity_score", sa.Float()),
        sa.Column("min_fidelity_score", sa.Float()),
        sa.Column("technology_breakdown", _json()),
        sa.Column("scope_breakdown", _json()),
        _count("total_discrepancies"),
        _count("critical_discrepancies"),
        _count("warning_discrepancies"),
        _count("info_discrepancies"),
        sa.Column("additional_metrics", _json()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_validation_metrics"),
        sa.UniqueConstraint("metric_date", "metric_period", name="uq_validation_metrics_metric_date_metric_period"),
        sa.CheckConstraint(_in("metric_period", METRIC_PERIOD), name=op.f("ck_validation_metrics_metric_period_valid")),
    )

    _create_updated_at_triggers()


def _create_updated_at_triggers() -> None:
    """updated_at is maintained by the database on every UPDATE, whoever issues it."""
    if _is_pg():
        op.execute(
            "CREATE FUNCTION migval_set_updated_at() RETURNS trigger LANGUAGE plpgsql AS "
            # Only when the statement left updated_at alone, as on SQLite.
            "$$ BEGIN IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN "
            "NEW.updated_at = now(); END IF; RETURN NEW; END $$"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION migval_set_updated_at()"
            )
        return
    for table in TABLES:
        # Fires only when the statement left updated_at alone (the ORM sets it itself);
        # recursive_triggers is off, so the inner UPDATE does not re-fire it.
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at AFTER UPDATE ON {table} "
            "FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at BEGIN "
            f"UPDATE {table} SET updated_at = (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') "
            "WHERE id = NEW.id; END"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_updated_at" + (f" ON {table}" if _is_pg() else ""))
    if _is_pg():
        op.execute("DROP FUNCTION IF EXISTS migval_set_updated_at()")
    # Children first; dropping a table drops its indexes and constraints.
    for table in (
        "validation_discrepancies",
        "behavioral_test_results",
        "validation_results",
        "validation_sessions",
        "validation_metrics",
    ):
        op.drop_table(table)
    if _is_pg():
        bind = op.get_bind()
        for name in NATIVE_ENUMS:
            postgresql.ENUM(name=name).drop(bind, checkfirst=True)
