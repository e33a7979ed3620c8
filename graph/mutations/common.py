"""Shared mutation plumbing: running a service call and turning domain errors into
payload errors, resolving a session reference, and the idempotency request of an
input's ``idempotencyKey``."""

import dataclasses
import keyword
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from enum import Enum
from typing import Any, TypeVar

import strawberry

from graph.context import Context
from graph.errors import UserError, user_error
from graph.ids import expect_global_id
from persistence.errors import MigvalError, NotFound, ServiceUnavailable, ValidationFailed
from persistence.idempotency import IdempotencyRequest

T = TypeVar("T")

# The input field every write mutation has (persistence.idempotency).
IDEMPOTENCY_KEY = "idempotency_key"
IDEMPOTENCY_KEY_DESCRIPTION = (
    "Optional key (1..200 chars) making this write safe to retry: a request with the same "
    "key and the same input within MIGVAL_IDEMPOTENCY_TTL_HOURS (default 24 h) writes "
    "nothing and returns the first response again (replayed: true); the same key with "
    "another input fails with IDEMPOTENCY_MISMATCH. Keys are per API token (or anonymous) "
    "and are stored only for successful writes."
)
REPLAYED_DESCRIPTION = (
    "True when this response replays an earlier request with the same idempotencyKey: "
    "nothing was written now, and the object(s) are shown as they are now."
)


async def attempt(call: Awaitable[T]) -> tuple[T | None, list[UserError]]:
    """Await a service call; expected failures become UserErrors (nothing written)."""
    try:
        return await call, []
    except ServiceUnavailable:
        # Not the caller's input: a top-level, retryable error (ADR 0003).
        raise
    except MigvalError as error:
        return None, [user_error(error)]


def input_values(obj: object, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The given (non-null) fields of a strawberry input as column values (never the
    idempotency key)."""
    key = (type(obj), skip)
    read = _READERS.get(key)
    if read is None:
        read = _READERS[key] = _reader(type(obj), skip)
    return read(obj)


Reader = Callable[[object], dict[str, Any]]
_READERS: dict[tuple[type, frozenset[str]], Reader] = {}


def _reader(cls: type, skip: frozenset[str]) -> Reader:
    """``input_values`` of ``cls`` generated as straight-line code (a bulk write reads
    every discrepancy input with it: no loop, no per-field tests of the skipped names).
    Attributes, not vars(obj): the instance dict of a fresh object is built on first
    access, which costs 6 µs per discrepancy of a bulk write."""
    names = [n for n in _field_names(cls) if n not in skip and n != IDEMPOTENCY_KEY]
    body = ["def read(obj):", "    out = {}"]
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise TypeError(f"input field {name!r} of {cls.__name__} is not an identifier")
        body += [
            f"    v = obj.{name}",
            "    if v is not None and v is not UNSET:",
            "        out[" + repr(name) + "] = (",
            "            v.value if isinstance(v, Enum) and not isinstance(v, str) else v",
            "        )",
        ]
    body.append("    return out")
    namespace: dict[str, Any] = {"UNSET": strawberry.UNSET, "Enum": Enum}
    exec("\n".join(body), namespace)  # noqa: S102 - field names checked as identifiers
    reader: Reader = namespace["read"]
    return reader


class InputValues(Collection[dict[str, Any]]):
    """``input_values`` of each of ``inputs``, built as it is iterated: a bulk write's
    service takes its rows one by one (on PostgreSQL while COPY streams the ones
    before), so this work overlaps the database's too."""

    __slots__ = ("_inputs",)

    def __init__(self, inputs: Sequence[object]) -> None:
        self._inputs = inputs

    def __len__(self) -> int:
        return len(self._inputs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(input_values, self._inputs)

    def __contains__(self, item: object) -> bool:
        return any(item == values for values in self)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return names


async def session_db_id(
    context: Context, session_id: strawberry.ID | None, request_id: str | None
) -> int:
    """Database id of the session named by exactly one of its global ID or requestId."""
    if (session_id is None) == (request_id is None):
        raise ValidationFailed("session_id", "give exactly one of sessionId or requestId")
    if session_id is not None:
        return expect_global_id(session_id, "ValidationSession", "session_id")
    row = await context.loaders.session_by_request_id.load(request_id or "")
    if row is None:
        raise NotFound("request_id", f"no session with requestId {request_id!r}")
    return int(row.id)


def idempotency_request(
    info: strawberry.Info[Context, None], input: object
) -> IdempotencyRequest | None:
    """The request to pass to the service when ``input`` carries an idempotency key:
    scoped to the caller, named after this mutation, hashed over the input without
    the key. None without a key."""
    key = getattr(input, IDEMPOTENCY_KEY, None)
    if key is None or key is strawberry.UNSET:
        return None
    return IdempotencyRequest.for_input(
        info.context.actor, key, info.field_name, canonical_input(input)
    )


def replayed(request: IdempotencyRequest | None, errors: list[UserError]) -> bool:
    """The payload's ``replayed``: the call succeeded by replaying a stored outcome."""
    return request is not None and request.replayed and not errors


def canonical_input(value: Any) -> Any:
    """A strawberry input as plain JSON values: nested inputs as objects of their
    given fields (nulls and the idempotency key left out), enums as their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((name, getattr(value, name)) for name in _field_names(type(value)))
        return {
            name: canonical_input(item)
            for name, item in items
            if name != IDEMPOTENCY_KEY and item is not None and item is not strawberry.UNSET
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [canonical_input(item) for item in value]
    if isinstance(value, dict):
        return {str(k): canonical_input(item) for k, item in value.items()}
    return value


__all__ = [
    "IDEMPOTENCY_KEY_DESCRIPTION",
    "REPLAYED_DESCRIPTION",
    "InputValues",
    "attempt",
    "canonical_input",
    "idempotency_request",
    "input_values",
    "replayed",
    "session_db_id",
]
