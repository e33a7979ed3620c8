"""The schema and its ASGI app (mounted at /graphql by graph.app)."""

import functools
import json
import re
import time
import uuid
from typing import Any

import orjson
import strawberry
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.types import ExecutionContext

from graph import variables
from graph.audit_queries import AuditQuery
from graph.auth import Authenticator, RequestRefused, Unauthenticated, refusal_response
from graph.context import Context
from graph.errors import MaskUnexpectedErrors
from graph.limits import query_limits
from graph.logs import bind_request_id, reset_request_id
from graph.mutations.discrepancies import DiscrepancyMutations
from graph.mutations.results import ResultMutations
from graph.mutations.sessions import SessionMutations
from graph.observability import ANONYMOUS, Metrics, OperationMetrics, Outcome
from graph.plan.extension import ExecutionPlans
from graph.queries import Query as BaseQuery
from graph.settings import PRODUCTION_EXTENSIONS, AppSettings
from graph.stats_queries import StatsQuery
from graph.string_rules import storable_strings
from graph.types.behavioral_test import BehavioralTestResult
from graph.types.discrepancy import Discrepancy
from graph.types.metric import ValidationMetric
from graph.types.result import ValidationResult
from graph.types.session import ValidationSession
from persistence.actor import current_actor, set_actor
from persistence.database import DatabaseManager

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@strawberry.type(
    description="Read access to validation sessions, results, discrepancies, metrics and (admins) the audit log."
)
class Query(BaseQuery, AuditQuery, StatsQuery):
    pass


@strawberry.type(description="Writes: sessions, results, behavioral tests, discrepancy resolution.")
class Mutation(SessionMutations, ResultMutations, DiscrepancyMutations):
    pass


class MigvalSchema(strawberry.Schema):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        variables.install()  # valid variable values coerced by built code

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors (validation, bad input) are answers, not incidents; the
        # unexpected ones were logged with their stack by MaskUnexpectedErrors.
        return


# Types reached only through the Node interface (production_schema() uses them too).
NODE_TYPES = [
    ValidationSession,
    ValidationResult,
    Discrepancy,
    BehavioralTestResult,
    ValidationMetric,
]

schema = MigvalSchema(
    query=Query,
    mutation=Mutation,
    types=NODE_TYPES,
    # OperationMetrics first: its hooks close last, after the others adjusted errors.
    # ExecutionPlans last: its on_execute runs once the others have had theirs.
    extensions=[
        OperationMetrics,
        MaskUnexpectedErrors,
        query_limits(),
        storable_strings,
        ExecutionPlans,
    ],
)


@functools.cache
def production_schema() -> MigvalSchema:
    """``schema`` as production serves it: the same types, config and extensions, plus
    no introspection and no "Did you mean ...?" hints (graph.settings)."""
    return MigvalSchema(
        query=Query,
        mutation=Mutation,
        types=NODE_TYPES,
        extensions=[*schema.extensions, *PRODUCTION_EXTENSIONS],
        config=schema.config,
    )


class MigvalGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app with a fresh Context (actor, loaders, request id) per
    request; requests the Authenticator refuses get HTTP 401 (503 when the token
    cannot be checked), with a GraphQL-shaped body. With ``metrics``, operations are
    counted and timed (graph.observability)."""

    def __init__(
        self,
        db: DatabaseManager,
        settings: AppSettings | None = None,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings or AppSettings()
        super().__init__(production_schema() if self.settings.production else schema, **kwargs)
        self.db = db
        self.authenticator = Authenticator(db, self.settings)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no subscriptions: nothing is served over one
            await WebSocket(scope, receive, send).close(code=1008)
            return
        previous = current_actor()
        started = time.perf_counter()
        request_id = bind_request_id(None)  # logs carry the request id get_context sets
        try:
            await super().__call__(scope, receive, send)
        except RequestRefused as error:  # raised by get_context, before any response
            if self.metrics is not None:  # the operation is not read: its name is unknown
                outcome: Outcome = "rejected" if isinstance(error, Unauthenticated) else "error"
                self.metrics.record_operation(ANONYMOUS, outcome, time.perf_counter() - started)
            await refusal_response(error)(scope, receive, send)
        finally:
            set_actor(previous)  # the actor is the request's only
            reset_request_id(request_id)

    def encode_json(self, data: object) -> bytes:
        """The response body: orjson (a fraction of the stdlib's CPU on large pages);
        what orjson refuses (integers beyond 64 bits in JSON fields) goes through the
        stdlib encoder."""
        try:
            return orjson.dumps(data)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            return json.dumps(data, separators=(",", ":")).encode()

    def decode_json(self, data: str | bytes) -> object:
        """The request body: a JSON object or array; anything else (including JSON
        Python cannot decode: huge numbers, deep nesting, bad UTF-8) is a 400, never
        a 500."""
        try:
            # orjson is several times faster on large writes; what it refuses (integers
            # beyond 64 bits, lone surrogates, NaN) gets the stdlib's verdict.
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            decoded = _stdlib_json(data)
        if not isinstance(decoded, dict | list):
            raise HTTPException(400, "The request body must be a JSON object")
        return decoded

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        supplied = request.headers.get("x-request-id", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        bind_request_id(request_id)  # reset by __call__
        sub_response = response if isinstance(response, Response) else None
        if sub_response is not None:
            sub_response.headers["X-Request-ID"] = request_id
        try:
            actor = await self.authenticator.actor_for(request, request_id, sub_response)
        except RequestRefused as error:
            error.request_id = request_id
            raise
        set_actor(actor)  # services read it (audit trail)
        return Context(
            db=self.db,
            request_id=request_id,
            request=request if isinstance(request, Request) else None,
            response=sub_response,
            actor=actor,
            metrics=self.metrics,
            plan_mode=self.settings.execution_plans,
        )


def _stdlib_json(data: str | bytes) -> object:
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise  # strawberry answers 400 "Unable to parse request body as JSON"
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise HTTPException(400, "Unable to parse request body as JSON") from None


def build_graphql_app(
    db: DatabaseManager, settings: AppSettings | None = None, metrics: Metrics | None = None
) -> MigvalGraphQL:
    """The GraphQL app for ``settings`` (default: development, anonymous admin);
    ``metrics``: where operations are counted (graph.app passes the app's)."""
    settings = settings or AppSettings()
    return MigvalGraphQL(
        db,
        settings,
        metrics,
        graphql_ide="graphiql" if settings.graphiql else None,
        allow_queries_via_get=False,
    )
