"""Enumerations of the data model.

The first four are native PostgreSQL enum types (and CHECK constraints on SQLite);
the status-like ones are VARCHAR columns guarded by CHECK constraints on both databases,
so adding a value never needs an ``ALTER TYPE``.
"""

from enum import StrEnum


class TechnologyType(StrEnum):
    PYTHON_FLASK = "PYTHON_FLASK"
    PYTHON_DJANGO = "PYTHON_DJANGO"
    JAVA_SPRING = "JAVA_SPRING"
    CSHARP_DOTNET = "CSHARP_DOTNET"
    PHP_LARAVEL = "PHP_LARAVEL"
    JAVASCRIPT_REACT = "JAVASCRIPT_REACT"
    JAVASCRIPT_VUE = "JAVASCRIPT_VUE"
    JAVASCRIPT_ANGULAR = "JAVASCRIPT_ANGULAR"
    TYPESCRIPT_REACT = "TYPESCRIPT_REACT"
    TYPESCRIPT_VUE = "TYPESCRIPT_VUE"
    TYPESCRIPT_ANGULAR = "TYPESCRIPT_ANGULAR"


class ValidationScope(StrEnum):
    UI_LAYOUT = "UI_LAYOUT"
    BACKEND_FUNCTIONALITY = "BACKEND_FUNCTIONALITY"
    DATA_STRUCTURE = "DATA_STRUCTURE"
    API_ENDPOINTS = "API_ENDPOINTS"
    BUSINESS_LOGIC = "BUSINESS_LOGIC"
    BEHAVIORAL_VALIDATION = "BEHAVIORAL_VALIDATION"
    FULL_SYSTEM = "FULL_SYSTEM"


class InputType(StrEnum):
    CODE_FILES = "CODE_FILES"
    SCREENSHOTS = "SCREENSHOTS"
    HYBRID = "HYBRID"


class SeverityLevel(StrEnum):
    CRITICAL = "CRITICAL"
    WARNING = "WARNING"
    INFO = "INFO"


class SessionStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OverallStatus(StrEnum):
    APPROVED = "approved"
    APPROVED_WITH_WARNINGS = "approved_with_warnings"
    REJECTED = "rejected"
    ERROR = "error"


class ResultType(StrEnum):
    STATIC = "static"
    BEHAVIORAL = "behavioral"
    HYBRID = "hybrid"


class ExecutionStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"


class MetricPeriod(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


# Session status transitions: pending -> processing -> completed | failed; any
# non-terminal state may be cancelled. Terminal states have no way out.
ALLOWED_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.PENDING: frozenset({SessionStatus.PROCESSING, SessionStatus.CANCELLED}),
    SessionStatus.PROCESSING: frozenset(
        {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED}
    ),
    SessionStatus.COMPLETED: frozenset(),
    SessionStatus.FAILED: frozenset(),
    SessionStatus.CANCELLED: frozenset(),
}


class Role(StrEnum):
    """API token roles, each including the ones before it."""

    VIEWER = "viewer"
    WRITER = "writer"
    ADMIN = "admin"


ROLE_RANK: dict[Role, int] = {Role.VIEWER: 1, Role.WRITER: 2, Role.ADMIN: 3}
