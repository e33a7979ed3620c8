"""The schema and its ASGI app (mounted at /graphql by graph.app)."""

import re
import uuid
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.types import ExecutionContext

from graph.context import Context
from graph.errors import MaskUnexpectedErrors
from graph.mutations.discrepancies import DiscrepancyMutations
from graph.mutations.results import ResultMutations
from graph.mutations.sessions import SessionMutations
from graph.queries import Query
from graph.types.behavioral_test import BehavioralTestResult
from graph.types.discrepancy import Discrepancy
from graph.types.metric import ValidationMetric
from graph.types.result import ValidationResult
from graph.types.session import ValidationSession
from persistence.database import DatabaseManager

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@strawberry.type(description="Writes: sessions, results, behavioral tests, discrepancy resolution.")
class Mutation(SessionMutations, ResultMutations, DiscrepancyMutations):
    pass


class MigvalSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors (validation, bad input) are answers, not incidents; the
        # unexpected ones were logged with their stack by MaskUnexpectedErrors.
        return


schema = MigvalSchema(
    query=Query,
    mutation=Mutation,
    types=[
        ValidationSession,
        ValidationResult,
        Discrepancy,
        BehavioralTestResult,
        ValidationMetric,
    ],
    extensions=[MaskUnexpectedErrors],
)


class MigvalGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app with a fresh Context (loaders, request id) per request."""

    def __init__(self, db: DatabaseManager, **kwargs: Any) -> None:
        super().__init__(schema, **kwargs)
        self.db = db

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        supplied = request.headers.get("x-request-id", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        if isinstance(response, Response):
            response.headers["X-Request-ID"] = request_id
        return Context(
            db=self.db,
            request_id=request_id,
            request=request if isinstance(request, Request) else None,
            response=response if isinstance(response, Response) else None,
        )


def build_graphql_app(db: DatabaseManager) -> MigvalGraphQL:
    return MigvalGraphQL(db, graphql_ide="graphiql", allow_queries_via_get=False)
