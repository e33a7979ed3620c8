"""SQL for validation_results."""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.driver_reads import FixedRead, any_of
from persistence.models import ValidationResult
from persistence.records import Record, fetch_records
from persistence.repositories.base import (
    Columns,
    dialect_name,
    group_in_key_order,
    one_per_key,
    rows_in,
    select_list,
)

R = ValidationResult
_TABLE: sa.Table = R.__table__  # type: ignore[attr-defined]


class ResultRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, values: Mapping[str, Any]) -> ValidationResult:
        stmt = sa.insert(R).values(**values).returning(R)
        return (await self.session.scalars(stmt)).one()

    async def list_by_ids(self, ids: Sequence[int]) -> list[Record | None]:
        rows = await rows_in(self.session, _TABLE, "id", ids)
        return one_per_key(rows, ids, lambda r: r.id)

    async def list_by_session_ids(
        self, session_ids: Sequence[int], columns: Columns = None
    ) -> list[list[Record]]:
        """Each session's results, oldest first."""
        order = ("session_id", "created_at", "id")
        rows = await rows_in(
            self.session, _TABLE, "session_id", session_ids, order, columns=columns
        )
        return group_in_key_order(rows, session_ids, lambda r: r.session_id)

    async def latest_by_session_ids(
        self, session_ids: Sequence[int], columns: Columns = None
    ) -> list[Record | None]:
        """The newest result per session, one statement (ROW_NUMBER per session)."""
        read = _latest_by_session_ids(dialect_name(self.session), columns)
        rows = await fetch_records(self.session, read, params={"keys": list(session_ids)})
        return one_per_key(rows, session_ids, lambda r: r.session_id)


@functools.lru_cache(maxsize=64)
def _latest_by_session_ids(dialect: str, columns: Columns) -> FixedRead:
    table = _TABLE
    # Narrow from the inner select: SQLite materializes a windowed subquery (wide
    # representation columns included) rather than flattening it.
    ranked = (
        sa.select(
            *select_list(table, table.c.keys(), columns, ("session_id",)),
            sa.func.row_number()
            .over(
                partition_by=table.c.session_id,
                order_by=[table.c.created_at.desc(), table.c.id.desc()],
            )
            .label("_rn"),
        )
        .where(any_of(table.c.session_id, "keys", dialect))
        .subquery("ranked")
    )
    selected = select_list(ranked, table.c.keys(), columns, ("session_id",))
    return FixedRead(sa.select(*selected).where(ranked.c._rn == 1))
