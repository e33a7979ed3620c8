"""Shared mutation plumbing: running a service call and turning domain errors into
payload errors, and resolving a session reference."""

from collections.abc import Awaitable
from enum import Enum
from typing import Any, TypeVar

import strawberry

from graph.context import Context
from graph.errors import UserError, user_error
from graph.ids import expect_global_id
from persistence.errors import MigvalError, NotFound, ServiceUnavailable, ValidationFailed

T = TypeVar("T")


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
    """The given (non-null) fields of a strawberry input as column values."""
    values: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if name in skip or value is None or value is strawberry.UNSET:
            continue
        values[name] = (
            value.value if isinstance(value, Enum) and not isinstance(value, str) else value
        )
    return values


async def session_db_id(
    context: Context, session_id: strawberry.ID | None, request_id: str | None
) -> int:
    """Database id of the session named by exactly one of its global ID or requestId."""
    if (session_id is None) == (request_id is None):
        raise ValidationFailed("session_id", "give exactly one of sessionId or requestId")
    if session_id is not None:
        return expect_global_id(session_id, "ValidationSession", "session_id")
    row = await context.loaders.session_by_request_id.load(request_id or "")
    if row is None or row.id is None:
        raise NotFound("request_id", f"no session with requestId {request_id!r}")
    return row.id


__all__ = ["attempt", "input_values", "session_db_id"]
