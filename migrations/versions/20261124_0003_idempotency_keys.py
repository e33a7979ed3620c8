"""Idempotency keys of write mutations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

One row per (scope, key): the operation, the SHA-256 of its input and the ids of what
the first response returned. Rows are written in the same transaction as the write
they guard (persistence/idempotency.py; docs/decisions/0003-in-memory-fallback-replaced.md).

Self-contained on purpose (no imports from persistence/), like 0001 and 0002.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _now() -> sa.TextClause:
    if _is_pg():
        return sa.text("now()")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')")


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(100), nullable=False),
        sa.Column("request_hash", sa.CHAR(64), nullable=False),
        sa.Column("result_type", sa.String(50)),
        sa.Column("result_ids", postgresql.JSONB() if _is_pg() else sa.JSON()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
        sa.UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),
        sa.CheckConstraint("length(key) >= 1", name=op.f("ck_idempotency_keys_key_not_empty")),
        sa.CheckConstraint("length(request_hash) = 64", name=op.f("ck_idempotency_keys_request_hash_sha256")),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
