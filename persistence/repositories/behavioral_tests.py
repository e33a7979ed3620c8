"""SQL for behavioral_test_results."""

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from persistence.crypto import BEHAVIORAL_TESTS as SEALED
from persistence.crypto import check_sealable, current_keyring
from persistence.filters import BehavioralTestFilter, IdOrder
from persistence.models import BehavioralTestResult
from persistence.pagination import Keyset, Page
from persistence.records import Record
from persistence.repositories.base import (
    Columns,
    group_in_key_order,
    keyset_page,
    one_per_key,
    rows_in,
    sealed_batch,
    write_sealed,
)

B = BehavioralTestResult


class BehavioralTestRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> list[BehavioralTestResult]:
        """Insert the rows (in the caller's transaction); returned objects carry
        plaintext. Sealed columns are bound to the row id, unknown before the INSERT:
        the row goes in without them, then one UPDATE stores their ciphertext."""
        if not rows:
            return []
        keyring = current_keyring()
        # One INSERT ... RETURNING per row keeps ids in input order on both dialects
        # (behavioral batches are small; discrepancies use bulk_insert).
        out = []
        for i, row in enumerate(rows):
            secret = {c: row[c] for c in SEALED.columns if row.get(c) is not None}
            for column, value in secret.items():  # reject reserved input before writing
                check_sealable(value, f"tests[{i}].{column}")
            plain = row if keyring is None else {k: v for k, v in row.items() if k not in secret}
            stmt = sa.insert(B).values(**plain).returning(B)
            stored = (await self.session.scalars(stmt)).one()
            if keyring is not None and secret:
                row_id = stored.id
                if row_id is None:  # pragma: no cover - RETURNING always gives the id
                    raise AssertionError("INSERT ... RETURNING gave no id")
                sealed = {c: SEALED.seal(c, row_id, v, keyring) for c, v in secret.items()}
                await self.write_sealed(row_id, sealed)
                for column, value in secret.items():
                    set_committed_value(stored, column, value)
            out.append(stored)
        return out

    async def sealed_batch(self, after_id: int, limit: int) -> Sequence[sa.Row[Any]]:
        """Raw stored sealed cells after ``after_id``, locked (key rotation; base.sealed_batch)."""
        return await sealed_batch(self.session, SEALED, after_id, limit)

    async def write_sealed(self, test_id: int, values: Mapping[str, Any]) -> None:
        """Store already-sealed column values as they are (key rotation)."""
        await write_sealed(self.session, SEALED, test_id, values)

    async def list_by_ids(self, ids: Sequence[int]) -> list[Record | None]:
        rows = await rows_in(self.session, _TABLE, "id", ids, sealed=SEALED)
        return one_per_key(rows, ids, lambda b: b.id)

    async def list_by_session_ids(
        self, session_ids: Sequence[int], columns: Columns = None
    ) -> list[list[Record]]:
        order = ("session_id", "id")
        rows = await rows_in(
            self.session, _TABLE, "session_id", session_ids, order, SEALED, columns
        )
        return group_in_key_order(rows, session_ids, lambda b: b.session_id)

    async def list_page(
        self,
        filter_: BehavioralTestFilter,
        order: IdOrder,
        first: int,
        after: Keyset | None,
        columns: Columns = None,
    ) -> Page[Record]:
        return await keyset_page(
            self.session,
            B,
            behavioral_test_conditions,
            filter_,
            "id",
            order.direction,
            first,
            after,
            SEALED,
            columns,
        )


def behavioral_test_conditions(f: BehavioralTestFilter) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if f.execution_statuses:
        conds.append(_c("execution_status").in_(f.execution_statuses))
    if f.session_ids is not None:
        conds.append(_c("session_id").in_(f.session_ids))
    return conds


_TABLE: sa.Table = B.__table__  # type: ignore[attr-defined]


def _c(name: str) -> sa.Column[Any]:
    return B.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
