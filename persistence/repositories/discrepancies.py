"""SQL for validation_discrepancies, including bulk insert and resolution updates."""

import json
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.driver import copy_records
from persistence.filters import DiscrepancyFilter, IdOrder
from persistence.models import ValidationDiscrepancy
from persistence.pagination import Keyset, Page
from persistence.records import Record
from persistence.repositories.base import (
    Columns,
    dialect_name,
    group_in_key_order,
    keyset_page,
    one_per_key,
    pages_by_parent,
    rows_in,
)
from persistence.validation import SERVER_MANAGED

D = ValidationDiscrepancy
_TABLE: sa.Table = D.__table__  # type: ignore[attr-defined]

# Columns a bulk insert writes: the table's own but those the database manages and
# the resolution state (a new discrepancy is open), in table order.
RESOLUTION_STATE = frozenset({"is_resolved", "resolution_notes", "resolved_at", "resolved_by"})
BULK_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in _TABLE.c if c.name not in SERVER_MANAGED | RESOLUTION_STATE
)
BULK_DEFAULTS: dict[str, Any] = {"confidence": 1.0}
_SQLITE_BULK_INSERT = (
    f"INSERT INTO {_TABLE.name} ({', '.join(BULK_COLUMNS)}) "  # noqa: S608 - fixed identifiers
    f"VALUES ({', '.join('?' * len(BULK_COLUMNS))})"
)


class DiscrepancyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, discrepancy_id: int) -> ValidationDiscrepancy | None:
        return await self.session.get(D, discrepancy_id)

    async def list_by_ids(self, ids: Sequence[int]) -> list[Record | None]:
        rows = await rows_in(self.session, _TABLE, "id", ids)
        return one_per_key(rows, ids, lambda d: d.id)

    async def list_by_result_ids(
        self, result_ids: Sequence[int], columns: Columns = None
    ) -> list[list[Record]]:
        rows = await rows_in(
            self.session, _TABLE, "result_id", result_ids, ("id",), columns=columns
        )
        return group_in_key_order(rows, result_ids, lambda d: d.result_id)

    async def list_page(
        self,
        filter_: DiscrepancyFilter,
        order: IdOrder,
        first: int,
        after: Keyset | None,
        columns: Columns = None,
    ) -> Page[Record]:
        return await keyset_page(
            self.session,
            D,
            discrepancy_conditions,
            filter_,
            "id",
            order.direction,
            first,
            after,
            columns=columns,
        )

    async def pages_by_session_ids(
        self,
        session_ids: Sequence[int],
        filter_: DiscrepancyFilter,
        order: IdOrder,
        first: int,
        after: Keyset | None,
        columns: Columns = None,
        raw: bool = False,
    ) -> list[Page[Record]]:
        return await pages_by_parent(
            self.session,
            D,
            _c("session_id"),
            session_ids,
            discrepancy_conditions,
            filter_,
            order.direction,
            first,
            after,
            columns,
            raw,
        )

    async def bulk_insert(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert many rows in the caller's transaction, as the raw-driver floors of
        bench/ do: one binary COPY on PostgreSQL, one executemany of plain values on
        SQLite (no per-row SQLAlchemy parameter processing). A bad row fails the
        whole statement. On PostgreSQL ``rows`` is consumed as COPY streams (a
        generator's checks run while the server inserts the rows before); an
        exception it raises aborts the COPY and comes out as itself."""
        if isinstance(rows, Sized) and not rows:
            return 0
        if dialect_name(self.session) == "postgresql":
            count = 0

            def records() -> Iterator[tuple[Any, ...]]:
                nonlocal count
                for row in rows:
                    count += 1
                    yield _driver_record(row)

            await copy_records(self.session, _TABLE.name, BULK_COLUMNS, records())
            return count
        values = [_driver_record(row) for row in rows]
        if values:
            conn = await self.session.connection()
            await conn.exec_driver_sql(_SQLITE_BULK_INSERT, values)
        return len(values)

    async def set_resolution(
        self,
        ids: Sequence[int],
        *,
        resolved: bool,
        resolved_by: str | None,
        notes: str | None,
        at: datetime | None,
        expected_version: int | None = None,
        only_if_resolved: bool | None = None,
    ) -> list[ValidationDiscrepancy]:
        """Resolve or reopen rows, bumping ``version``; returns the rows changed.
        ``expected_version`` makes it a compare-and-set (optimistic concurrency);
        ``only_if_resolved`` restricts to rows currently in that state."""
        conds: list[sa.ColumnElement[bool]] = [_c("id").in_(ids)]
        if expected_version is not None:
            conds.append(_c("version") == expected_version)
        if only_if_resolved is not None:
            conds.append(_c("is_resolved").is_(only_if_resolved))
        stmt = (
            sa.update(D)
            .where(*conds)
            .values(
                is_resolved=resolved,
                resolved_by=resolved_by,
                resolution_notes=notes,
                resolved_at=at,
                version=_c("version") + 1,
            )
            .returning(D)
            .execution_options(synchronize_session=False)
        )
        return list((await self.session.scalars(stmt)).all())

    async def existing_ids(self, ids: Sequence[int]) -> set[int]:
        rows = await self.session.scalars(sa.select(_c("id")).where(_c("id").in_(ids)))
        return set(rows)


def discrepancy_conditions(f: DiscrepancyFilter) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if f.severities:
        conds.append(_c("severity").in_(f.severities))
    if f.discrepancy_types:
        conds.append(_c("discrepancy_type").in_(f.discrepancy_types))
    if f.component_types:
        conds.append(_c("component_type").in_(f.component_types))
    if f.is_resolved is not None:
        conds.append(_c("is_resolved").is_(f.is_resolved))
    if f.session_ids is not None:
        conds.append(_c("session_id").in_(f.session_ids))
    if f.result_ids is not None:
        conds.append(_c("result_id").in_(f.result_ids))
    return conds


def _driver_record(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A bulk row's values as both drivers take them, in BULK_COLUMNS order: the table
    defaults for absent columns, then the few columns that need converting (picked
    in C, not one Python call per column: 10,000 rows x 14 columns)."""
    values = list(_PICK_BULK({**_BULK_BASE, **row}))
    for index, convert in _BULK_CONVERT:
        if values[index] is not None:  # SQL NULL stays NULL
            values[index] = convert(values[index])
    return tuple(values)


def _json_text(value: Any) -> str:
    """JSON travels as text. orjson (compact, UTF-8) is several times faster than the
    stdlib on 10,000 values; the value was checked (persistence.validation), so only
    integers beyond 64 bits are left for the stdlib."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value)


_PICK_BULK = operator.itemgetter(*BULK_COLUMNS)
_BULK_BASE: dict[str, Any] = {name: BULK_DEFAULTS.get(name) for name in BULK_COLUMNS}
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "validation_context": _json_text,
    "severity": str,  # the enum member's value
    "confidence": float,
}
_BULK_CONVERT = tuple((BULK_COLUMNS.index(name), f) for name, f in _CONVERTERS.items())


def _c(name: str) -> sa.Column[Any]:
    return D.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
