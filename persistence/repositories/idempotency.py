"""SQL for idempotency_keys: claim a key, read it, complete it, forget it, purge.

Every statement runs in the caller's transaction (the write the key guards), except
``purge_expired`` which is its own unit of work (persistence.idempotency).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import IdempotencyKey
from persistence.repositories.base import dialect_name

K = IdempotencyKey.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StoredKey:
    """An idempotency_keys row as read back (plain values, no ORM identity)."""

    id: int
    operation: str
    request_hash: str
    result_type: str | None
    result_ids: list[int] | None
    expires_at: datetime


class IdempotencyKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_if_absent(
        self, scope: str, key: str, operation: str, request_hash: str, expires_at: datetime
    ) -> int | None:
        """INSERT ... ON CONFLICT (scope, key) DO NOTHING RETURNING id: the new row's
        id, or None when the key exists. On PostgreSQL a concurrent insert of the same
        key waits here until the other transaction ends (then sees its row, or none)."""
        insert = postgresql.insert if dialect_name(self.session) == "postgresql" else sqlite.insert
        stmt = (
            insert(K)
            .values(
                scope=scope,
                key=key,
                operation=operation,
                request_hash=request_hash,
                expires_at=expires_at,
            )
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(K.c.id)
        )
        value = (await self.session.execute(stmt)).scalar_one_or_none()
        return None if value is None else int(value)

    async def get(self, scope: str, key: str) -> StoredKey | None:
        stmt = sa.select(
            K.c.id,
            K.c.operation,
            K.c.request_hash,
            K.c.result_type,
            K.c.result_ids,
            K.c.expires_at,
        ).where(K.c.scope == scope, K.c.key == key)
        row = (await self.session.execute(stmt)).one_or_none()
        if row is None:
            return None
        ids: Any = row.result_ids
        return StoredKey(
            id=int(row.id),
            operation=row.operation,
            request_hash=row.request_hash,
            result_type=row.result_type,
            result_ids=None if ids is None else [int(i) for i in ids],
            expires_at=row.expires_at,
        )

    async def complete(self, key_id: int, result_type: str, result_ids: Sequence[int]) -> None:
        """Record what the guarded write returned (same transaction as the write)."""
        await self.session.execute(
            sa.update(K)
            .where(K.c.id == key_id)
            .values(result_type=result_type, result_ids=list(result_ids))
        )

    async def delete(self, key_id: int) -> None:
        """Forget one (expired) key; a no-op when another transaction already did."""
        await self.session.execute(sa.delete(K).where(K.c.id == key_id))

    async def purge_expired(self, now: datetime) -> int:
        result = await self.session.execute(sa.delete(K).where(K.c.expires_at <= now))
        return int(result.rowcount)  # type: ignore[attr-defined]
