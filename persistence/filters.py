"""Filter and ordering values for listings. Frozen and hashable: loaders key on them."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from persistence.enums import (
    ExecutionStatus,
    SessionStatus,
    SeverityLevel,
    TechnologyType,
    ValidationScope,
)


class SortDirection(StrEnum):
    ASC = "asc"
    DESC = "desc"


class SessionSortField(StrEnum):
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


@dataclass(frozen=True, slots=True)
class SessionOrder:
    field: SessionSortField = SessionSortField.CREATED_AT
    direction: SortDirection = SortDirection.DESC


@dataclass(frozen=True, slots=True)
class SessionFilter:
    statuses: tuple[SessionStatus, ...] | None = None
    source_technologies: tuple[TechnologyType, ...] | None = None
    target_technologies: tuple[TechnologyType, ...] | None = None
    scopes: tuple[ValidationScope, ...] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    # Sessions with at least one result whose fidelity score is in [min, max].
    fidelity_min: float | None = None
    fidelity_max: float | None = None


@dataclass(frozen=True, slots=True)
class DiscrepancyFilter:
    severities: tuple[SeverityLevel, ...] | None = None
    discrepancy_types: tuple[str, ...] | None = None
    component_types: tuple[str, ...] | None = None
    is_resolved: bool | None = None
    session_ids: tuple[int, ...] | None = None
    result_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class BehavioralTestFilter:
    execution_statuses: tuple[ExecutionStatus, ...] | None = None
    session_ids: tuple[int, ...] | None = None


# Discrepancies and behavioral tests page by id (insertion order).
@dataclass(frozen=True, slots=True)
class IdOrder:
    direction: SortDirection = SortDirection.ASC
