"""Errors as users see them: typed payload errors for mutations, coded top-level
errors for queries, and a masking extension for everything unexpected."""

import logging
import re
from collections.abc import Iterator
from enum import Enum

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from persistence import errors as domain

log = logging.getLogger("migval.graphql")


@strawberry.enum(description="Machine-readable reason of a UserError.")
class ErrorCode(Enum):
    INVALID = "INVALID"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    STALE_VERSION = "STALE_VERSION"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    COMMIT_OUTCOME_UNKNOWN = "COMMIT_OUTCOME_UNKNOWN"


@strawberry.type(description="An expected failure of a mutation; nothing was written.")
class UserError:
    field: str | None = strawberry.field(
        description="Path of the input field at fault (e.g. input.discrepancies[3].confidence)."
    )
    code: ErrorCode = strawberry.field(description="Machine-readable reason.")
    message: str = strawberry.field(description="Human-readable explanation.")


_CODES = {
    domain.ValidationFailed: ErrorCode.INVALID,
    domain.NotFound: ErrorCode.NOT_FOUND,
    domain.StaleVersion: ErrorCode.STALE_VERSION,
    domain.Conflict: ErrorCode.CONFLICT,
    domain.InvalidTransition: ErrorCode.INVALID_TRANSITION,
    domain.IdempotencyMismatch: ErrorCode.IDEMPOTENCY_MISMATCH,
    domain.CommitOutcomeUnknown: ErrorCode.COMMIT_OUTCOME_UNKNOWN,
    domain.ServiceUnavailable: ErrorCode.SERVICE_UNAVAILABLE,
}


def camel_path(path: str) -> str:
    """persistence field paths (snake_case) as GraphQL input paths (camelCase)."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path)


def user_error(error: domain.MigvalError, prefix: str = "input.") -> UserError:
    code = next(c for t, c in _CODES.items() if isinstance(error, t))
    field = (
        None
        if error.field is None or error.field == "database"
        else prefix + camel_path(error.field)
    )
    return UserError(field=field, code=code, message=error.message)


class BadUserInput(GraphQLError):
    """A query argument that cannot be served (first > 100, malformed cursor or ID)."""

    def __init__(self, error: domain.MigvalError) -> None:
        field = camel_path(error.field) if error.field else None
        super().__init__(
            f"{field}: {error.message}" if field else error.message,
            extensions={"code": "BAD_USER_INPUT", "field": field},
        )


RETRY_AFTER_S = 1


class ServiceUnavailableError(GraphQLError):
    def __init__(self, error: domain.ServiceUnavailable) -> None:
        # A commit whose outcome is unknown must not be blindly retried (ADR 0003).
        retryable = not isinstance(error, domain.CommitOutcomeUnknown)
        extensions: dict[str, object] = {"code": error.code, "retryable": retryable}
        if retryable:
            extensions["retryAfterSeconds"] = RETRY_AFTER_S
        super().__init__(error.message, extensions=extensions)


def as_graphql_error(error: domain.MigvalError) -> GraphQLError:
    if isinstance(error, domain.ServiceUnavailable):
        return ServiceUnavailableError(error)
    return BadUserInput(error)


class MaskUnexpectedErrors(SchemaExtension):
    """Replace any error that is not a GraphQL-level or deliberate user error with
    'Unexpected error' plus the request id, and log it with its stack."""

    def on_operation(self) -> Iterator[None]:  # parse, validate and execute
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        request_id = getattr(self.execution_context.context, "request_id", "-")
        ctx = self.execution_context
        # operation_type raises when the document did not parse.
        is_mutation = (
            ctx.graphql_document is not None and ctx.operation_type is OperationType.MUTATION
        )
        masked = []
        for error in result.errors:
            original = error.original_error
            if is_mutation and original is not None and error.path and len(error.path) > 1:
                # The mutation's resolver returned, so its write committed; only reading
                # the reply failed. Never tell the client it may simply retry.
                log.error(
                    "reading the reply of a committed mutation failed at %s (request id %s)",
                    error.path,
                    request_id,
                    exc_info=original,
                )
                masked.append(_response_incomplete(error, request_id))
                continue
            if original is None or isinstance(original, GraphQLError):
                if not (error.extensions or {}).get("code"):
                    # e.g. variable coercion ("Variable '$x' has invalid value")
                    error.extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
                masked.append(error)
                continue
            if isinstance(original, domain.MigvalError):
                masked.append(_located(as_graphql_error(original), error))
                continue
            log.error(
                "unexpected error in %s (request id %s)",
                error.path,
                request_id,
                exc_info=original,
            )
            masked.append(
                GraphQLError(
                    f"Unexpected error (request id {request_id})",
                    nodes=error.nodes,
                    path=error.path,
                    extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
                )
            )
        result.errors = masked


def _response_incomplete(error: GraphQLError, request_id: str) -> GraphQLError:
    return GraphQLError(
        "The write was committed but part of the reply could not be read; query the "
        f"object back instead of retrying (request id {request_id})",
        nodes=error.nodes,
        path=error.path,
        extensions={
            "code": "RESPONSE_INCOMPLETE",
            "committed": True,
            "retryable": False,
            "requestId": request_id,
        },
    )


def _located(new: GraphQLError, old: GraphQLError) -> GraphQLError:
    return GraphQLError(new.message, nodes=old.nodes, path=old.path, extensions=new.extensions)
