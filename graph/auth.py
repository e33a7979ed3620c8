"""Who is asking: the ``Authorization: Bearer <token>`` header turned into an Actor.

- A token is checked against the database on every request (no cache), so an
  expired or revoked token is refused on the very next request.
- Without the header: HTTP 401 in production; in development the actor is
  "anonymous" with ``MIGVAL_ANONYMOUS_ROLE`` (graph.settings).
- A header that is present but wrong (not Bearer, malformed, unknown, expired,
  revoked) is refused with 401 in every mode; a token that cannot be checked
  (database unavailable) gets 503, retryable.
- last_used_at is written after the response is sent, at most once a minute per token.
"""

import logging
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from graph.settings import AppSettings
from persistence.actor import Actor
from persistence.database import DatabaseManager
from persistence.models import ApiToken
from persistence.services.tokens import TokenRefused, TokenService, needs_touch

log = logging.getLogger("migval.auth")

# Raised while reading api_tokens when the database cannot answer (asyncpg raises its
# own errors, unwrapped, when a connection cannot be opened).
_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    SQLAlchemyError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

ANONYMOUS_NAME = "anonymous"
_MAX_ADDRESS = 64  # audit_log.client_address


class RequestRefused(Exception):
    """The request is answered before GraphQL runs: ``status`` with a GraphQL-shaped
    body; ``message`` is shown to the client."""

    status = 500
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.request_id: str | None = None

    def extensions(self) -> dict[str, object]:
        return {"code": self.code}

    def headers(self) -> dict[str, str]:
        return {}


class Unauthenticated(RequestRefused):
    """No usable credentials: HTTP 401 with an RFC 6750 challenge."""

    status = 401
    code = "UNAUTHENTICATED"

    def __init__(self, message: str, *, token_presented: bool) -> None:
        super().__init__(message)
        self.token_presented = token_presented

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="migval"'
        if self.token_presented:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class AuthenticationUnavailable(RequestRefused):
    """The token could not be checked (database unreachable): HTTP 503, retryable."""

    status = 503
    code = "SERVICE_UNAVAILABLE"

    def extensions(self) -> dict[str, object]:
        return {"code": self.code, "retryable": True}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class Authenticator:
    def __init__(self, db: DatabaseManager, settings: AppSettings) -> None:
        self.settings = settings
        self.tokens = TokenService(db)

    async def actor_for(
        self, connection: HTTPConnection, request_id: str, response: Response | None = None
    ) -> Actor:
        """The request's actor, or RequestRefused (401, or 503 when the token cannot be
        checked). With ``response``, a token's use is recorded in its background (after
        the response is sent)."""
        client = connection.client.host[:_MAX_ADDRESS] if connection.client else None
        header = connection.headers.get("authorization")
        if header is None:
            if self.settings.auth_required:
                raise Unauthenticated(
                    "authentication required: send the header 'Authorization: Bearer <token>'",
                    token_presented=False,
                )
            return Actor(
                name=ANONYMOUS_NAME,
                role=self.settings.anonymous_role,
                request_id=request_id,
                client_address=client,
            )
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated(
                "malformed Authorization header: expected 'Bearer <token>'",
                token_presented=True,
            )
        try:
            row = await self.tokens.authenticate(credentials.strip())
        except TokenRefused as refusal:
            raise Unauthenticated(refusal.message, token_presented=True) from None
        except _DATABASE_ERRORS as error:
            log.warning("could not check a token (request id %s)", request_id, exc_info=True)
            raise AuthenticationUnavailable(
                "cannot check the token now (database unavailable); retry"
            ) from error
        if response is not None and needs_touch_now(row):
            _add_background(response, BackgroundTask(self._record_use, row))
        return Actor(
            name=row.name,
            role=row.role,
            token_id=row.id,
            request_id=request_id,
            client_address=client,
        )

    async def _record_use(self, row: ApiToken) -> None:
        try:
            await self.tokens.record_use(row)
        except Exception:  # bookkeeping only: never fail a served request over it
            log.warning("could not record the use of token %r", row.name, exc_info=True)


def needs_touch_now(row: ApiToken) -> bool:
    return needs_touch(row, datetime.now(UTC))


def refusal_response(error: RequestRefused) -> JSONResponse:
    """The refusal as HTTP ``error.status`` with a GraphQL-shaped body."""
    headers = error.headers()
    if error.request_id:
        headers["X-Request-ID"] = error.request_id
    return JSONResponse(
        {"errors": [{"message": error.message, "extensions": error.extensions()}]},
        status_code=error.status,
        headers=headers,
    )


def _add_background(response: Response, task: BackgroundTask) -> None:
    existing = response.background
    if existing is None:
        response.background = task
        return
    tasks = existing if isinstance(existing, BackgroundTasks) else BackgroundTasks([existing])
    tasks.tasks.append(task)
    response.background = tasks
