"""Observability: /metrics (GraphQL operations by name and outcome, HTTP requests by
route, pool gauges, statement durations), who may read it, the slow-statement log
(never with parameter values) and JSON logs in production."""

import base64
import io
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

import persistence.crypto
from graph.app import create_app
from graph.logs import (
    UVICORN_LOGGERS,
    JsonFormatter,
    bind_request_id,
    configure_logging,
    reset_request_id,
)
from graph.observability import MAX_OPERATION_NAMES, Metrics, is_valid_operation_name
from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError
from persistence.instrumentation import (
    MAX_LOGGED_STATEMENT_CHARS,
    DatabaseInstrumentation,
    InstrumentationSettings,
    statement_kind,
)
from persistence.services.tokens import TokenService

BASE_URL = "http://migval.test"
ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-" + secrets.token_hex(8)  # a value that must never reach a log
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ------------------------------------------------------------------------- helpers


@pytest.fixture
def process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """create_app() installs the key ring and logging process-wide: put them back."""
    monkeypatch.setattr(persistence.crypto, "_active", persistence.crypto._active)
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_uvicorn = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
        for name in UVICORN_LOGGERS
    }
    try:
        yield
    finally:
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, propagate) in saved_uvicorn.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate


@asynccontextmanager
async def running(
    database_url: str, monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """create_app() on ``database_url`` with its lifespan running, and a client."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield app, client


def production_env(**extra: str) -> dict[str, str]:
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    return {"MIGVAL_ENV": "production", "MIGVAL_ENCRYPTION_KEYS": key, **extra}


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def operations(samples: Samples, operation: str, outcome: str) -> float:
    return value(samples, "migval_graphql_requests_total", operation=operation, outcome=outcome)


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("/graphql", json=body, headers=headers)


# ------------------------------------------------------------- GraphQL and HTTP


async def test_graphql_operations_are_counted_by_name_and_outcome(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    async with running(database_url, monkeypatch) as (_app, client):
        named = await post(client, {"query": "query ListSessions { sessions { totalCount } }"})
        assert named.json()["data"] == {"sessions": {"totalCount": 0}}
        for _ in range(2):  # the operationName given explicitly: the same label
            again = await post(
                client,
                {
                    "query": "query ListSessions { sessions { totalCount } }",
                    "operationName": "ListSessions",
                },
            )
            assert again.status_code == 200
        unnamed = await post(client, {"query": "{ sessions { totalCount } }"})
        assert "errors" not in unnamed.json()

        payload_error = await post(
            client,
            {
                "query": 'mutation Promote { updateSessionStatus(input: {requestId: "nope", '
                "status: PROCESSING}) { session { id } errors { code } } }"
            },
        )
        payload = payload_error.json()["data"]["updateSessionStatus"]
        assert payload["errors"] == [{"code": "NOT_FOUND"}]

        top_level = await post(
            client, {"query": 'query Broken { sessions(after: "garbage") { totalCount } }'}
        )
        assert top_level.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

        invalid = await post(client, {"query": "query Typo { sessionz { totalCount } }"})
        assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        too_big = {"query": "query Deep { sessions(first: 500) { totalCount } }"}
        too_deep = await post(client, too_big)
        assert too_deep.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        syntax = await post(client, {"query": "query Cut {", "operationName": "Cut"})
        assert syntax.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
        unknown = await post(
            client, {"query": "query Known { __typename }", "operationName": "Unknown"}
        )
        assert unknown.status_code == 400  # strawberry: "Unknown operation named ..."
        long_name = "Q" * 65
        await post(client, {"query": f"query {long_name} {{ __typename }}"})
        malformed = await post(client, {"query": "{ __typename }", "operationName": "no name!"})
        assert malformed.status_code == 400

        missing = await client.get("/nowhere")
        assert missing.status_code == 404
        samples = await scrape(client)

    assert operations(samples, "ListSessions", "ok") == 3
    assert operations(samples, "anonymous", "ok") == 1
    assert operations(samples, "Promote", "user_error") == 1
    assert operations(samples, "Broken", "error") == 1
    assert operations(samples, "Typo", "rejected") == 1
    assert operations(samples, "Deep", "rejected") == 1  # first > 100: refused at validation
    assert operations(samples, "anonymous", "rejected") == 2  # did not parse; unknown name
    assert operations(samples, "invalid", "ok") == 1  # 65 characters
    assert operations(samples, "invalid", "rejected") == 1  # not a GraphQL name
    assert "Cut" not in str(samples)
    assert "Unknown" not in str(samples)
    latency = ("migval_graphql_request_duration_seconds_count", "ListSessions", "ok")
    assert value(samples, latency[0], operation=latency[1], outcome=latency[2]) == 3
    assert value(samples, "migval_graphql_request_duration_seconds_sum",
                 operation="ListSessions", outcome="ok") > 0  # fmt: skip
    http = "migval_http_requests_total"
    assert value(samples, http, route="/graphql", method="POST", status="200") == 10
    assert value(samples, http, route="/graphql", method="POST", status="400") == 2
    assert value(samples, http, route="unmatched", method="GET", status="404") == 1
    assert value(samples, "migval_http_request_duration_seconds_count",
                 route="/graphql", method="POST") == 12  # fmt: skip


async def test_refusals_before_graphql_are_counted(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    env = production_env(MIGVAL_METRICS_PUBLIC="1", MIGVAL_MAX_BODY_BYTES="2048")
    async with running(database_url, monkeypatch, env) as (_app, client):
        query = {"query": "query ListSessions { sessions { totalCount } }"}
        assert (await post(client, query)).status_code == 401
        bad = await post(client, query, Authorization="Bearer mvt_" + "A" * 43)
        assert bad.status_code == 401
        big = await post(client, {"query": "query Big { __typename }", "pad": "x" * 4096})
        assert big.status_code == 413
        samples = await scrape(client)
    # The operation is not read when the token is refused: no client-chosen label.
    assert operations(samples, "anonymous", "rejected") == 2
    assert operations(samples, "ListSessions", "rejected") == 0
    http = "migval_http_requests_total"
    assert value(samples, http, route="/graphql", method="POST", status="401") == 2
    assert value(samples, http, route="/graphql", method="POST", status="413") == 1


def test_operation_labels_are_bounded() -> None:
    metrics = Metrics(process_collectors=False)
    assert metrics.operation_label(None, known=False) == "anonymous"
    assert metrics.operation_label("", known=True) == "anonymous"
    assert metrics.operation_label("Ghost", known=False) == "anonymous"
    assert metrics.operation_label("x" * 65, known=True) == "invalid"
    assert metrics.operation_label("1abc", known=True) == "invalid"
    assert metrics.operation_label("naïve", known=True) == "invalid"
    assert metrics.operation_label("_ok_2", known=True) == "_ok_2"
    assert is_valid_operation_name("A" * 64)
    for i in range(MAX_OPERATION_NAMES):
        metrics.operation_label(f"Op{i}", known=True)
    assert metrics.operation_label("OneTooMany", known=True) == "other"
    assert metrics.operation_label("Op3", known=True) == "Op3"  # already counted


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # no "Duplicated timeseries" error
    first.record_operation("A", "ok", 0.01)
    assert b'operation="A"' in first.render()[0]
    assert b'operation="A"' not in second.render()[0]


# ------------------------------------------------------------------ the database


async def test_pool_gauges(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    async with running(database_url, monkeypatch) as (app, client):
        app_db: DatabaseManager = app.state.db
        idle = await scrape(client)
        async with app_db.read_session() as session:
            await session.execute(sa.text("SELECT 1"))
            busy = await scrape(client)
            stats = app_db.pool_stats()
        if app_db.loop_reads is not None:  # counted by LoopReads (test_loop_reads.py)
            app_db.loop_reads.moved["locked"] += 2
        moved = await scrape(client)
    size = value(idle, "migval_db_pool_size")
    assert size == stats.size >= 1
    if app_db.dialect == "postgresql":
        assert size == app_db.settings.pool_size
    for samples in (idle, busy):
        for gauge in ("checked_in", "checked_out", "overflow"):
            assert value(samples, f"migval_db_pool_{gauge}") >= 0
        assert value(samples, "migval_db_pool_checked_out") <= size + app_db.settings.max_overflow
    assert value(busy, "migval_db_pool_checked_out") == stats.checked_out >= 1
    assert value(busy, "migval_db_pool_checked_in") == stats.checked_in
    assert value(idle, "migval_db_pool_checked_out") == 0  # nothing left checked out
    counter = "migval_db_loop_reads_moved_total"
    reasons = {labels for name, labels in idle if name == counter}
    if app_db.dialect == "postgresql":  # no loop reads, no series
        assert reasons == set()
        return
    assert reasons == {frozenset({("reason", r)}) for r in ("locked", "over_budget", "broken")}
    assert value(moved, counter, reason="locked") == value(idle, counter, reason="locked") + 2


async def test_statement_durations_by_kind(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    create = (
        'mutation { createValidationSession(input: {requestId: "obs-1", '
        "sourceTechnology: PYTHON_FLASK, targetTechnology: JAVA_SPRING, "
        "validationScope: FULL_SYSTEM, sourceInputType: CODE_FILES, "
        "targetInputType: CODE_FILES}) { created errors { code } } }"
    )
    count = "migval_db_statement_duration_seconds_count"
    async with running(database_url, monkeypatch) as (_app, client):
        before = await scrape(client)
        listed = await post(client, {"query": "{ sessions { totalCount } }"})
        assert "errors" not in listed.json()
        created = await post(client, {"query": create})
        assert created.json()["data"]["createValidationSession"] == {"created": True, "errors": []}
        after = await scrape(client)
    assert value(after, count, kind="SELECT") >= value(before, count, kind="SELECT") + 1
    assert value(after, count, kind="INSERT") >= value(before, count, kind="INSERT") + 1
    assert value(after, "migval_db_statement_duration_seconds_sum", kind="SELECT") > 0
    buckets = [
        v for (name, labels), v in after.items()
        if name == "migval_db_statement_duration_seconds_bucket" and ("kind", "SELECT") in labels
    ]  # fmt: skip
    assert max(buckets) == value(after, count, kind="SELECT")


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("SELECT 1", "SELECT"),
        ("  \n select * from t", "SELECT"),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT"),
        ("/* hint */ -- note\nINSERT INTO t VALUES (1)", "INSERT"),
        ("UPDATE t SET updated_at = now()", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("WITH x AS (SELECT 1) SELECT updated_at FROM x", "SELECT"),
        ("WITH gone AS (DELETE FROM t RETURNING id) SELECT count(*) FROM gone", "DELETE"),
        ("BEGIN IMMEDIATE", "OTHER"),
        ("PRAGMA foreign_keys=ON", "OTHER"),
        ("", "OTHER"),
    ],
)
def test_statement_kind(statement: str, kind: str) -> None:
    assert statement_kind(statement) == kind


@asynccontextmanager
async def instrumented(
    db: DatabaseManager, slow_ms: float
) -> AsyncIterator[DatabaseInstrumentation]:
    instrumentation = DatabaseInstrumentation(
        db, CollectorRegistry(), InstrumentationSettings(slow_statement_ms=slow_ms)
    ).attach()
    try:
        yield instrumentation
    finally:
        instrumentation.detach()


def slow_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "migval.sql"]


def assert_no_secret(record: logging.LogRecord) -> None:
    rendered = (record.getMessage(), repr(record.args), JsonFormatter().format(record))
    for text in rendered:
        assert SECRET not in text


async def test_slow_statements_are_logged_without_parameter_values(
    db: DatabaseManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="migval.sql")
    padding = ", ".join(f"{i} AS c{i}" for i in range(200))  # longer than the log keeps
    async with instrumented(db, slow_ms=0) as instrumentation:
        async with db.read_session() as session:
            row = await session.execute(
                sa.text(f"SELECT :token AS token, {padding}"), {"token": SECRET}
            )
            assert row.first()[0] == SECRET  # type: ignore[index]
        records = slow_records(caplog)
        assert len(records) == 1
        record = records[0]
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert "SELECT took" in message
        assert "ms" in message
        statement = message.split("ms): ", 1)[1]
        assert statement.startswith("SELECT ")
        assert len(statement) == MAX_LOGGED_STATEMENT_CHARS
        assert_no_secret(record)

        caplog.clear()  # a failing statement is timed and logged too, still without values
        with pytest.raises(sa.exc.DBAPIError) as raised:
            async with db.read_session() as session:
                await session.execute(
                    sa.text("SELECT * FROM no_such_table WHERE name = :token"), {"token": SECRET}
                )
        assert SECRET not in str(raised.value)  # hide_parameters: not in errors either
        (failed,) = slow_records(caplog)
        assert "(failed)" in failed.getMessage()
        assert "no_such_table" in failed.getMessage()
        assert_no_secret(failed)
        samples = parse(_render(instrumentation.registry))
    assert value(samples, "migval_db_slow_statements_total", kind="SELECT") == 2
    assert value(samples, "migval_db_statement_duration_seconds_count", kind="SELECT") == 2


def _render(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


async def test_fast_statements_are_not_logged(
    db: DatabaseManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="migval.sql")
    async with instrumented(db, slow_ms=60_000), db.read_session() as session:
        await session.execute(sa.text("SELECT 1"))
    assert slow_records(caplog) == []


async def test_detach_stops_timing(db: DatabaseManager) -> None:
    async with instrumented(db, slow_ms=60_000) as instrumentation:
        pass
    async with db.read_session() as session:
        await session.execute(sa.text("SELECT 1"))
    samples = parse(_render(instrumentation.registry))
    assert value(samples, "migval_db_statement_duration_seconds_count", kind="SELECT") == 0


def test_slow_statement_setting() -> None:
    def threshold(raw: str) -> float:
        return InstrumentationSettings.from_env({"MIGVAL_SLOW_STATEMENT_MS": raw}).slow_statement_ms

    assert InstrumentationSettings.from_env({}).slow_statement_ms == 500
    assert threshold("") == 500
    assert threshold("0") == 0
    assert threshold(" 2.5 ") == 2.5
    for bad in ("-1", "soon", "nan", "inf"):
        with pytest.raises(ConfigurationError) as error:
            InstrumentationSettings.from_env({"MIGVAL_SLOW_STATEMENT_MS": bad})
        assert error.value.field == "MIGVAL_SLOW_STATEMENT_MS"


# ------------------------------------------------------------- who reads /metrics


async def test_metrics_need_a_viewer_token_in_production(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    token = (await TokenService(db).create("scraper", "viewer")).token
    revoked = (await TokenService(db).create("old-scraper", "viewer")).token
    await TokenService(db).revoke("old-scraper")
    async with running(database_url, monkeypatch, production_env()) as (_app, client):
        anonymous = await client.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "migval_" not in anonymous.text
        for header in ("Bearer nonsense", f"Bearer {revoked}", f"Basic {token}"):
            refused = await client.get("/metrics", headers={"Authorization": header})
            assert refused.status_code == 401, header
        samples = await scrape(client, Authorization=f"Bearer {token}")
        assert value(samples, "migval_db_pool_size") >= 1


async def test_metrics_public_in_production_when_configured(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    env = production_env(MIGVAL_METRICS_PUBLIC="1")
    async with running(database_url, monkeypatch, env) as (_app, client):
        await scrape(client)


async def test_metrics_open_in_development(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    monkeypatch.setenv("MIGVAL_ANONYMOUS_ROLE", "none")  # no role at all: still open
    async with running(database_url, monkeypatch) as (_app, client):
        openmetrics = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert openmetrics.status_code == 200
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")
        await scrape(client)


# ------------------------------------------------------------------------ logging


def test_json_formatter() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.getLogger("migval.test").makeRecord(
            "migval.test", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info()
        )
    token = bind_request_id("req-42")
    try:
        line = JsonFormatter().format(record)
    finally:
        reset_request_id(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "request_id", "exc_info"}
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "migval.test"
    assert entry["message"] == "failed here"
    assert entry["request_id"] == "req-42"
    assert entry["time"].endswith("Z")
    assert "T" in entry["time"]
    assert entry["exc_info"].startswith("Traceback")
    assert "boom" in entry["exc_info"]
    plain = json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "hi"})))
    assert set(plain) == {"time", "level", "logger", "message"}  # no request, no exception


def test_configure_logging_production(process_state: None) -> None:
    root = logging.getLogger()
    level = root.level
    configure_logging(production=True, level="debug", stream=io.StringIO())
    assert root.level == level  # other handlers were there first: their levels stand
    root.handlers[:] = []  # as in a fresh server process
    out = io.StringIO()
    assert configure_logging(production=True, level="info", stream=out) is not None
    configure_logging(production=True, level="info", stream=out)  # replaces, never doubles
    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(ours) == 1
    logging.getLogger("migval.test").info("hello %s", "world")
    logging.getLogger("migval.test").debug("not at info")
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/healthz", "1.1", 200)
    logging.getLogger("uvicorn.error").warning("uvicorn says")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["logger"], e["level"]) for e in lines] == [
        ("migval.test", "INFO"),
        ("uvicorn.access", "INFO"),
        ("uvicorn.error", "WARNING"),
    ]
    assert lines[1]["message"] == '127.0.0.1:1 - "GET /healthz HTTP/1.1" 200'
    for name in UVICORN_LOGGERS:
        assert logging.getLogger(name).handlers == []
        assert logging.getLogger(name).propagate


def test_configure_logging_development(process_state: None) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert before  # pytest's own capture handlers
    assert configure_logging(production=False) is None  # someone else's setup: kept
    assert root.handlers == before
    root.handlers[:] = []
    out = io.StringIO()
    assert configure_logging(production=False, level="warning", stream=out) is not None
    logging.getLogger("migval.test").info("quiet")
    logging.getLogger("migval.test").warning("readable")
    assert out.getvalue().rstrip().endswith("WARNING [migval.test] readable")
    assert "quiet" not in out.getvalue()
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(production=False, level="loud", stream=out)
    assert len(root.handlers) == 1


async def test_production_app_logs_json_with_the_request_id(
    db: DatabaseManager,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    process_state: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = (await TokenService(db).create("reader", "viewer")).token
    env = production_env(MIGVAL_SLOW_STATEMENT_MS="0")
    async with running(database_url, monkeypatch, env) as (_app, client):
        capsys.readouterr()
        response = await post(
            client,
            {"query": "query ListSessions { sessions { totalCount } }"},
            Authorization=f"Bearer {token}",
            **{"X-Request-ID": "trace-me-1"},
        )
        assert response.status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    slow = [e for e in lines if e["logger"] == "migval.sql"]
    assert slow, lines
    assert all(e["request_id"] == "trace-me-1" for e in slow)
    assert all(set(e) == {"time", "level", "logger", "message", "request_id"} for e in slow)
    assert token not in json.dumps(lines)


@pytest.mark.sqlite_only
def test_serve_logs_one_json_object_per_line_in_production(database_url: str) -> None:
    """``migval serve`` as users run it: uvicorn's own lines (startup, access) are JSON."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIGVAL_")},
        **production_env(),
        "DATABASE_URL": database_url,
    }
    server = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "graph.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        refused = httpx.post(f"{base}/graphql", json={"query": "{ __typename }"}, timeout=5)
        assert refused.status_code == 401
    finally:
        server.terminate()
        out, err = server.communicate(timeout=20)
    assert out == ""
    lines = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    access = [e for e in lines if e["logger"] == "uvicorn.access"]
    assert any('"POST /graphql HTTP/1.1" 401' in e["message"] for e in access), lines
    graphql_access = next(e for e in access if "/graphql" in e["message"])
    assert len(graphql_access["request_id"]) == 32  # the id given to the refused request
    assert any(e["logger"] == "uvicorn.error" and "startup complete" in e["message"]
               for e in lines)  # fmt: skip
