"""idempotency_keys: the outcome of a write mutation, remembered under the key its
client sent, so a retry with the same key replays it instead of writing again.

A row is inserted and completed in the same transaction as the write it guards
(persistence.idempotency), so a key exists only for a committed write. Keys are
scoped per actor (``scope``), expire at ``expires_at`` and are then ignored (and
purged by ``persistence.idempotency.purge_expired_idempotency_keys``).
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from persistence.models.base import created_at_column
from persistence.sqltypes import JSONType, UTCDateTime


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # The claim is INSERT ... ON CONFLICT (scope, key) DO NOTHING.
        sa.UniqueConstraint("scope", "key"),
        # The purge deletes by expiry.
        sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
        sa.CheckConstraint("length(key) >= 1", name="key_not_empty"),
        sa.CheckConstraint("length(request_hash) = 64", name="request_hash_sha256"),
    )

    # BIGINT on PostgreSQL (one row per keyed write); SQLite's rowid is 64-bit already.
    id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    )
    # Whose key it is: "token:<api token id>", or "anonymous".
    scope: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    # The GraphQL mutation (createValidationSession, ...).
    operation: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    # SHA-256 (hex) of the canonical JSON of the operation and its input, key excluded.
    request_hash: str = Field(sa_column=sa.Column(sa.CHAR(64), nullable=False))
    # What the first response returned: its shape and the ids of its object(s).
    # NULL only inside the transaction that claimed the key.
    result_type: str | None = Field(default=None, sa_column=sa.Column(sa.String(50)))
    result_ids: Any = Field(default=None, sa_column=sa.Column(JSONType))
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
