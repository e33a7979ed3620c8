"""api_tokens: bearer tokens for the API, stored only as SHA-256 hashes."""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from persistence.enums import Role
from persistence.models.base import created_at_column, updated_at_column
from persistence.sqltypes import StrEnumType, UTCDateTime, in_values_check


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"
    __table_args__ = (
        sa.Index("ix_api_tokens_token_hash", "token_hash", unique=True),
        sa.Index("ix_api_tokens_name", "name", unique=True),
        sa.CheckConstraint(in_values_check("role", Role), name="role_valid"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    role: Role = Field(sa_column=sa.Column(StrEnumType(Role, 20), nullable=False))
    # First characters of the token, safe to show in listings ("mvt_AbCd...").
    token_prefix: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    last_used_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())
