"""SQL for validation_results."""

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import ValidationResult
from persistence.records import Record, fetch_records
from persistence.repositories.base import group_in_key_order, one_per_key

R = ValidationResult
_TABLE: sa.Table = R.__table__  # type: ignore[attr-defined]


class ResultRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, values: Mapping[str, Any]) -> ValidationResult:
        stmt = sa.insert(R).values(**values).returning(R)
        return (await self.session.scalars(stmt)).one()

    async def list_by_ids(self, ids: Sequence[int]) -> list[Record | None]:
        rows = await fetch_records(self.session, sa.select(_TABLE).where(_c("id").in_(ids)))
        return one_per_key(rows, ids, lambda r: r.id)

    async def list_by_session_ids(self, session_ids: Sequence[int]) -> list[list[Record]]:
        """Each session's results, oldest first."""
        stmt = (
            sa.select(_TABLE)
            .where(_c("session_id").in_(session_ids))
            .order_by(_c("session_id"), _c("created_at"), _c("id"))
        )
        rows = await fetch_records(self.session, stmt)
        return group_in_key_order(rows, session_ids, lambda r: r.session_id)

    async def latest_by_session_ids(self, session_ids: Sequence[int]) -> list[Record | None]:
        """The newest result per session, one statement (ROW_NUMBER per session)."""
        table = _TABLE
        ranked = (
            sa.select(
                table,
                sa.func.row_number()
                .over(
                    partition_by=table.c.session_id,
                    order_by=[table.c.created_at.desc(), table.c.id.desc()],
                )
                .label("_rn"),
            )
            .where(table.c.session_id.in_(session_ids))
            .subquery("ranked")
        )
        columns = (ranked.c[c.name] for c in table.c)
        rows = await fetch_records(self.session, sa.select(*columns).where(ranked.c._rn == 1))
        return one_per_key(rows, session_ids, lambda r: r.session_id)


def _c(name: str) -> sa.Column[Any]:
    return R.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
