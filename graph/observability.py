"""Prometheus metrics for the GraphQL and HTTP layers, and ``GET /metrics``.

- ``Metrics``: one ``CollectorRegistry`` per app (``create_app()`` makes one, so tests
  and several apps in one process never collide) with the GraphQL and HTTP metrics,
  the process collectors, and the database's (persistence.instrumentation) once
  ``observe_database(db)`` is called.
- ``OperationMetrics``: the schema extension that counts and times each GraphQL
  operation by operation name and outcome (graph.schema adds it first, so it sees the
  final errors; it reads the app's ``Metrics`` from the request context).
- ``HttpMetrics``: ASGI middleware counting and timing HTTP requests by route.
- ``metrics_endpoint``: the exposition. Open in development; in production it needs a
  bearer token with the viewer role (graph.auth), unless ``MIGVAL_METRICS_PUBLIC=1``.

Operation names are client input, so their label is bounded: no name, or a name that
is not an operation of the document (unknown, or the document did not parse) is
``anonymous``; a name longer than 64 characters or not shaped like a GraphQL name is
``invalid``; past ``MAX_OPERATION_NAMES`` distinct names, new ones are ``other``.
Requests refused before the operation is read (bad or missing token) are
``anonymous``: unauthenticated clients cannot add label values.
"""

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final, Literal

from graphql import GraphQLError, OperationDefinitionNode
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from graph.auth import Authenticator, RequestRefused, refusal_response
from graph.settings import AppSettings
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.instrumentation import DatabaseInstrumentation, InstrumentationSettings

Outcome = Literal["ok", "user_error", "error", "rejected"]

ANONYMOUS: Final = "anonymous"
INVALID: Final = "invalid"
OTHER: Final = "other"
MAX_OPERATION_NAME_LENGTH: Final = 64
MAX_OPERATION_NAMES: Final = 100
_GRAPHQL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
GRAPHQL_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE: Final = "unmatched"
# Top-level errors of an executed operation that are refusals (auth), not failures.
_REFUSAL_CODES: Final = frozenset({"FORBIDDEN", "UNAUTHENTICATED"})
# Raised by strawberry before execution: no query, unknown operation name, a mutation
# over GET.
_REQUEST_ERRORS: Final = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def is_valid_operation_name(name: str) -> bool:
    """A GraphQL name ([A-Za-z_][A-Za-z0-9_]*) of at most 64 characters."""
    return len(name) <= MAX_OPERATION_NAME_LENGTH and _GRAPHQL_NAME.fullmatch(name) is not None


class Metrics:
    """The app's registry and its GraphQL and HTTP metrics."""

    def __init__(self, *, process_collectors: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.graphql_requests = Counter(
            "migval_graphql_requests",
            "GraphQL requests by operation name and outcome (ok, user_error: errors in "
            "a mutation payload, error: top-level errors, rejected: refused by "
            "validation, limits or authentication).",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.graphql_duration = Histogram(
            "migval_graphql_request_duration_seconds",
            "Time from parsing a GraphQL operation to its result, by operation name and outcome.",
            ["operation", "outcome"],
            buckets=GRAPHQL_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "migval_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "migval_http_request_duration_seconds",
            "Time from receiving an HTTP request to the end of its response, by route and method.",
            ["route", "method"],
            buckets=GRAPHQL_BUCKETS,
            registry=self.registry,
        )
        if process_collectors:
            # The same figures as prometheus_client's default registry, in this one.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.database: DatabaseInstrumentation | None = None
        self._names: set[str] = set()
        self._names_lock = threading.Lock()

    # -- database ------------------------------------------------------------------

    def observe_database(
        self, db: DatabaseManager, settings: InstrumentationSettings | None = None
    ) -> DatabaseInstrumentation:
        """Time ``db``'s statements and export its pool (until ``release_database``)."""
        self.release_database()
        self.database = DatabaseInstrumentation(db, self.registry, settings).attach()
        return self.database

    def release_database(self) -> None:
        if self.database is not None:
            self.database.detach()
            # Its histogram goes too: a later observe_database registers a fresh one.
            self.registry.unregister(self.database.durations)
            self.registry.unregister(self.database.slow)
            self.database = None

    # -- GraphQL -------------------------------------------------------------------

    def operation_label(self, name: str | None, *, known: bool) -> str:
        """The ``operation`` label for a requested operation name; ``known``: the
        name is an operation of the parsed document."""
        if not name:
            return ANONYMOUS
        if not is_valid_operation_name(name):
            return INVALID
        if not known:
            return ANONYMOUS
        with self._names_lock:
            if name in self._names:
                return name
            if len(self._names) >= MAX_OPERATION_NAMES:
                return OTHER
            self._names.add(name)
        return name

    def record_operation(self, operation: str, outcome: Outcome, seconds: float) -> None:
        self.graphql_requests.labels(operation, outcome).inc()
        self.graphql_duration.labels(operation, outcome).observe(seconds)

    # -- HTTP ----------------------------------------------------------------------

    def record_http(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_duration.labels(route, method).observe(seconds)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when ``accept`` asks for
        it) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class OperationMetrics(SchemaExtension):
    """Counts and times each GraphQL operation into the request's ``Metrics``
    (``context.metrics``; nothing is recorded without one)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False  # parse or validation errors

    def on_operation(self) -> Iterator[None]:
        metrics: Metrics | None = getattr(self.execution_context.context, "metrics", None)
        started = time.perf_counter()
        outcome: Outcome = "error"
        try:
            yield
            outcome = self._outcome()
        except _REQUEST_ERRORS:
            outcome = "rejected"
            raise
        finally:  # also when the request is cancelled (timeout): an error
            if metrics is not None:
                label = metrics.operation_label(
                    self.execution_context.operation_name, known=self._known()
                )
                metrics.record_operation(label, outcome, time.perf_counter() - started)

    def on_parse(self) -> Iterator[None]:
        yield
        self.refused = self.refused or bool(self.execution_context.pre_execution_errors)

    def on_validate(self) -> Iterator[None]:
        yield
        self.refused = self.refused or bool(self.execution_context.pre_execution_errors)

    def _known(self) -> bool:
        """Whether the operation name is one of the document's operations."""
        context = self.execution_context
        document = context.graphql_document
        name = context.operation_name
        if document is None or not name:
            return False
        return any(
            isinstance(d, OperationDefinitionNode) and d.name is not None and d.name.value == name
            for d in document.definitions
        )

    def _outcome(self) -> Outcome:
        if self.refused:
            return "rejected"
        result = self.execution_context.result
        if result is None:
            return "ok"
        errors: list[GraphQLError] = list(getattr(result, "errors", None) or ())
        if errors:
            return "rejected" if all(_is_refusal(e) for e in errors) else "error"
        return "user_error" if _has_payload_errors(getattr(result, "data", None)) else "ok"


def _is_refusal(error: GraphQLError) -> bool:
    code = (error.extensions or {}).get("code")
    if code is not None:
        return code in _REFUSAL_CODES
    # No code and no path: graphql-core refused the request as a whole (variables
    # that do not coerce, several operations and no name) before any resolver ran.
    return error.path is None


def _has_payload_errors(data: Any) -> bool:
    """Whether a root field's payload carries a non-empty ``errors`` list."""
    if not isinstance(data, dict):
        return False
    return any(isinstance(value, dict) and value.get("errors") for value in data.values())


class HttpMetrics:
    """ASGI middleware: each HTTP request counted by route (the path template of the
    matching route, else ``unmatched``), method and status, and timed to the end of
    its response body. A request that fails without a response counts as 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        finished: float | None = None
        status = 500

        async def tracked_send(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            end = finished if finished is not None else time.perf_counter()
            self.metrics.record_http(_route(scope), scope["method"], status, end - started)


def _route(scope: Scope) -> str:
    """The path template of the app route ``scope`` matches (asked of the routes
    themselves, so requests refused before routing, e.g. 413, are labelled too)."""
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


# --------------------------------------------------------------------------- /metrics


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``. Production: a bearer token with the viewer role (401 without
    a usable token, 403 without the role), unless MIGVAL_METRICS_PUBLIC=1."""
    settings: AppSettings = request.app.state.settings
    metrics: Metrics = request.app.state.metrics
    placeholder = Response()  # collects the token's last-used bookkeeping
    if settings.production and not settings.metrics_public:
        refusal = await _refuse_unless_viewer(request, settings, placeholder)
        if refusal is not None:
            return refusal
    body, content_type = metrics.render(request.headers.get("accept", ""))
    return Response(body, media_type=content_type, background=placeholder.background)


async def _refuse_unless_viewer(
    request: Request, settings: AppSettings, response: Response
) -> Response | None:
    request_id = uuid.uuid4().hex
    authenticator = Authenticator(request.app.state.db, settings)
    try:
        actor = await authenticator.actor_for(request, request_id, response)
    except RequestRefused as error:
        error.request_id = request_id
        return refusal_response(error)
    if actor.has_role(Role.VIEWER):
        return None
    return JSONResponse(
        {
            "errors": [
                {
                    "message": "FORBIDDEN: requires the viewer role",
                    "extensions": {"code": "FORBIDDEN"},
                }
            ]
        },
        status_code=403,
        headers={"X-Request-ID": request_id},
    )
