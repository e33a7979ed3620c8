"""SQL for validation_sessions."""

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.crypto import SESSIONS as SEALED
from persistence.enums import SessionStatus
from persistence.filters import SessionFilter, SessionOrder
from persistence.models import ValidationResult, ValidationSession
from persistence.pagination import Keyset, Page
from persistence.records import Record
from persistence.repositories.base import (
    Columns,
    dialect_name,
    keyset_page,
    one_per_key,
    rows_in,
    sealed_batch,
    write_sealed,
)

S = ValidationSession
_TABLE: sa.Table = S.__table__  # type: ignore[attr-defined]


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, session_id: int) -> ValidationSession | None:
        return await self.session.get(S, session_id)

    async def get_by_request_id(self, request_id: str) -> ValidationSession | None:
        stmt = sa.select(S).where(S.request_id == request_id)  # type: ignore[arg-type]
        return (await self.session.scalars(stmt)).one_or_none()

    async def list_by_ids(self, ids: Sequence[int]) -> list[Record | None]:
        rows = await rows_in(self.session, _TABLE, "id", ids, sealed=SEALED)
        return one_per_key(rows, ids, lambda s: s.id)

    async def list_by_request_ids(self, request_ids: Sequence[str]) -> list[Record | None]:
        rows = await rows_in(self.session, _TABLE, "request_id", request_ids, sealed=SEALED)
        return one_per_key(rows, request_ids, lambda s: s.request_id)

    async def insert_if_absent(self, values: Mapping[str, Any]) -> ValidationSession | None:
        """INSERT ... ON CONFLICT (request_id) DO NOTHING; None when it already existed.
        Race-free idempotency: concurrent creators never see a unique violation.
        Sealed columns are encrypted bound to request_id; the returned row (like every
        loaded one) carries their plaintext."""
        insert = postgresql.insert if dialect_name(self.session) == "postgresql" else sqlite.insert
        stmt = (
            insert(S)
            .values(**SEALED.seal_values(values))
            .on_conflict_do_nothing(index_elements=["request_id"])
            .returning(S)
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def list_page(
        self,
        filter_: SessionFilter,
        order: SessionOrder,
        first: int,
        after: Keyset | None,
        columns: Columns = None,
    ) -> Page[Record]:
        return await keyset_page(
            self.session,
            S,
            session_conditions,
            filter_,
            order.field.value,
            order.direction,
            first,
            after,
            SEALED,
            columns,
        )

    async def set_status(
        self, session_id: int, status: SessionStatus, allowed_from: Sequence[SessionStatus]
    ) -> ValidationSession | None:
        """Compare-and-set: changes the status only if the current one is in
        ``allowed_from`` (so two racing transitions cannot both win)."""
        stmt = (
            sa.update(S)
            .where(_c("id") == session_id, _c("status").in_(allowed_from))
            .values(status=status)
            .returning(S)
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def set_status_many(self, session_ids: Sequence[int], status: SessionStatus) -> int:
        stmt = sa.update(S).where(_c("id").in_(session_ids)).values(status=status)
        result = await self.session.execute(stmt)
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def sealed_batch(self, after_id: int, limit: int) -> Sequence[sa.Row[Any]]:
        """Raw stored sealed cells after ``after_id``, locked (key rotation; base.sealed_batch)."""
        return await sealed_batch(self.session, SEALED, after_id, limit)

    async def write_sealed(self, session_id: int, values: Mapping[str, Any]) -> None:
        """Store already-sealed column values as they are (key rotation)."""
        await write_sealed(self.session, SEALED, session_id, values)

    async def delete(self, session_id: int) -> bool:
        """Children go with it (ON DELETE CASCADE)."""
        result = await self.session.execute(sa.delete(S).where(_c("id") == session_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def session_conditions(f: SessionFilter) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if f.statuses:
        conds.append(_c("status").in_(f.statuses))
    if f.source_technologies:
        conds.append(_c("source_technology").in_(f.source_technologies))
    if f.target_technologies:
        conds.append(_c("target_technology").in_(f.target_technologies))
    if f.scopes:
        conds.append(_c("validation_scope").in_(f.scopes))
    if f.created_from is not None:
        conds.append(_c("created_at") >= f.created_from)
    if f.created_to is not None:
        conds.append(_c("created_at") < f.created_to)
    if f.fidelity_min is not None or f.fidelity_max is not None:
        r = ValidationResult.__table__.c  # type: ignore[attr-defined]
        score = [r.session_id == _c("id")]
        if f.fidelity_min is not None:
            score.append(r.fidelity_score >= f.fidelity_min)
        if f.fidelity_max is not None:
            score.append(r.fidelity_score <= f.fidelity_max)
        conds.append(sa.exists().where(*score))
    return conds


def _c(name: str) -> sa.Column[Any]:
    return S.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
