"""Column types shared by the tables: UTC timestamps, JSON, enums, server clock."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class utcnow(FunctionElement[datetime]):  # noqa: N801 - reads like a SQL function
    """The database clock in UTC, with microseconds on every dialect."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True


@compiles(utcnow, "postgresql")
def _utcnow_pg(_element: utcnow, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "now()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(_element: utcnow, _compiler: SQLCompiler, **_kw: Any) -> str:
    # strftime gives milliseconds; pad to the six digits SQLAlchemy writes so stored
    # values compare equal to bound ones (keyset cursors rely on it).
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects.

    SQLite has no timezone type: values are stored as UTC text and given tzinfo back
    on read. Naive datetimes are refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must carry a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.driver == "asyncpg":
            # asyncpg decodes timestamptz as an aware datetime in UTC: nothing to do
            # (a read of a thousand rows calls no per-value function).
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        tzinfo = value.tzinfo
        if tzinfo is UTC:
            return value
        if tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


E = TypeVar("E", bound=StrEnum)


class StrEnumType(sa.TypeDecorator[E]):
    """A VARCHAR holding a Python StrEnum value (CHECK constraints guard the column)."""

    impl = sa.String
    cache_ok = True

    def __init__(self, enum_cls: type[E], length: int = 50) -> None:
        super().__init__(length)
        self.enum_cls = enum_cls
        self._members: dict[str, E] = {member.value: member for member in enum_cls}

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return self.enum_cls(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        member = self._members.get(value)  # a dict lookup, not the enum's __call__
        return self.enum_cls(value) if member is None else member


def native_enum(enum_cls: type[StrEnum], name: str) -> sa.Enum:
    """A native PostgreSQL enum type; VARCHAR on SQLite (guarded by a CHECK)."""
    return sa.Enum(
        enum_cls,
        name=name,
        values_callable=lambda members: [m.value for m in members],
        create_constraint=False,
        validate_strings=True,
    )


def in_values_check(column: str, enum_cls: type[StrEnum]) -> str:
    """SQL text of a CHECK that ``column`` holds one of the enum's values."""
    values = ", ".join(f"'{m.value}'" for m in enum_cls)
    return f"{column} IN ({values})"
