"""``migval db import-legacy FILE``: load sessions exported from the old in-memory
store (format: docs/legacy-import.md).

Each session is imported in ONE transaction, through the persistence services
(``SessionService.create``, ``ResultService.record``, ``BehavioralTestService.record``)
so their validation, field encryption and audit entries apply unchanged: the services
are handed a ``DatabaseManager`` whose ``run_write`` joins the session's transaction
instead of opening its own. What the API never lets a client set (the status reached,
the original timestamps) is applied in the same transaction, with one more audit entry
(``importLegacySession``). A session fails as a whole: nothing of it is left behind.

Idempotent on request_id: a session already stored with the same content (session
fields, status, given timestamps, results, discrepancies, behavioral results, in
order) is skipped and nothing is written; the same request_id with different content
is a conflict, reported and left untouched.
"""

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.actor import Actor, acting_as
from persistence.audit import AuditEntry, EntityType
from persistence.crypto import DecryptionError
from persistence.database import DatabaseManager
from persistence.enums import Role, SessionStatus
from persistence.errors import Conflict, MigvalError, ServiceUnavailable, ValidationFailed
from persistence.maintenance import MaintenanceError
from persistence.maintenance.legacy_plan import Plan, plan_difference, plan_session
from persistence.maintenance.tables import (
    BEHAVIORAL_TESTS,
    DISCREPANCIES,
    RESULTS,
    SESSIONS,
    iso_utc,
)
from persistence.repositories.audit import AuditRepository
from persistence.services import BehavioralTestService, ResultService, SessionService

T = TypeVar("T")
ACTOR = Actor(name="legacy-import", role=Role.ADMIN)
AUDIT_OPERATION = "importLegacySession"


class Outcome(StrEnum):
    IMPORTED = "imported"
    SKIPPED = "skipped"
    CONFLICT = "conflict"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    index: int
    request_id: str | None
    outcome: Outcome
    message: str
    session_id: int | None = None

    def line(self) -> str:
        who = self.request_id if self.request_id is not None else "(no request_id)"
        return f"{self.outcome.value:<9} [{self.index}] {who}: {self.message}"


@dataclass(slots=True)
class LegacyReport:
    outcomes: list[SessionOutcome] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o.outcome is outcome)

    @property
    def ok(self) -> bool:
        return not (self.count(Outcome.CONFLICT) or self.count(Outcome.FAILED))

    def summary(self) -> str:
        return (
            f"{len(self.outcomes)} sessions: {self.count(Outcome.IMPORTED)} imported, "
            f"{self.count(Outcome.SKIPPED)} skipped (already imported), "
            f"{self.count(Outcome.CONFLICT)} conflicts, {self.count(Outcome.FAILED)} failed"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": {o.value: self.count(o) for o in Outcome},
            "sessions": [
                {
                    "index": o.index,
                    "request_id": o.request_id,
                    "outcome": o.outcome.value,
                    "message": o.message,
                    "session_id": o.session_id,
                }
                for o in self.outcomes
            ],
        }


class LegacyFileError(MaintenanceError):
    """The file is not a legacy export at all (exit code 1)."""


def read_legacy_file(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise LegacyFileError(f"cannot read {path}: {error}") from None
    except ValueError as error:
        raise LegacyFileError(f"{path} is not JSON: {error}") from None
    if not isinstance(data, list):
        raise LegacyFileError(f"{path} must hold a JSON list of session objects")
    return data


# -------------------------------------------------------------- the import


class _JoinedTransaction(DatabaseManager):
    """A DatabaseManager whose ``run_write`` runs the service's unit of work inside an
    already open transaction (the caller commits or rolls back once, for everything)."""

    def __init__(self, base: DatabaseManager, session: AsyncSession) -> None:
        self.settings = base.settings
        self.engine = base.engine
        self.loop_reads = None  # the base manager's own: it closes them
        self._session = session

    async def run_write(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await fn(self._session)


OnOutcome = Callable[[SessionOutcome], None]


async def import_legacy(
    db: DatabaseManager, items: Sequence[Any], on_outcome: OnOutcome | None = None
) -> LegacyReport:
    report = LegacyReport()
    with acting_as(ACTOR):
        for index, raw in enumerate(items):
            outcome = await _import_item(db, index, raw)
            report.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return report


async def _import_item(db: DatabaseManager, index: int, raw: Any) -> SessionOutcome:
    request_id = raw.get("request_id") if isinstance(raw, dict) else None
    rid = request_id if isinstance(request_id, str) else None
    try:
        plan = plan_session(raw)
        return await db.run_write(lambda session: _import_plan(db, session, index, rid, plan))
    except Conflict as error:
        return SessionOutcome(index, rid, Outcome.CONFLICT, error.message)
    except ServiceUnavailable:
        raise  # the database is gone: stop, do not report every later session as failed
    except MigvalError as error:
        return SessionOutcome(index, rid, Outcome.FAILED, str(error))
    except DecryptionError as error:
        return SessionOutcome(index, rid, Outcome.FAILED, f"stored session unreadable: {error}")
    except exc.DBAPIError as error:
        detail = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        return SessionOutcome(index, rid, Outcome.FAILED, f"database refused it: {detail}")


async def _import_plan(
    db: DatabaseManager, session: AsyncSession, index: int, rid: str | None, plan: Plan
) -> SessionOutcome:
    joined = _JoinedTransaction(db, session)
    created = await SessionService(joined).create(plan.fields)
    stored = created.session
    session_id = stored.id
    if session_id is None:  # pragma: no cover - a stored row has an id
        raise AssertionError("stored session without an id")
    if not created.created:
        difference = await plan_difference(session, session_id, stored.status, plan)
        if difference is not None:
            raise Conflict("request_id", f"already imported with different content: {difference}")
        return SessionOutcome(
            index, rid, Outcome.SKIPPED, "already imported, same content", session_id
        )
    discrepancy_count = 0
    for i, result in enumerate(plan.results):
        rows = [d.fields for d in result.discrepancies]
        try:
            recorded = await ResultService(joined).record(session_id, result.fields, rows)
        except ValidationFailed as error:
            raise ValidationFailed(f"results[{i}].{error.field}", error.message) from None
        created_at = result.created_at or plan.created_at
        await _stamp(session, RESULTS, [recorded.id], created_at, result.updated_at)
        ids = list(
            (
                await session.scalars(
                    sa.select(DISCREPANCIES.c.id)
                    .where(DISCREPANCIES.c.result_id == recorded.id)
                    .order_by(DISCREPANCIES.c.id)
                )
            ).all()
        )
        for d_id, d in zip(ids, result.discrepancies, strict=True):
            await _stamp(session, DISCREPANCIES, [d_id], d.created_at or created_at, d.updated_at)
        discrepancy_count += len(ids)
    if plan.behavioral:
        try:
            tests = await BehavioralTestService(joined).record(
                session_id, [b.fields for b in plan.behavioral]
            )
        except ValidationFailed as error:
            where = (error.field or "").replace("tests[", "behavioral_results[", 1)
            raise ValidationFailed(where or "behavioral_results", error.message) from None
        for test, b in zip(tests, plan.behavioral, strict=True):
            await _stamp(
                session, BEHAVIORAL_TESTS, [test.id], b.created_at or plan.created_at, b.updated_at
            )
    status = plan.status or SessionStatus.PENDING
    changes: dict[str, Any] = {}
    if status is not SessionStatus.PENDING:
        changes["status"] = status
    await _stamp(session, SESSIONS, [session_id], plan.created_at, plan.updated_at, changes)
    await AuditRepository(session).append(
        AuditEntry(
            operation=AUDIT_OPERATION,
            entity_type=EntityType.SESSION.value,
            entity_id=str(session_id),
            actor_name=ACTOR.name,
            actor_role=ACTOR.role.value if ACTOR.role else None,
            after={
                "request_id": stored.request_id,
                "status": status.value,
                "created_at": iso_utc(plan.created_at),
                "results": len(plan.results),
                "discrepancies": discrepancy_count,
                "behavioral_tests": len(plan.behavioral),
            },
        )
    )
    return SessionOutcome(
        index,
        rid,
        Outcome.IMPORTED,
        f"session id {session_id}: {len(plan.results)} results, {discrepancy_count} "
        f"discrepancies, {len(plan.behavioral)} behavioral results, status {status.value}",
        session_id,
    )


async def _stamp(
    session: AsyncSession,
    table: sa.Table,
    ids: Sequence[int | None],
    created_at: datetime | None,
    updated_at: datetime | None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Set the original timestamps (updated_at defaults to created_at) and ``extra``."""
    values: dict[str, Any] = dict(extra or {})
    if created_at is not None:
        values["created_at"] = created_at
    if updated_at is not None or created_at is not None:
        values["updated_at"] = updated_at or created_at
    if values:
        await session.execute(sa.update(table).where(table.c.id.in_(ids)).values(values))
