"""Session lifecycle: idempotent create, status transitions, delete."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import DatabaseManager
from persistence.enums import ALLOWED_TRANSITIONS, SessionStatus
from persistence.errors import Conflict, InvalidTransition, NotFound
from persistence.models import ValidationSession
from persistence.repositories import SessionRepository
from persistence.validation import check_row, coerce_enum

TABLE = ValidationSession.__table__  # type: ignore[attr-defined]
# A new session always starts pending; status moves only through update_status.
CREATE_DEFAULTS: dict[str, Any] = {"behavioral_timeout": 300}
NOT_CREATABLE = frozenset({"status"})


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    session: ValidationSession
    created: bool


class SessionService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def create(self, values: Mapping[str, Any]) -> CreateOutcome:
        """Create a session, idempotent on request_id: the same payload returns the
        existing session (created=False); a different payload is a Conflict."""
        for key in NOT_CREATABLE & values.keys():
            raise Conflict(key, "cannot be set on create; use updateSessionStatus")
        row = {**CREATE_DEFAULTS, **check_row(TABLE, values)}

        async def work(session: AsyncSession) -> CreateOutcome:
            repo = SessionRepository(session)
            inserted = await repo.insert_if_absent(row)
            if inserted is not None:
                return CreateOutcome(inserted, created=True)
            existing = await repo.get_by_request_id(row["request_id"])
            if existing is None:  # deleted between the two statements
                raise Conflict("request_id", "was concurrently deleted; retry")
            differing = _differing_field(existing, row)
            if differing is not None:
                raise Conflict(
                    "request_id",
                    f"a session with this request_id exists with a different {differing}",
                )
            return CreateOutcome(existing, created=False)

        return await self.db.run_write(work)

    async def update_status(
        self, session_id: int, status: SessionStatus | str
    ) -> ValidationSession:
        """Move a session along its lifecycle; disallowed moves raise InvalidTransition."""
        target = coerce_enum(SessionStatus, status, "status")
        allowed_from = [src for src, dests in ALLOWED_TRANSITIONS.items() if target in dests]

        async def work(session: AsyncSession) -> ValidationSession:
            repo = SessionRepository(session)
            updated = await repo.set_status(session_id, target, allowed_from)
            if updated is not None:
                return updated
            current = await repo.get(session_id)
            if current is None:
                raise NotFound("id", f"no session with id {session_id}")
            if current.status == target:
                return current  # already there: a retried call is harmless
            raise InvalidTransition(
                "status", f"cannot change status from {current.status.value} to {target.value}"
            )

        return await self.db.run_write(work)

    async def delete(self, session_id: int) -> None:
        """Delete a session and, by cascade, its results, discrepancies and tests."""

        async def work(session: AsyncSession) -> None:
            if not await SessionRepository(session).delete(session_id):
                raise NotFound("id", f"no session with id {session_id}")

        await self.db.run_write(work)


def _differing_field(existing: ValidationSession, row: Mapping[str, Any]) -> str | None:
    for column in TABLE.c:
        name: str = column.name
        if name in {"id", "created_at", "updated_at", "status"}:
            continue
        expected = row.get(name, CREATE_DEFAULTS.get(name))
        if getattr(existing, name) != expected:
            return name
    return None
