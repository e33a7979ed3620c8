"""Metadata shared by every table: constraint naming and the timestamp columns."""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import SQLModel

from persistence.sqltypes import UTCDateTime, utcnow

# Deterministic constraint names so migrations (and SQLite batch mode) can address them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = SQLModel.metadata


def created_at_column() -> sa.Column[datetime]:
    return sa.Column("created_at", UTCDateTime(), nullable=False, server_default=utcnow())


def updated_at_column() -> sa.Column[datetime]:
    # onupdate covers ORM and Core updates; a trigger (see the initial migration)
    # covers everything else, so updated_at is maintained on every update.
    return sa.Column(
        "updated_at",
        UTCDateTime(),
        nullable=False,
        server_default=utcnow(),
        onupdate=utcnow(),
    )
