"""SQL for api_tokens. Tokens are looked up by the SHA-256 of their text; the text
itself is never stored."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import ApiToken

T = ApiToken


class TokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: Mapping[str, Any]) -> ApiToken:
        stmt = sa.insert(T).values(**values).returning(T)
        return (await self.session.scalars(stmt)).one()

    async def get_by_hash(self, token_hash: str) -> ApiToken | None:
        stmt = sa.select(T).where(_c("token_hash") == token_hash)
        return (await self.session.scalars(stmt)).one_or_none()

    async def get_by_name(self, name: str) -> ApiToken | None:
        stmt = sa.select(T).where(_c("name") == name)
        return (await self.session.scalars(stmt)).one_or_none()

    async def list_all(self) -> list[ApiToken]:
        stmt = sa.select(T).order_by(_c("created_at"), _c("id"))
        return list((await self.session.scalars(stmt)).all())

    async def revoke(self, name: str, at: datetime) -> ApiToken | None:
        """Set revoked_at unless already set; None when there was nothing to revoke."""
        stmt = (
            sa.update(T)
            .where(_c("name") == name, _c("revoked_at").is_(None))
            .values(revoked_at=at)
            .returning(T)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def touch(self, token_id: int, at: datetime, stale_before: datetime) -> bool:
        """Record a use at ``at`` unless one was recorded at or after ``stale_before``
        (so a busy token is written at most once per interval). True if written."""
        stmt = (
            sa.update(T)
            .where(
                _c("id") == token_id,
                sa.or_(_c("last_used_at").is_(None), _c("last_used_at") < stale_before),
            )
            .values(last_used_at=at)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _c(name: str) -> sa.Column[Any]:
    return T.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
