"""The audit trail's content: what an entry says, and how rows become safe snapshots.

Services build an ``AuditEntry`` with ``audit_entry()`` inside their unit of work and
append it with ``AuditRepository.append`` in the same transaction as the change, so a
change that rolls back leaves no entry and a committed one always has its entry
(docs/decisions/0004-audit-log.md).

Snapshots never carry secrets: ``snapshot()`` turns a row into a JSON-safe dict and
``redact()`` removes

- whole fields that are secret-bearing by nature (``SECRET_FIELDS``: metadata, URLs,
  interaction logs and uploaded files of a session or behavioral test), and columns
  holding ciphertext;
- bulky content that has no place in an audit trail (``OMITTED_FIELDS``: screenshots
  and analysed representations);
- inside any JSON value, recursively, the value of every key that looks like a
  credential (password, secret, token, authorization, api key, cookie, ...);
- inside strings, bearer/basic credentials, ``user:password@`` in URLs and
  ``token=...``-style parameters.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import Enum, StrEnum
from typing import Any

import sqlalchemy as sa

from persistence.actor import Actor, current_actor

REDACTED = "[REDACTED]"
OMITTED = "[OMITTED]"

# Columns whose whole value is replaced: they routinely hold credentials (connection
# metadata, URLs with tokens, recorded interactions with typed passwords, config files).
SECRET_FIELDS = frozenset(
    {
        "source_metadata",
        "target_metadata",
        "source_urls",
        "target_urls",
        "interaction_log",
        "source_files",
        "target_files",
    }
)
# Columns replaced because they are bulk content (images, analysed models), not state.
OMITTED_FIELDS = frozenset(
    {
        "source_screenshots",
        "target_screenshots",
        "source_representation",
        "target_representation",
    }
)
# Nested JSON deeper than this is not inspected; it is redacted as a whole.
MAX_DEPTH = 32

_SECRET_KEY = re.compile(
    r"pass(?:word|wd|phrase)|pwd|secret|token|authori[sz]ation|api[_-]?key|cookie"
    r"|credential|private[_-]?key|session[_-]?key|encrypted|cipher",
    re.IGNORECASE,
)
_EXACT_SECRET_KEYS = frozenset({"auth", "pin", "otp", "signature"})
_BEARER = re.compile(r"\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"((?:[a-z0-9_.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|auth"
    r"|authorization|cookie|credential|signature|sig))\s*[=:]\s*)[^&\s#;,'\"]+",
    re.IGNORECASE,
)


class AuditOperation(StrEnum):
    """The operation an entry records, named after the GraphQL mutation (or, for
    what no mutation does, after the command's action)."""

    CREATE_SESSION = "createValidationSession"
    UPDATE_SESSION_STATUS = "updateSessionStatus"
    DELETE_SESSION = "deleteSession"
    RECORD_RESULT = "recordValidationResult"
    RECORD_BEHAVIORAL_TESTS = "recordBehavioralTestResults"
    RESOLVE_DISCREPANCY = "resolveDiscrepancy"
    REOPEN_DISCREPANCY = "reopenDiscrepancy"
    RESOLVE_DISCREPANCIES = "resolveDiscrepancies"
    # API tokens are managed by the CLI (``migval token``), not by a mutation.
    CREATE_API_TOKEN = "createApiToken"  # noqa: S105 - an operation name, not a secret
    REVOKE_API_TOKEN = "revokeApiToken"  # noqa: S105
    # ``migval db cleanup``; its ``after`` carries the RetentionMark the rollups read.
    RETENTION_CLEANUP = "retentionCleanup"


class EntityType(StrEnum):
    """What an entry is about: the table of the changed row(s)."""

    SESSION = "validation_sessions"
    RESULT = "validation_results"
    DISCREPANCY = "validation_discrepancies"
    BEHAVIORAL_TEST = "behavioral_test_results"
    API_TOKEN = "api_tokens"  # noqa: S105 - a table name


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit_log row before it is written (``created_at`` comes from the database)."""

    operation: str
    entity_type: str
    entity_id: str | None
    actor_name: str
    actor_role: str | None = None
    actor_token_id: int | None = None
    before: Any = None
    after: Any = None
    request_id: str | None = None
    client_address: str | None = None

    def values(self) -> dict[str, Any]:
        """Column values, redacted and cut to the column sizes (a long header must not
        make the audited change fail)."""
        return {
            "operation": self.operation[:100],
            "entity_type": self.entity_type[:50],
            "entity_id": None if self.entity_id is None else self.entity_id[:64],
            "actor_name": self.actor_name[:100],
            "actor_role": None if self.actor_role is None else self.actor_role[:20],
            "actor_token_id": self.actor_token_id,
            "before": redact(json_safe(self.before)),
            "after": redact(json_safe(self.after)),
            "request_id": _cut(self.request_id, 64),
            "client_address": _cut(self.client_address, 64),
        }


@dataclass(frozen=True, slots=True)
class RetentionMark:
    """What retention cleanup has deleted so far, as the rollups need it (the latest
    ``retentionCleanup`` entry's ``after`` carries it; ADR 0007): every session created
    up to ``through`` may be gone, and children created on the ``later_days`` (UTC
    dates after ``through``'s) were deleted with older sessions."""

    through: datetime | None
    later_days: tuple[date, ...] = ()

    def values(self) -> dict[str, Any]:
        return {
            "deleted_through": None if self.through is None else self.through.isoformat(),
            "deleted_later_days": [day.isoformat() for day in self.later_days],
        }

    @classmethod
    def of(cls, after: Any) -> "RetentionMark | None":
        """The mark an entry's ``after`` carries; None for an entry written before
        marks existed."""
        if not isinstance(after, dict) or not isinstance(after.get("deleted_through"), str):
            return None
        days = after.get("deleted_later_days") or []
        return cls(
            datetime.fromisoformat(after["deleted_through"]),
            tuple(date.fromisoformat(day) for day in days if isinstance(day, str)),
        )

    def after_deleting(
        self, sessions_through: datetime | None, child_days: Iterable[date] = ()
    ) -> "RetentionMark":
        """This mark moved on by deleting sessions created up to ``sessions_through``
        and children created on ``child_days``; days the mark has passed are dropped
        (it covers them)."""
        through = max((m for m in (self.through, sessions_through) if m is not None), default=None)
        last = None if through is None else through.astimezone(UTC).date()
        days = {*self.later_days, *child_days}
        return RetentionMark(through, tuple(sorted(d for d in days if last is None or d > last)))


@dataclass(frozen=True, slots=True)
class AuditLogFilter:
    """Conditions on the audit log listing; every given one must hold."""

    operations: tuple[str, ...] | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    actor_name: str | None = None
    actor_token_id: int | None = None
    request_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def audit_entry(
    operation: AuditOperation,
    entity_type: EntityType,
    entity_id: int | str | None,
    *,
    before: Any = None,
    after: Any = None,
    actor: Actor | None = None,
) -> AuditEntry:
    """An entry by the current actor (``persistence.actor.current_actor()``), unless
    ``actor`` is given."""
    who = actor if actor is not None else current_actor()
    return AuditEntry(
        operation=operation.value,
        entity_type=entity_type.value,
        entity_id=None if entity_id is None else str(entity_id),
        actor_name=who.name,
        actor_role=None if who.role is None else who.role.value,
        actor_token_id=who.token_id,
        before=before,
        after=after,
        request_id=who.request_id,
        client_address=who.client_address,
    )


def snapshot(row: Any, only: Iterable[str] | None = None) -> dict[str, Any]:
    """The row's column values (all, or those named in ``only``) as a redacted,
    JSON-safe dict. Reads loaded attributes only; never triggers IO."""
    wanted = None if only is None else set(only)
    values: dict[str, Any] = {}
    for attr in sa.inspect(type(row)).column_attrs:
        if wanted is None or attr.key in wanted:
            values[attr.key] = row.__dict__.get(attr.key)
    return _redact_mapping({k: json_safe(v) for k, v in values.items()}, 0)


def json_safe(value: Any, _depth: int = 0) -> Any:
    """``value`` with datetimes, enums, decimals, UUIDs, bytes and tuples turned into
    JSON types (so the JSON column serialises it identically on both databases)."""
    if isinstance(value, Mapping | list | tuple | set | frozenset) and _depth > MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, _depth + 1) for v in value]
    return _json_scalar(value)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of the JSON value ``value`` with secrets replaced (see module doc).
    Idempotent: redacting twice gives the same result."""
    if isinstance(value, str):
        return scrub_text(value)
    if _depth > MAX_DEPTH and isinstance(value, Mapping | list):
        return REDACTED
    if isinstance(value, Mapping):
        return _redact_mapping(value, _depth)
    if isinstance(value, list):
        return [redact(item, _depth + 1) for item in value]
    return value


def is_secret_key(name: str) -> bool:
    """Whether a JSON key (any case, snake, kebab or camel) names a credential."""
    if name.lower() in _EXACT_SECRET_KEYS:
        return True
    return _SECRET_KEY.search(name) is not None


def scrub_text(text: str) -> str:
    """``text`` with inline credentials (bearer tokens, URL passwords, token=...) cut."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def _json_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return _json_scalar(value.value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(bytes(value))} bytes]"
    return str(value)  # Decimal, UUID and anything else


def _redact_mapping(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key)
        if item is None:
            out[name] = None
        elif name in OMITTED_FIELDS:
            out[name] = OMITTED
        elif name in SECRET_FIELDS or is_secret_key(name):
            out[name] = REDACTED
        else:
            out[name] = redact(item, depth + 1)
    return out


def _cut(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


__all__ = [
    "OMITTED",
    "REDACTED",
    "SECRET_FIELDS",
    "AuditEntry",
    "AuditLogFilter",
    "AuditOperation",
    "EntityType",
    "audit_entry",
    "is_secret_key",
    "json_safe",
    "redact",
    "scrub_text",
    "snapshot",
]
