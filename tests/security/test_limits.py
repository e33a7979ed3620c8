"""Query limits (graph.limits): depth, aliases, tokens, `first`, cost, body size,
batches and the request timeout, over HTTP. Every refusal is a JSON error with
``extensions.code``, decided before any resolver runs (no SQL on the data tables),
never a 500 and never a stack trace."""

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from graphql import Lexer, Source, TokenKind, parse
from starlette.types import Message, Receive, Scope, Send

from graph.app import create_app
from graph.document_cache import MAX_VARIABLES_CHARS, validation_key
from graph.limits import LimitSettings, RequestLimits, _LimitsRule, variables_read
from graph.schema import build_graphql_app
from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError
from persistence.models import metadata
from persistence.services import SessionService

BASE_URL = "http://migval.test"
LEAKS = ("Traceback", 'File "', "sqlalchemy", "SELECT", "INSERT")
# Tables a refused or cancelled request must leave as they were.
DATA_TABLES = tuple(t.name for t in metadata.sorted_tables if t.name != "api_tokens")
Post = Callable[..., Any]


# ------------------------------------------------------------------------ helpers


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


@pytest.fixture
async def api(db: DatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    """The GraphQL app with the schema's default limits (no middleware)."""
    async with client_for(build_graphql_app(db)) as client:
        yield client


@pytest.fixture
def statements(db: DatabaseManager) -> Iterator[list[str]]:
    """SQL statements on the data tables while the test runs (auth may read
    api_tokens before validation; resolvers read validation_* tables)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "validation_" in statement:
            seen.append(statement)

    engine = db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def post(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    response = await client.post("/", json=body)
    assert response.status_code < 500, response.text
    assert not any(marker in response.text for marker in LEAKS), response.text
    parsed = response.json()
    assert isinstance(parsed, dict)
    return response.status_code, parsed


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]


def refused(body: dict[str, Any], code: str) -> dict[str, Any]:
    """The error with ``code`` of a response that executed nothing."""
    assert body.get("data") is None, body
    assert "cost" not in body.get("extensions", {}), body
    matching = [e for e in body.get("errors", []) if e["extensions"]["code"] == code]
    assert matching, body
    error: dict[str, Any] = matching[0]
    return error


def accepted(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body["errors"]
    data: dict[str, Any] = body["data"]
    return data


async def create_session(db: DatabaseManager, request_id: str) -> int:
    outcome = await SessionService(db).create(
        {
            "request_id": request_id,
            "source_technology": "PYTHON_FLASK",
            "target_technology": "JAVA_SPRING",
            "validation_scope": "FULL_SYSTEM",
            "source_input_type": "CODE_FILES",
            "target_input_type": "CODE_FILES",
        }
    )
    assert outcome.session.id is not None
    return outcome.session.id


async def snapshot(db: DatabaseManager) -> dict[str, list[tuple[Any, ...]]]:
    async with db.read_session() as s:
        return {
            table: [tuple(r) for r in (await s.execute(sa.text(f"SELECT * FROM {table}"))).all()]
            for table in DATA_TABLES
        }


async def count(db: DatabaseManager, table: str) -> int:
    async with db.read_session() as s:
        return int((await s.execute(sa.text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())


# ------------------------------------------------------------------------ settings


def test_settings_defaults_and_environment() -> None:
    assert LimitSettings.from_env({}) == LimitSettings()
    defaults = LimitSettings()
    assert (defaults.max_depth, defaults.max_aliases, defaults.max_tokens) == (10, 15, 2000)
    assert (defaults.max_cost, defaults.request_timeout_s) == (50_000, 30.0)
    assert defaults.max_body_bytes == 16 * 1024 * 1024
    custom = LimitSettings.from_env(
        {
            "MIGVAL_MAX_DEPTH": "12",
            "MIGVAL_MAX_ALIASES": "0",
            "MIGVAL_MAX_TOKENS": "500",
            "MIGVAL_MAX_COST": "1000",
            "MIGVAL_MAX_BODY_BYTES": "4096",
            "MIGVAL_REQUEST_TIMEOUT_S": "2.5",
        }
    )
    assert custom == LimitSettings(12, 0, 500, 1000, 4096, 2.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MIGVAL_MAX_DEPTH", "ten"),
        ("MIGVAL_MAX_DEPTH", "0"),
        ("MIGVAL_MAX_COST", "-5"),
        ("MIGVAL_MAX_BODY_BYTES", "1.5"),
        ("MIGVAL_REQUEST_TIMEOUT_S", "0"),
        ("MIGVAL_REQUEST_TIMEOUT_S", "soon"),
    ],
)
def test_settings_refuse_bad_values(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        LimitSettings.from_env({name: value})
    assert raised.value.field == name


# --------------------------------------------------------------------------- depth


def chain(depth: int) -> str:
    """A query ``depth`` fields deep: session > latestResult > session > ... > databaseId
    (single objects all the way, so the cost stays tiny)."""
    fields = ['session(requestId: "deep")'] + [
        "latestResult" if i % 2 else "session" for i in range(1, depth - 1)
    ]
    return "{ " + " { ".join([*fields, "databaseId"]) + " }" * depth


async def test_depth_10_is_accepted_and_11_refused(
    api: httpx.AsyncClient, db: DatabaseManager, statements: list[str]
) -> None:
    await create_session(db, "deep")
    status, body = await post(api, chain(10))
    assert status == 200
    assert accepted(body)["session"]["latestResult"] is None  # no result recorded
    statements.clear()
    _, body = await post(api, chain(11))
    error = refused(body, "QUERY_TOO_DEEP")
    assert error["extensions"] == {"code": "QUERY_TOO_DEEP", "depth": 11, "limit": 10}
    assert statements == []


async def test_depth_counts_fragments_and_inline_fragments(api: httpx.AsyncClient) -> None:
    query = """
    fragment Inner on ValidationResult {
      session { latestResult { session { latestResult { databaseId } } } }
    }
    fragment Outer on ValidationSession {
      latestResult { session { latestResult { ... on ValidationResult { ...Inner } } } }
    }
    { session(requestId: "x") { latestResult { session { ...Outer } } } }
    """
    _, body = await post(api, query)  # 3 fields + 3 in Outer + 5 in Inner = 11
    assert refused(body, "QUERY_TOO_DEEP")["extensions"]["depth"] == 11


# ------------------------------------------------------------------------- aliases


def aliased(n: int) -> str:
    return " ".join(f"a{i}: sessions(first: 1) {{ totalCount }}" for i in range(n))


async def test_15_aliases_accepted_16_refused(
    api: httpx.AsyncClient, statements: list[str]
) -> None:
    _, body = await post(api, "{ " + aliased(15) + " }")
    assert accepted(body)["a14"] == {"totalCount": 0}
    statements.clear()
    _, body = await post(api, "{ " + aliased(16) + " }")
    error = refused(body, "TOO_MANY_ALIASES")
    assert error["extensions"] == {"code": "TOO_MANY_ALIASES", "aliases": 16, "limit": 15}
    assert statements == []


@pytest.mark.parametrize(
    "query",
    [
        "fragment F on Query { %s } query { ...F ...F }",
        "fragment F on Query { %s } fragment G on Query { ...F ...F } query { ...G }",
        "fragment F on Query { %s } query { ... on Query { ...F } ...F }",
    ],
    ids=["spread-twice", "nested-spreads", "inline-and-spread"],
)
async def test_aliases_are_counted_after_fragment_expansion(
    api: httpx.AsyncClient, statements: list[str], query: str
) -> None:
    _, body = await post(api, query % aliased(8))  # 8 written, 16 once expanded
    assert refused(body, "TOO_MANY_ALIASES")["extensions"]["aliases"] == 16
    assert statements == []


@pytest.mark.timeout(20)
async def test_fragment_fan_out_is_measured_in_linear_time(api: httpx.AsyncClient) -> None:
    # Each fragment spreads the next twice: 2**40 aliased fields once expanded. A
    # walker without memoisation (strawberry's MaxAliasesLimiter, QueryDepthLimiter)
    # would never finish.
    levels = 40
    fragments = " ".join(
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    query = f"{{ ...F0 }} {fragments} fragment F{levels} on Query {{ a: __typename }}"
    started = time.perf_counter()
    _, body = await post(api, query)
    elapsed = time.perf_counter() - started
    assert refused(body, "TOO_MANY_ALIASES")["extensions"]["aliases"] == 2**levels
    assert "QUERY_TOO_COSTLY" in codes(body)
    assert elapsed < 5, elapsed  # generous: it takes milliseconds


# ----------------------------------------------------------------------- fragments


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "fragment A on Query { ...B } fragment B on Query { ...A } { ...A }",
            "Cannot spread fragment 'A' within itself via 'B'",
        ),
        (
            "fragment S on ValidationSession { latestResult { session { ...S } } }"
            ' { session(requestId: "x") { ...S } }',
            "Cannot spread fragment 'S' within itself",
        ),
        (
            "fragment A on Query { x: __typename ...A ...A } { ...A ...A }",
            "Cannot spread fragment 'A' within itself",
        ),
        ("{ ...Nope }", "Unknown fragment 'Nope'"),
    ],
    ids=["mutual", "self-nested", "self-twice", "unknown"],
)
async def test_circular_and_unknown_fragments_are_validation_errors(
    api: httpx.AsyncClient, statements: list[str], query: str, message: str
) -> None:
    started = time.perf_counter()
    status, body = await post(api, query)
    assert time.perf_counter() - started < 5
    assert status == 200
    error = refused(body, "GRAPHQL_VALIDATION_FAILED")
    assert error["message"].startswith(message), body
    assert statements == []


# -------------------------------------------------------------------------- tokens


def token_count(query: str) -> int:
    lexer = Lexer(Source(query))
    n = 0
    while lexer.advance().kind is not TokenKind.EOF:
        n += 1
    return n


def with_tokens(n: int) -> str:
    """A valid query of exactly ``n`` tokens (a long status filter)."""

    def build(k: int) -> str:
        statuses = " ".join(["PENDING"] * k)
        return f"{{ sessions(first: 1, filter: {{status: [{statuses}]}}) {{ totalCount }} }}"

    overhead = token_count(build(0))
    query = build(n - overhead)
    assert token_count(query) == n
    return query


async def test_2000_tokens_accepted_2001_refused(
    api: httpx.AsyncClient, statements: list[str]
) -> None:
    _, body = await post(api, with_tokens(2000))
    assert accepted(body)["sessions"] == {"totalCount": 0}
    statements.clear()
    _, body = await post(api, with_tokens(2001))
    error = refused(body, "TOO_MANY_TOKENS")
    assert error["extensions"] == {"code": "TOO_MANY_TOKENS", "limit": 2000}
    assert statements == []


async def test_other_syntax_errors_have_a_code(api: httpx.AsyncClient) -> None:
    _, body = await post(api, "{ sessions { ")
    assert refused(body, "GRAPHQL_PARSE_FAILED")["message"].startswith("Syntax Error")
    _, body = await post(api, "{" + "session { " * 300 + "}" * 301)
    assert refused(body, "QUERY_TOO_DEEP")["message"].endswith(
        "nested too deeply. Parsing aborted."
    )


# ------------------------------------------------------------------------- `first`


@pytest.mark.parametrize(
    ("query", "variables", "message", "path"),
    [
        (
            "{ sessions(first: 101) { totalCount } }",
            None,
            "first: must be at most 100; got 101",
            ["sessions"],
        ),
        (
            "query($n: Int!) { discrepancies(first: $n) { totalCount } }",
            {"n": 101},
            "first: must be at most 100; got 101",
            ["discrepancies"],
        ),
        (
            "query($n: Int = 500) { behavioralTests(first: $n) { totalCount } }",
            None,
            "first: must be at most 100; got 500",
            ["behavioralTests"],
        ),
        (
            "query($n: Int!) { s: sessions(first: $n) { totalCount } }",
            {"n": -1},
            "first: must not be negative",
            ["s"],
        ),
        (
            '{ session(requestId: "x") { discrepancies(first: 101) { totalCount } } }',
            None,
            "first: must be at most 100; got 101",
            ["session", "discrepancies"],
        ),
        # Under a list (or in a fragment) no exact response path exists before execution.
        (
            "{ sessions(first: 2) { nodes { discrepancies(first: 101) { totalCount } } } }",
            None,
            "first: must be at most 100; got 101",
            None,
        ),
        (
            "fragment P on ValidationSession { discrepancies(first: $n) { totalCount } }"
            ' query($n: Int!) { session(requestId: "x") { ...P } }',
            {"n": 1000},
            "first: must be at most 100; got 1000",
            None,
        ),
    ],
    ids=["literal", "variable", "variable-default", "negative", "nested", "in-list", "fragment"],
)
async def test_first_over_the_cap_fails_validation_before_any_sql(
    api: httpx.AsyncClient,
    statements: list[str],
    query: str,
    variables: dict[str, Any] | None,
    message: str,
    path: list[str] | None,
) -> None:
    status, body = await post(api, query, variables)
    assert status == 200
    error = refused(body, "BAD_USER_INPUT")
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
    assert error["message"] == message
    assert error.get("path") == path
    assert error["locations"]  # points at the field
    assert statements == []


async def test_first_at_the_cap_is_accepted(api: httpx.AsyncClient) -> None:
    _, body = await post(api, "query($n: Int!) { sessions(first: $n) { totalCount } }", {"n": 100})
    assert accepted(body) == {"sessions": {"totalCount": 0}}


async def test_cached_validation_never_outlives_its_variables(
    api: httpx.AsyncClient, statements: list[str]
) -> None:
    """Accepted validations are cached (graph/document_cache.py) with the variables in
    the key: the same document with a `first` over the cap is still refused, and
    with each accepted value the reported cost follows the value."""
    query = "query($n: Int!) { sessions(first: $n) { totalCount nodes { requestId } } }"
    for n, cost in ((5, 8), (100, 103), (5, 8)):
        _, body = await post(api, query, {"n": n})
        accepted(body)
        assert body["extensions"] == {"cost": cost}
    statements.clear()
    for _ in range(2):  # also once the refusal could have been cached (it never is)
        _, body = await post(api, query, {"n": 101})
        assert refused(body, "BAD_USER_INPUT")["message"] == "first: must be at most 100; got 101"
    assert statements == []


# ---------------------------------------------------------------------------- cost


@pytest.mark.parametrize(
    ("query", "variables", "cost"),
    [
        # sessions 1 + totalCount 1 + nodes (1 + 10 x (requestId 1 + status 1)) = 23
        ("{ sessions(first: 10) { totalCount nodes { requestId status } } }", None, 23),
        # `first` from a variable: 1 + 1 + (1 + 3 x 2) = 9
        (
            "query($n: Int!) { sessions(first: $n) { totalCount nodes { requestId status } } }",
            {"n": 3},
            9,
        ),
        # default page size 20: 1 + 1 + (1 + 20 x 2) = 43
        ("{ sessions { totalCount nodes { requestId status } } }", None, 43),
        # session 1 + results (1 + 20 x (databaseId 1 + discrepancies (1 + 100 x 1))) = 2042
        (
            '{ session(requestId: "x") { results { databaseId discrepancies { databaseId } } } }',
            None,
            2042,
        ),
        # fragments expanded where spread: 2 x (1 + 1 + (1 + 5 x 1)) = 16
        (
            "fragment C on ValidationSessionConnection { totalCount nodes { requestId } }"
            " { a: sessions(first: 5) { ...C } b: sessions(first: 5) { ...C } }",
            None,
            16,
        ),
    ],
    ids=["literal-first", "variable-first", "default-first", "unpaginated-lists", "fragments"],
)
async def test_accepted_operation_reports_its_cost(
    api: httpx.AsyncClient, query: str, variables: dict[str, Any] | None, cost: int
) -> None:
    _, body = await post(api, query, variables)
    accepted(body)
    assert body["extensions"] == {"cost": cost}


async def test_over_cost_query_is_refused_before_any_sql(
    api: httpx.AsyncClient, statements: list[str]
) -> None:
    query = """
    { sessions(first: 100) {
        nodes { results { discrepancies { databaseId description severity } } } } }
    """
    _, body = await post(api, query)
    error = refused(body, "QUERY_TOO_COSTLY")
    # 1 + (1 + 100 x (1 + 20 x (1 + 100 x 3)))
    assert error["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 602_102, "limit": 50_000}
    assert statements == []


async def test_introspection_stays_usable(api: httpx.AsyncClient) -> None:
    from graphql import get_introspection_query  # noqa: PLC0415 - only here

    _, body = await post(api, get_introspection_query(descriptions=True))
    assert accepted(body)["__schema"]["queryType"]["name"] == "Query"
    # ofType chains add no depth; the nested lists of `fields` do
    cyclic = "{ __schema { types " + "{ fields { type " * 4 + "{ name }" + " }" * 9 + " }"
    _, body = await post(api, cyclic)
    assert refused(body, "QUERY_TOO_DEEP")["extensions"]["depth"] == 11


# -------------------------------------------------------------------- middleware


def limited(db: DatabaseManager, **settings: Any) -> httpx.AsyncClient:
    return client_for(RequestLimits(build_graphql_app(db), LimitSettings(**settings)))


async def test_oversized_body_is_refused_with_413(
    db: DatabaseManager, statements: list[str]
) -> None:
    async with limited(db, max_body_bytes=1024) as client:
        small = await client.post("/", json={"query": "{ sessions { totalCount } }"})
        assert small.status_code == 200, small.text
        statements.clear()
        big = await client.post(
            "/",
            json={"query": "query($x: String) { __typename }", "variables": {"x": "y" * 2000}},
        )
    assert big.status_code == 413
    assert big.json() == {
        "errors": [
            {
                "message": "Request body is larger than 1024 bytes.",
                "extensions": {"code": "PAYLOAD_TOO_LARGE", "limit": 1024},
            }
        ]
    }
    assert statements == []


async def test_batch_is_refused_with_400(db: DatabaseManager) -> None:
    batch = [{"query": "{ __typename }"}, {"query": "{ __typename }"}]
    async with limited(db) as client:
        response = await client.post("/", json=batch)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "BATCHING_NOT_SUPPORTED"}
    # strawberry alone (batching off) refuses it too, as plain text: never a 500
    async with client_for(build_graphql_app(db)) as client:
        response = await client.post("/", json=batch)
    assert response.status_code == 400
    assert "Batching is not enabled" in response.text


RECORD = """
mutation($input: RecordValidationResultInput!) {
  recordValidationResult(input: $input) { result { databaseId } errors { field message } }
}
"""


def record_input(request_id: str, n: int) -> dict[str, Any]:
    return {
        "input": {
            "requestId": request_id,
            "overallStatus": "REJECTED",
            "fidelityScore": 0.5,
            "summary": "timeout test",
            "discrepancies": [
                {"discrepancyType": "layout", "severity": "INFO", "description": f"d{i}"}
                for i in range(n)
            ],
        }
    }


async def test_timeout_cancels_a_write_midway_and_rolls_it_back(db: DatabaseManager) -> None:
    await create_session(db, "slow")
    before = await snapshot(db)
    settings = LimitSettings(request_timeout_s=1.0)  # ample time to reach the INSERT
    stalled: list[str] = []

    def stall(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # After the result row is inserted (transaction open), hold the event loop past
        # the deadline: the request is cancelled at its next await, mid-transaction.
        if not stalled and statement.lstrip().upper().startswith("INSERT INTO VALIDATION_RESULTS"):
            stalled.append(statement)
            time.sleep(settings.request_timeout_s + 0.5)

    engine = db.engine.sync_engine
    sa.event.listen(engine, "after_cursor_execute", stall)
    try:
        async with limited(db, request_timeout_s=settings.request_timeout_s) as client:
            response = await client.post(
                "/", json={"query": RECORD, "variables": record_input("slow", 500)}
            )
    finally:
        sa.event.remove(engine, "after_cursor_execute", stall)

    assert stalled, "the write never started"
    assert response.status_code == 504, response.text
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "TIMEOUT", "timeoutSeconds": 1.0}
    assert "rolled back" in error["message"]
    assert await snapshot(db) == before  # nothing half-written

    # The connection and any lock were released: the same write now succeeds, once.
    async with limited(db) as client:
        response = await client.post(
            "/", json={"query": RECORD, "variables": record_input("slow", 500)}
        )
    body = response.json()
    assert body["data"]["recordValidationResult"]["errors"] == [], body
    assert body["extensions"]["cost"] > 0
    assert await count(db, "validation_results") == 1
    assert await count(db, "validation_discrepancies") == 500


async def test_tiny_timeout_answers_504_and_writes_nothing(db: DatabaseManager) -> None:
    await create_session(db, "tiny")
    before = await snapshot(db)
    async with limited(db, request_timeout_s=0.001) as client:
        response = await client.post(
            "/", json={"query": RECORD, "variables": record_input("tiny", 2000)}
        )
    assert response.status_code == 504, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "TIMEOUT"
    assert await snapshot(db) == before


async def test_limits_are_installed_in_the_app(
    db: DatabaseManager, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGVAL_MAX_BODY_BYTES", "4096")
    app = create_app()
    async with app.router.lifespan_context(app), client_for(app) as client:
        ok = await client.post("/graphql", json={"query": "{ sessions(first: 2) { totalCount } }"})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"data": {"sessions": {"totalCount": 0}}, "extensions": {"cost": 2}}
        big = await client.post(
            "/graphql",
            content=b'{"query": "' + b" " * 5000 + b'{ __typename }"}',
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413
        assert big.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        batch = await client.post("/graphql", json=[{"query": "{ __typename }"}])
        assert batch.status_code == 400
        assert batch.json()["errors"][0]["extensions"]["code"] == "BATCHING_NOT_SUPPORTED"
        deep = await client.post("/graphql", json={"query": chain(11)})
        assert deep.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_DEEP"
        health = await client.get("/healthz")
        assert health.status_code == 200


# --------------------------------------------------- middleware on its own (no DB)


async def call(
    middleware: RequestLimits, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """Drive the middleware with a body in ``chunks``; returns (status, body)."""
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await middleware(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """An app answering the length of the body it received."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def test_streamed_body_without_length_is_counted() -> None:
    middleware = RequestLimits(echo_length, LimitSettings(max_body_bytes=100))
    json_type = [(b"content-type", b"application/json")]
    assert await call(middleware, [b"x" * 60, b"y" * 40], json_type) == (200, b"100")
    status, body = await call(middleware, [b"x" * 60, b"y" * 41], json_type)
    assert status == 413
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    status, _ = await call(middleware, [b"{}"], [*json_type, (b"content-length", b"101")])
    assert status == 413  # refused on the declared length, before reading


def realistic_discrepancy(i: int) -> dict[str, Any]:
    selector = f"div#app > main.content > section:nth-child({i % 7}) > form > input[name='f{i}']"
    return {
        "discrepancyType": "validation_rule_difference",
        "severity": ("CRITICAL", "WARNING", "INFO")[i % 3],
        "description": f"Element {i}: the source renders a required email field with inline "
        "validation and a placeholder; the target renders an optional text field without them.",
        "sourceElement": selector,
        "targetElement": selector.replace("div#app", "div#root"),
        "recommendation": "Mark the field as required, add the email validator and restore the "
        "placeholder text so that behaviour matches the source application.",
        "confidence": 0.873,
        "componentType": "input",
        "validationContext": {
            "page": f"/account/settings/{i % 40}",
            "viewport": "1280x800",
            "checks": ["required", "type", "placeholder"],
        },
    }


async def test_default_body_limit_fits_a_realistic_10000_discrepancy_result() -> None:
    payload = json.dumps(
        {
            "query": RECORD,
            "variables": {
                "input": {
                    "requestId": "ci-run",
                    "overallStatus": "REJECTED",
                    "fidelityScore": 0.71,
                    "summary": "s" * 500,
                    "discrepancies": [realistic_discrepancy(i) for i in range(10_000)],
                }
            },
        }
    ).encode()
    limit = LimitSettings().max_body_bytes
    assert 7 * 1024 * 1024 < len(payload) < limit / 1.8  # ~8 MiB: room to spare
    middleware = RequestLimits(echo_length, LimitSettings())
    chunks = [payload[i : i + 65536] for i in range(0, len(payload), 65536)]
    json_type = [(b"content-type", b"application/json")]
    assert await call(middleware, chunks, json_type) == (200, str(len(payload)).encode())


def test_validation_key_holds_only_the_variables_validation_reads() -> None:
    def key(variables: dict[str, Any]) -> object:
        return validation_key("schema", "q", None, variables, frozenset({"n"}))

    bulk = {"n": 5, "input": {"s": "x" * 10 * MAX_VARIABLES_CHARS}}
    assert key(bulk) is not None  # a bulk write's input is no reason not to cache
    assert key(bulk) == key({"n": 5, "input": 1})
    assert key({"n": 5}) != key({"n": 6})
    assert key({"n": None}) != key({})  # absent takes the default, null does not
    assert key({"n": float("nan")}) != key({"n": None})
    assert key({"n": "x" * MAX_VARIABLES_CHARS}) is None  # too large to keep
    assert key({"n": object()}) is None  # not JSON


def test_variables_read_are_those_inside_first_arguments() -> None:
    query = """
    query($a: Int, $b: Int, $c: String, $d: Int, $e: Boolean, $f: Int) {
      s(first: $a, filter: {requestId: $c}) @include(if: $e) {
        nodes { results(first: $b, last: $f) { totalCount } }
      }
      ...F
    }
    fragment F on Query { t(first: $d) { totalCount } }
    """
    assert variables_read(query, parse(query)) == {"a", "b", "d"}


async def test_bulk_writes_reuse_their_validation(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new input used to be validated afresh (its variables were too large to
    key the cache with); only the variables validation reads are in the key now."""
    measured: list[int] = []
    leave_document = _LimitsRule.leave_document

    def counting(rule: _LimitsRule, *args: Any) -> None:
        measured.append(1)
        leave_document(rule, *args)

    monkeypatch.setattr(_LimitsRule, "leave_document", counting)
    for i in range(3):
        items = [{**realistic_discrepancy(j), "description": f"run {i}"} for j in range(50)]
        variables = {"input": {"requestId": "none", "overallStatus": "REJECTED",
                               "fidelityScore": 0.5, "summary": f"run {i}",
                               "discrepancies": items}}  # fmt: skip
        _, body = await post(api, RECORD, variables)
        payload = accepted(body)["recordValidationResult"]
        assert payload["errors"][0]["field"] == "input.requestId"  # no such session
    assert len(measured) <= 1  # validated once at most (another test may have cached it)
