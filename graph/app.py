"""The ASGI application: ``create_app()`` is the factory uvicorn calls.

Nothing touches the database at import time or in ``create_app()``: the engine is
created in the lifespan (``app.state.db``) and disposed at shutdown.

Routes:
- ``GET /healthz``: liveness, 200 while the process runs; never touches the database.
- ``GET /readyz``: readiness, 200 when the database answers and its schema is at the
  migration head, 503 otherwise (with a ``reason``).
- ``/graphql``: the GraphQL endpoint, built by ``graph.schema``: bearer tokens
  (graph.auth), GraphiQL in a browser in development mode only (graph.settings).
- ``GET /metrics``: Prometheus metrics of this app (graph.observability); production
  requires a viewer token unless MIGVAL_METRICS_PUBLIC=1.

In production, logging is configured here too (graph.logs): JSON lines.
"""

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from graph.limits import LimitSettings, RequestLimits
from graph.logs import configure_logging
from graph.observability import HttpMetrics, Metrics, metrics_endpoint
from graph.schema import build_graphql_app
from graph.settings import SERVER_PROCESS_ENV, AppSettings
from persistence.crypto import KeyRing, configure_encryption
from persistence.database import DatabaseManager, HealthStatus
from persistence.idempotency import idempotency_ttl
from persistence.instrumentation import InstrumentationSettings

log = logging.getLogger(__name__)

READINESS_TIMEOUT_S = 2.0
GC_YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Freeze what is loaded by now (schema, metadata, libraries: it lives as long as the
    process), so the cyclic collector stops rescanning it; then collect the youngest
    generation every 50,000 net allocations instead of 700. A dashboard answer
    allocates ~20,000 objects, and a planned read leaves nothing to collect
    (tests/graph/test_reference_cycles.py): the default ran ~7 collections per request
    that found nothing (~1 ms of CPU), and 10,000 still ran one every few requests,
    each scanning the answers in flight (~0.4 ms per request at 8 concurrent requests,
    ~0.85 ms at 32; ~0 at 50,000). What does make cycles (graphql-core's executor
    in standard execution, exceptions with their tracebacks on error paths) is
    collected at the next run, every 50,000 allocations at most."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def create_app(settings: AppSettings | None = None) -> Starlette:
    """Build the application (uvicorn: ``graph.app:create_app`` with ``factory=True``).
    ``settings`` default to the environment (MIGVAL_ENV, ...; see graph.settings)."""
    app_settings = settings or AppSettings.from_env()
    if app_settings.production:  # JSON lines (uvicorn's worker processes come here too)
        configure_logging(production=True)
    # Keys for the encrypted JSON columns; production without keys refuses to start.
    configure_encryption(KeyRing.from_env())
    idempotency_ttl()  # MIGVAL_IDEMPOTENCY_TTL_HOURS: a malformed value refuses to start
    # One registry per app: several apps (tests) never share or collide on metrics.
    metrics = Metrics()
    instrumentation = InstrumentationSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = DatabaseManager.from_env()
        app.state.db = db
        try:
            metrics.observe_database(db, instrumentation)
            app.state.graphql = build_graphql_app(db, app_settings, metrics)
            if os.environ.get(SERVER_PROCESS_ENV) == "1":
                tune_collector()
            yield
        finally:
            metrics.release_database()
            await db.dispose()

    app = Starlette(
        routes=[
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/readyz", _readyz, methods=["GET"]),
            Route("/graphql", _GraphQLEndpoint()),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=[
            # Outermost: counts every answer, the limits' refusals included.
            Middleware(HttpMetrics, metrics=metrics),
            # Body size, batches and the request timeout (graph.limits; MIGVAL_* settings).
            Middleware(RequestLimits, settings=LimitSettings.from_env()),
        ],
    )
    app.state.settings = app_settings
    app.state.metrics = metrics
    log.info("migval in %s mode", app_settings.env.value)
    return app


class _GraphQLEndpoint:
    """Forwards /graphql to the GraphQL app the lifespan built (it needs the database
    manager, which does not exist before startup)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        graphql: ASGIApp = scope["app"].state.graphql
        await graphql(scope, receive, send)


async def _healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> JSONResponse:
    db: DatabaseManager = request.app.state.db
    health = await db.health(timeout_s=READINESS_TIMEOUT_S)
    return JSONResponse(_readiness_body(health), status_code=200 if health.ok else 503)


def _readiness_body(health: HealthStatus) -> dict[str, Any]:
    return {
        "status": "ok" if health.ok else "unavailable",
        "dialect": health.dialect,
        "schema_revision": health.schema_revision,
        "head_revision": health.head_revision,
        "latency_ms": None if health.latency_ms is None else round(health.latency_ms, 3),
        "reason": _not_ready_reason(health),
    }


def _not_ready_reason(health: HealthStatus) -> str | None:
    if health.ok:
        return None
    if health.error is not None:
        return f"database unreachable ({health.error})"
    if health.schema_revision is None:
        return "database not migrated: run `migval db migrate`"
    return (
        f"schema at revision {health.schema_revision}, expected {health.head_revision}: "
        "run `migval db migrate`"
    )
