"""The legacy import's reading of one session object (``plan_session``: validated
shape, nesting, timestamps) and its comparison with what is stored
(``plan_difference``: what makes a re-import a conflict rather than a skip)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.enums import SessionStatus
from persistence.errors import ValidationFailed
from persistence.maintenance.tables import BEHAVIORAL_TESTS, DISCREPANCIES, RESULTS, SESSIONS
from persistence.models import BehavioralTestResult, ValidationDiscrepancy, ValidationResult
from persistence.validation import check_row, coerce_enum

# Links are rebuilt from the nesting; the old store's ids mean nothing here.
IGNORED_KEYS = frozenset({"id", "session_id", "result_id"})
# Resolution cannot be imported (the old store had none); default values are accepted.
RESOLUTION_DEFAULTS: dict[str, Any] = {
    "is_resolved": False,
    "resolution_notes": None,
    "resolved_at": None,
    "resolved_by": None,
}


@dataclass(slots=True)
class Stamped:
    """Column values for a service, plus the original timestamps (applied after)."""

    fields: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(slots=True)
class ResultPlan(Stamped):
    discrepancies: list[Stamped] = field(default_factory=list)


@dataclass(slots=True)
class Plan(Stamped):
    status: SessionStatus | None = None
    results: list[ResultPlan] = field(default_factory=list)
    behavioral: list[Stamped] = field(default_factory=list)


# ------------------------------------------------------------------ reading


def plan_session(raw: Any) -> Plan:
    """The import plan of one legacy session object; ValidationFailed naming the
    field (``results[1].discrepancies[0].created_at``) when its shape is wrong. Column
    values themselves are validated by the services."""
    values = _object(raw, "")
    results = _children(values, "results", "")
    behavioral = _children(values, "behavioral_results", "")
    raw_status = values.pop("status", None)
    status = None if raw_status is None else coerce_enum(SessionStatus, raw_status, "status")
    base = _stamped(values, "")
    plan = Plan(base.fields, base.created_at, base.updated_at, status=status)
    for i, item in enumerate(results):
        where = f"results[{i}]."
        result_values = _object(item, where[:-1])
        discrepancies = _children(result_values, "discrepancies", where)
        stamped = _stamped(result_values, where)
        result = ResultPlan(stamped.fields, stamped.created_at, stamped.updated_at)
        for j, d in enumerate(discrepancies):
            d_where = f"{where}discrepancies[{j}]."
            d_values = _object(d, d_where[:-1])
            for key, default in RESOLUTION_DEFAULTS.items():
                if key in d_values:
                    if d_values[key] != default:
                        raise ValidationFailed(
                            d_where + key, "resolution cannot be imported (import it unresolved)"
                        )
                    del d_values[key]
            result.discrepancies.append(_stamped(d_values, d_where))
        plan.results.append(result)
    for i, item in enumerate(behavioral):
        where = f"behavioral_results[{i}]."
        plan.behavioral.append(_stamped(_object(item, where[:-1]), where))
    return plan


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed(where or None, "must be a JSON object")
    return {k: v for k, v in value.items() if k not in IGNORED_KEYS}


def _children(values: dict[str, Any], key: str, where: str) -> list[Any]:
    items = values.pop(key, None)
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValidationFailed(where + key, "must be a list")
    return items


def _stamped(values: dict[str, Any], where: str) -> Stamped:
    created = _timestamp(values.pop("created_at", None), where + "created_at")
    updated = _timestamp(values.pop("updated_at", None), where + "updated_at")
    return Stamped(values, created, updated)


def _timestamp(value: Any, where: str) -> datetime | None:
    """ISO-8601; a timestamp without an offset is taken as UTC (the old store's)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(where, "must be an ISO-8601 timestamp string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(where, f"is not an ISO-8601 timestamp: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --------------------------------------------------------------- comparison


async def plan_difference(
    session: AsyncSession, session_id: int, status: SessionStatus, plan: Plan
) -> str | None:
    """What differs between the stored session (status, given timestamps, results,
    their discrepancies, behavioral results, in id order) and the plan; None when
    nothing does. The session's own columns were compared by SessionService.create."""
    expected_status = plan.status or SessionStatus.PENDING
    if status != expected_status:
        return f"status is {status.value} in the database, {expected_status.value} in the file"
    row = (
        await session.execute(
            sa.select(SESSIONS.c.created_at, SESSIONS.c.updated_at).where(
                SESSIONS.c.id == session_id
            )
        )
    ).one()
    found = _stamps_differ("", plan, row.created_at, row.updated_at)
    if found:
        return found
    results = await _stored(session, ValidationResult, RESULTS.c.session_id == session_id)
    found = _rows_differ("results", RESULTS, results, plan.results)
    if found:
        return found
    for i, (stored, wanted) in enumerate(zip(results, plan.results, strict=True)):
        discrepancies = await _stored(
            session, ValidationDiscrepancy, DISCREPANCIES.c.result_id == stored.id
        )
        found = _rows_differ(
            f"results[{i}].discrepancies", DISCREPANCIES, discrepancies, wanted.discrepancies
        )
        if found:
            return found
    tests = await _stored(
        session, BehavioralTestResult, BEHAVIORAL_TESTS.c.session_id == session_id
    )
    return _rows_differ("behavioral_results", BEHAVIORAL_TESTS, tests, plan.behavioral)


async def _stored(
    session: AsyncSession, model: type[Any], condition: sa.ColumnElement[bool]
) -> list[Any]:
    """ORM rows (sealed columns opened), in id order."""
    stmt = sa.select(model).where(condition).order_by(model.__table__.c.id)
    return list((await session.scalars(stmt)).all())


def _rows_differ(label: str, table: sa.Table, stored: list[Any], wanted: list[Any]) -> str | None:
    if len(stored) != len(wanted):
        return f"{label}: {len(stored)} in the database, {len(wanted)} in the file"
    for i, (row, item) in enumerate(zip(stored, wanted, strict=True)):
        where = f"{label}[{i}]."
        found = _fields_differ(where, table, row, item) or _stamps_differ(
            where, item, row.created_at, row.updated_at
        )
        if found:
            return found
    return None


def _fields_differ(where: str, table: sa.Table, stored: Any, wanted: Stamped) -> str | None:
    links = {name: getattr(stored, name) for name in ("session_id", "result_id") if name in table.c}
    checked = check_row(table, {**wanted.fields, **links}, where)
    for name in wanted.fields:
        if getattr(stored, name) != checked[name]:
            return f"{where}{name} differs"
    return None


def _stamps_differ(
    where: str, wanted: Stamped, created_at: datetime | None, updated_at: datetime | None
) -> str | None:
    if wanted.created_at is not None and wanted.created_at != created_at:
        return f"{where}created_at differs"
    if wanted.updated_at is not None and wanted.updated_at != updated_at:
        return f"{where}updated_at differs"
    return None
