"""API tokens and the append-only audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

On PostgreSQL, UPDATE and DELETE on audit_log raise unless the transaction first runs
``SET LOCAL migval.audit_maintenance = 'on'`` (docs/decisions/0004-audit-log.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("viewer", "writer", "admin")


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _now() -> sa.TextClause:
    if _is_pg():
        return sa.text("now()")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_prefix", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name=op.f("ck_api_tokens_role_valid")),
    )
    op.create_index("ix_api_tokens_token_hash", "api_tokens", ["token_hash"], unique=True)
    op.create_index("ix_api_tokens_name", "api_tokens", ["name"], unique=True)

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_token_id", sa.Integer()),
        sa.Column("actor_name", sa.String(100), nullable=False),
        sa.Column("actor_role", sa.String(20)),
        sa.Column("operation", sa.String(100), nullable=False),
        sa.Column("entity_type", sa.String(50), nullable=False),
        sa.Column("entity_id", sa.String(64)),
        sa.Column("before", postgresql.JSONB() if _is_pg() else sa.JSON()),
        sa.Column("after", postgresql.JSONB() if _is_pg() else sa.JSON()),
        sa.Column("request_id", sa.String(64)),
        sa.Column("client_address", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_created_id", "audit_log", ["created_at", "id"])
    op.create_index("ix_audit_log_entity", "audit_log", ["entity_type", "entity_id"])

    if _is_pg():
        op.execute(
            "CREATE TRIGGER trg_api_tokens_updated_at BEFORE UPDATE ON api_tokens "
            "FOR EACH ROW EXECUTE FUNCTION migval_set_updated_at()"
        )
        op.execute(
            "CREATE FUNCTION migval_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN "
            "IF coalesce(current_setting('migval.audit_maintenance', true), '') <> 'on' THEN "
            "RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege'; "
            "END IF; "
            "RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END; "
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER trg_audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION migval_audit_log_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER trg_api_tokens_updated_at AFTER UPDATE ON api_tokens "
            "FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at BEGIN "
            "UPDATE api_tokens SET updated_at = (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') "
            "WHERE id = NEW.id; END"
        )


def downgrade() -> None:
    if _is_pg():
        op.execute("DROP TRIGGER IF EXISTS trg_audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS migval_audit_log_append_only()")
        op.execute("DROP TRIGGER IF EXISTS trg_api_tokens_updated_at ON api_tokens")
    else:
        op.execute("DROP TRIGGER IF EXISTS trg_api_tokens_updated_at")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
