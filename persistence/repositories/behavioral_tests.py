"""SQL for behavioral_test_results."""

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.filters import BehavioralTestFilter, IdOrder
from persistence.models import BehavioralTestResult
from persistence.pagination import Keyset, Page
from persistence.repositories.base import group_in_key_order, keyset_page, one_per_key

B = BehavioralTestResult


class BehavioralTestRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> list[BehavioralTestResult]:
        if not rows:
            return []
        # One INSERT ... RETURNING per row keeps ids in input order on both dialects
        # (behavioral batches are small; discrepancies use bulk_insert).
        out = []
        for row in rows:
            stmt = sa.insert(B).values(**row).returning(B)
            out.append((await self.session.scalars(stmt)).one())
        return out

    async def list_by_ids(self, ids: Sequence[int]) -> list[BehavioralTestResult | None]:
        rows = await self.session.scalars(sa.select(B).where(_c("id").in_(ids)))
        return one_per_key(rows, ids, lambda b: b.id)

    async def list_by_session_ids(
        self, session_ids: Sequence[int]
    ) -> list[list[BehavioralTestResult]]:
        stmt = (
            sa.select(B)
            .where(_c("session_id").in_(session_ids))
            .order_by(_c("session_id"), _c("id"))
        )
        rows = await self.session.scalars(stmt)
        return group_in_key_order(rows, session_ids, lambda b: b.session_id)

    async def list_page(
        self, filter_: BehavioralTestFilter, order: IdOrder, first: int, after: Keyset | None
    ) -> Page[BehavioralTestResult]:
        conds: list[sa.ColumnElement[bool]] = []
        if filter_.execution_statuses:
            conds.append(_c("execution_status").in_(filter_.execution_statuses))
        if filter_.session_ids is not None:
            conds.append(_c("session_id").in_(filter_.session_ids))
        return await keyset_page(self.session, B, conds, _c("id"), order.direction, first, after)


def _c(name: str) -> sa.Column[Any]:
    return B.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
