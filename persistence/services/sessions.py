"""Session lifecycle: idempotent create, status transitions, delete.

Each change appends its audit_log entry in the same transaction (persistence.audit);
a call that changes nothing (an idempotent replay of create, a status it already has)
appends none. Every method takes an optional ``idempotency`` request
(persistence.idempotency): a replay of a keyed request writes nothing.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.audit import AuditOperation, EntityType, audit_entry, snapshot
from persistence.database import DatabaseManager
from persistence.enums import ALLOWED_TRANSITIONS, SessionStatus
from persistence.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from persistence.idempotency import IdempotencyRequest, Outcome, replayed_row, run_idempotent
from persistence.models import ValidationSession
from persistence.repositories import SessionRepository
from persistence.repositories.audit import AuditRepository
from persistence.validation import check_row, coerce_enum

TABLE = ValidationSession.__table__  # type: ignore[attr-defined]
# A new session always starts pending; status moves only through update_status.
CREATE_DEFAULTS: dict[str, Any] = {"behavioral_timeout": 300}
NOT_CREATABLE = frozenset({"status"})
# Compare-and-set attempts of a status change before giving up on a racing writer.
_CAS_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    session: ValidationSession
    created: bool


class SessionService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def create(
        self, values: Mapping[str, Any], idempotency: IdempotencyRequest | None = None
    ) -> CreateOutcome:
        """Create a session, idempotent on request_id: the same payload returns the
        existing session (created=False); a different payload is a Conflict."""
        for key in NOT_CREATABLE & values.keys():
            raise ValidationFailed(key, "cannot be set on create; use updateSessionStatus")
        row = {**CREATE_DEFAULTS, **check_row(TABLE, values)}

        async def work(session: AsyncSession) -> CreateOutcome:
            repo = SessionRepository(session)
            inserted = await repo.insert_if_absent(row)
            if inserted is not None:
                await AuditRepository(session).append(
                    audit_entry(
                        AuditOperation.CREATE_SESSION,
                        EntityType.SESSION,
                        inserted.id,
                        after=snapshot(inserted),
                    )
                )
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
            # Idempotent replay: nothing changed, so no audit entry.
            return CreateOutcome(existing, created=False)

        return await run_idempotent(
            self.db,
            idempotency,
            work,
            outcome=lambda done: Outcome.of(
                _CREATED if done.created else _EXISTING, [done.session.id]
            ),
            replay=_replay_create,
        )

    async def update_status(
        self,
        session_id: int,
        status: SessionStatus | str,
        idempotency: IdempotencyRequest | None = None,
    ) -> ValidationSession:
        """Move a session along its lifecycle; disallowed moves raise InvalidTransition."""
        target = coerce_enum(SessionStatus, status, "status")
        allowed_from = [src for src, dests in ALLOWED_TRANSITIONS.items() if target in dests]

        async def work(session: AsyncSession) -> ValidationSession:
            repo = SessionRepository(session)
            for _ in range(_CAS_ATTEMPTS):
                current = await repo.get(session_id)
                if current is None:
                    raise NotFound("session_id", f"no session with id {session_id}")
                before = current.status
                if before == target:
                    return current  # already there: a retried call is harmless, not audited
                if before not in allowed_from:
                    raise InvalidTransition(
                        "status", f"cannot change status from {before.value} to {target.value}"
                    )
                # Forget the loaded row so the UPDATE's RETURNING (or the next read)
                # is loaded fresh rather than answered from the identity map.
                session.expunge(current)
                # Compare-and-set on the status just read: when it wins, ``before`` is
                # exactly what it replaced, even with a concurrent writer.
                updated = await repo.set_status(session_id, target, [before])
                if updated is not None:
                    await AuditRepository(session).append(
                        audit_entry(
                            AuditOperation.UPDATE_SESSION_STATUS,
                            EntityType.SESSION,
                            session_id,
                            before={"status": before.value},
                            after={"status": updated.status.value},
                        )
                    )
                    return updated
            raise Conflict("status", "the session's status is changing concurrently; retry")

        return await run_idempotent(
            self.db,
            idempotency,
            work,
            outcome=lambda row: Outcome.of(_SESSION, [row.id]),
            replay=_replay_session,
        )

    async def delete(
        self,
        session_id: int | None = None,
        *,
        request_id: str | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> int:
        """Delete a session (by id, or by request_id) and, by cascade, its results,
        discrepancies and tests; returns its id. The request_id is resolved inside the
        transaction, so a keyed retry of a delete replays even though the session is
        gone."""
        if (session_id is None) == (request_id is None):
            raise ValidationFailed("session_id", "give exactly one of sessionId or requestId")

        async def work(session: AsyncSession) -> int:
            repo = SessionRepository(session)
            sid = session_id or 0
            if request_id is not None:
                found = await repo.get_by_request_id(request_id)
                if found is None or found.id is None:
                    raise NotFound("request_id", f"no session with requestId {request_id!r}")
                sid = found.id
            current = await repo.get(sid)  # after a lookup, the identity map answers
            if current is None:
                raise NotFound("session_id", f"no session with id {sid}")
            before = {
                **snapshot(current),
                "child_counts": await AuditRepository(session).session_child_counts(sid),
            }
            if not await repo.delete(sid):
                raise NotFound("session_id", f"no session with id {sid}")
            await AuditRepository(session).append(
                audit_entry(AuditOperation.DELETE_SESSION, EntityType.SESSION, sid, before=before)
            )
            return sid

        async def replay(_session: AsyncSession, stored: Outcome) -> int:
            return stored.result_ids[0]  # the same deleted id; nothing to read

        return await run_idempotent(
            self.db,
            idempotency,
            work,
            outcome=lambda sid: Outcome.of(_DELETED, [sid]),
            replay=replay,
        )


# Stored outcomes (persistence.idempotency.Outcome.result_type) of the methods above.
_CREATED = "session.created"
_EXISTING = "session.existing"
_SESSION = "session"
_DELETED = "session.deleted"


async def _replay_create(session: AsyncSession, stored: Outcome) -> CreateOutcome:
    row = replayed_row(await SessionRepository(session).get(stored.result_ids[0]))
    return CreateOutcome(row, created=stored.result_type == _CREATED)


async def _replay_session(session: AsyncSession, stored: Outcome) -> ValidationSession:
    return replayed_row(await SessionRepository(session).get(stored.result_ids[0]))


def _differing_field(existing: ValidationSession, row: Mapping[str, Any]) -> str | None:
    for column in TABLE.c:
        name: str = column.name
        if name in {"id", "created_at", "updated_at", "status"}:
            continue
        expected = row.get(name, CREATE_DEFAULTS.get(name))
        if getattr(existing, name) != expected:
            return name
    return None
