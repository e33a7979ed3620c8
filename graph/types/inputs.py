"""Filter and ordering inputs of the list queries, mapped to persistence filters."""

from datetime import datetime
from enum import Enum
from typing import TypeVar

import strawberry

from graph.errors import BadUserInput
from graph.ids import expect_global_id
from graph.types.common import (
    ExecutionStatus,
    SessionStatus,
    SeverityLevel,
    TechnologyType,
    ValidationScope,
)
from persistence import filters
from persistence.errors import ValidationFailed


@strawberry.enum(description="Sort direction.")
class SortDirection(Enum):
    ASC = "asc"
    DESC = "desc"


@strawberry.enum(description="Field to sort sessions by (ties broken by id).")
class SessionSortField(Enum):
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


@strawberry.input(description="Ordering of the session list (default: newest first).")
class SessionOrderInput:
    field: SessionSortField = strawberry.field(
        default=SessionSortField.CREATED_AT, description="Field to sort by."
    )
    direction: SortDirection = strawberry.field(
        default=SortDirection.DESC, description="Sort direction."
    )


@strawberry.input(description="Ordering of a discrepancy or test list by id (insertion order).")
class IdOrderInput:
    direction: SortDirection = strawberry.field(
        default=SortDirection.ASC, description="Sort direction."
    )


@strawberry.input(description="Filter of the session list; all given conditions must hold.")
class SessionFilterInput:
    status: list[SessionStatus] | None = strawberry.field(
        default=None, description="Any of these statuses."
    )
    source_technology: list[TechnologyType] | None = strawberry.field(
        default=None, description="Any of these source stacks."
    )
    target_technology: list[TechnologyType] | None = strawberry.field(
        default=None, description="Any of these target stacks."
    )
    scope: list[ValidationScope] | None = strawberry.field(
        default=None, description="Any of these validation scopes."
    )
    created_from: datetime | None = strawberry.field(
        default=None, description="Created at or after this instant."
    )
    created_to: datetime | None = strawberry.field(
        default=None, description="Created before this instant."
    )
    fidelity_min: float | None = strawberry.field(
        default=None, description="Has a result with fidelity score >= this (0..1)."
    )
    fidelity_max: float | None = strawberry.field(
        default=None, description="Has a result with fidelity score <= this (0..1)."
    )


@strawberry.input(description="Filter of discrepancies; all given conditions must hold.")
class DiscrepancyFilterInput:
    severity: list[SeverityLevel] | None = strawberry.field(
        default=None, description="Any of these severities."
    )
    discrepancy_type: list[str] | None = strawberry.field(
        default=None, description="Any of these discrepancy types."
    )
    component_type: list[str] | None = strawberry.field(
        default=None, description="Any of these component types."
    )
    resolved: bool | None = strawberry.field(
        default=None, description="Only resolved (true) or only open (false) ones."
    )
    session_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only discrepancies of this session (global ID)."
    )


@strawberry.input(description="Filter of behavioral test results.")
class BehavioralTestFilterInput:
    execution_status: list[ExecutionStatus] | None = strawberry.field(
        default=None, description="Any of these outcomes."
    )
    session_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only tests of this session (global ID)."
    )


T = TypeVar("T")


def _tuple(values: list[T] | None) -> tuple[T, ...] | None:
    return None if values is None else tuple(values)


def _check_datetime(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise BadUserInput(ValidationFailed(field, "must include a timezone offset"))
    return value


def _check_score(value: float | None, field: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise BadUserInput(ValidationFailed(field, "must be between 0 and 1"))
    return value


def _session_id(value: strawberry.ID | None, field: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return (expect_global_id(value, "ValidationSession", field),)
    except ValidationFailed as error:
        raise BadUserInput(error) from None


def to_session_filter(f: SessionFilterInput | None) -> filters.SessionFilter:
    if f is None:
        return filters.SessionFilter()
    return filters.SessionFilter(
        statuses=_tuple(f.status),
        source_technologies=_tuple(f.source_technology),
        target_technologies=_tuple(f.target_technology),
        scopes=_tuple(f.scope),
        created_from=_check_datetime(f.created_from, "filter.createdFrom"),
        created_to=_check_datetime(f.created_to, "filter.createdTo"),
        fidelity_min=_check_score(f.fidelity_min, "filter.fidelityMin"),
        fidelity_max=_check_score(f.fidelity_max, "filter.fidelityMax"),
    )


def to_session_order(o: SessionOrderInput | None) -> filters.SessionOrder:
    if o is None:
        return filters.SessionOrder()
    return filters.SessionOrder(
        filters.SessionSortField(o.field.value), filters.SortDirection(o.direction.value)
    )


def to_id_order(o: IdOrderInput | None) -> filters.IdOrder:
    return (
        filters.IdOrder()
        if o is None
        else filters.IdOrder(filters.SortDirection(o.direction.value))
    )


# No filter given: one shared value (frozen; keys of every session's page carry it).
_NO_DISCREPANCY_FILTER = filters.DiscrepancyFilter()
_NO_BEHAVIORAL_FILTER = filters.BehavioralTestFilter()


def to_discrepancy_filter(f: DiscrepancyFilterInput | None) -> filters.DiscrepancyFilter:
    if f is None:
        return _NO_DISCREPANCY_FILTER
    return filters.DiscrepancyFilter(
        severities=_tuple(f.severity),
        discrepancy_types=_tuple(f.discrepancy_type),
        component_types=_tuple(f.component_type),
        is_resolved=f.resolved,
        session_ids=_session_id(f.session_id, "filter.sessionId"),
    )


def to_behavioral_filter(f: BehavioralTestFilterInput | None) -> filters.BehavioralTestFilter:
    if f is None:
        return _NO_BEHAVIORAL_FILTER
    return filters.BehavioralTestFilter(
        execution_statuses=_tuple(f.execution_status),
        session_ids=_session_id(f.session_id, "filter.sessionId"),
    )
