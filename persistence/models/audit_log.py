"""audit_log: append-only record of every successful mutation."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from persistence.models.base import created_at_column
from persistence.sqltypes import JSONType


class AuditLogEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_created_id", "created_at", "id"),
        sa.Index("ix_audit_log_entity", "entity_type", "entity_id"),
    )

    # BIGINT on PostgreSQL (it only grows); SQLite's rowid is 64-bit already.
    id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    )
    actor_token_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    actor_name: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    actor_role: str | None = Field(default=None, sa_column=sa.Column(sa.String(20)))
    operation: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    entity_type: str = Field(sa_column=sa.Column(sa.String(50), nullable=False))
    entity_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    before: Any = Field(default=None, sa_column=sa.Column(JSONType))
    after: Any = Field(default=None, sa_column=sa.Column(JSONType))
    request_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    client_address: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
