"""What a client sees when things go wrong: protocol errors, GraphQL errors, masked
unexpected failures with a request id, and never a stack trace or SQL text.

Every response body produced in this module goes through ``checked()``, which fails
on any trace of SQL, Python or the database schema."""

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from graph.schema import build_graphql_app
from persistence.database import DatabaseManager
from tests.graph.conftest import DbFactoryLike, GqlRaw, data_of, make_gql_raw, only_error

FORBIDDEN = (
    "SELECT",
    "INSERT",
    "Traceback",
    "sqlalchemy",
    'File "',
    "validation_sessions",
    "no such table",
    'relation "',
    "asyncpg",
    "sqlite",
)
MASKED = re.compile(r"^Unexpected error \(request id ([A-Za-z0-9._-]{1,64})\)$")
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")

COUNT = "{ sessions { totalCount } }"
CREATE = """
mutation {
  createValidationSession(input: {
    requestId: "r1", sourceTechnology: PYTHON_FLASK, targetTechnology: JAVA_SPRING,
    validationScope: FULL_SYSTEM, sourceInputType: CODE_FILES, targetInputType: CODE_FILES
  }) { created session { id } errors { field code message } }
}
"""


def checked(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 500, response.text
    for marker in FORBIDDEN:
        assert marker.lower() not in response.text.lower(), (marker, response.text)
    return response


@asynccontextmanager
async def app_client(db: DatabaseManager) -> AsyncIterator[GqlRaw]:
    transport = httpx.ASGITransport(app=build_graphql_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://migval.test") as c:
        yield make_gql_raw(c)


# ------------------------------------------------------------- protocol errors


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b'{"query": "{ sessions { totalCount } }"', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
    ],
)
async def test_malformed_body_is_400_without_trace(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = checked(
        await client.post("/", content=content, headers={"content-type": content_type})
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"variables": {}},
        {"query": 5},
        {"query": COUNT, "variables": "not an object"},
        [{"query": COUNT}],
    ],
)
async def test_malformed_requests_are_400(client: httpx.AsyncClient, body: Any) -> None:
    response = checked(await client.post("/", json=body))
    assert response.status_code == 400


async def test_queries_via_get_are_refused(client: httpx.AsyncClient) -> None:
    response = checked(await client.get("/", params={"query": COUNT}))
    assert response.status_code == 400
    assert "totalCount" not in response.text


@pytest.mark.parametrize(
    "query",
    [
        "query { sessions { totalCount ",
        "{" * 500,
        "mutation { deleteSession(input: {requestId: }) { errors { code } } }",
        "query { sessions(first: 1) { edges { node { id } } } } }",
    ],
)
async def test_syntax_errors_are_graphql_errors(gql_raw: GqlRaw, query: str) -> None:
    response = checked(await gql_raw(query))
    assert response.status_code in (200, 400)
    body = response.json()
    assert body["data"] is None
    assert only_error(body)["message"].startswith("Syntax Error")


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("{ sessions { nope } }", "nope"),
        ("{ session { id } }", "requestId"),
        ("{ session(requestId: 5) { id } }", "String"),
        ('{ sessions(first: "ten") { totalCount } }', "Int"),
        ("{ sessions(filter: {status: [ARCHIVED]}) { totalCount } }", "ARCHIVED"),
        ("query($x: Int!) { sessions(first: $x) { totalCount } }", "$x"),
        ("mutation { deleteSession { errors { code } } }", "input"),
    ],
)
async def test_validation_errors_are_graphql_errors(
    gql_raw: GqlRaw, query: str, fragment: str
) -> None:
    response = checked(await gql_raw(query))
    assert response.status_code in (200, 400)
    body = response.json()
    assert body["data"] is None
    assert fragment in body["errors"][0]["message"]


async def test_bad_user_input_errors_carry_no_trace(gql_raw: GqlRaw) -> None:
    response = checked(await gql_raw("{ sessions(first: 1000) { totalCount } }"))
    error = only_error(response.json())
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
    assert set(error) == {"message", "locations", "path", "extensions"}


# ---------------------------------------------------------- masked failures


async def test_unexpected_query_error_is_masked_with_the_request_id(
    empty_database_url: str, db_factory: DbFactoryLike, caplog: pytest.LogCaptureFixture
) -> None:
    """A database without tables makes the query fail with a raw SQL error."""
    broken = db_factory(url=empty_database_url)
    async with app_client(broken) as gql_raw:
        with caplog.at_level(logging.ERROR, logger="migval.graphql"):
            response = checked(await gql_raw(COUNT))
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    error = only_error(body)
    match = MASKED.match(error["message"])
    assert match is not None, error
    request_id = match.group(1)
    assert GENERATED_ID.match(request_id)
    assert response.headers["x-request-id"] == request_id
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    assert error["path"] == ["sessions"]
    # ... and the operator gets the full story in the log, under the same id
    records = [r for r in caplog.records if r.name == "migval.graphql"]
    assert len(records) == 1
    assert request_id in records[0].getMessage()
    assert records[0].exc_info is not None


async def test_unexpected_mutation_error_is_masked_and_echoes_a_safe_request_id(
    empty_database_url: str, db_factory: DbFactoryLike
) -> None:
    broken = db_factory(url=empty_database_url)
    async with app_client(broken) as gql_raw:
        response = checked(await gql_raw(CREATE, headers={"X-Request-ID": "client-7.a_b"}))
        nested = checked(
            await gql_raw(
                '{ session(requestId: "x") { id } node(id: "VmFsaWRhdGlvblNlc3Npb246MQ==") { id } }'
            )
        )
    body = response.json()
    assert body["data"] is None
    error = only_error(body)
    assert error["message"] == "Unexpected error (request id client-7.a_b)"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["path"] == ["createValidationSession"]
    assert response.headers["x-request-id"] == "client-7.a_b"

    # loader failures are masked too, one error per failing field, same request id
    nested_body = nested.json()
    assert nested_body["data"] == {"session": None, "node": None}
    matches = [MASKED.match(e["message"]) for e in nested_body["errors"]]
    assert {m.group(1) for m in matches if m} == {nested.headers["x-request-id"]}
    assert all(matches), nested_body
    assert sorted(e["path"][0] for e in nested_body["errors"]) == ["node", "session"]


# ------------------------------------------------------------- request ids


async def test_request_id_is_generated_when_absent(gql_raw: GqlRaw) -> None:
    first = checked(await gql_raw(COUNT))
    second = checked(await gql_raw(COUNT))
    assert GENERATED_ID.match(first.headers["x-request-id"])
    assert GENERATED_ID.match(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("supplied", ["abc", "A-Z.0_9", "x" * 64, "0123456789abcdef"])
async def test_safe_request_id_is_echoed(gql_raw: GqlRaw, supplied: str) -> None:
    response = checked(await gql_raw(COUNT, headers={"X-Request-ID": supplied}))
    assert response.headers["x-request-id"] == supplied
    assert data_of(response.json()) == {"sessions": {"totalCount": 0}}


@pytest.mark.parametrize(
    "supplied",
    [
        "",
        "has space",
        "x" * 65,
        "<script>alert(1)</script>",
        "a;b",
        "../../etc/passwd",
        "id\twith\ttab",
        "%0d%0aSet-Cookie:x=1",
    ],
)
async def test_unsafe_request_id_is_replaced(gql_raw: GqlRaw, supplied: str) -> None:
    response = checked(await gql_raw(COUNT, headers={"X-Request-ID": supplied}))
    returned = response.headers["x-request-id"]
    assert returned != supplied
    assert GENERATED_ID.match(returned)


async def test_unsafe_request_id_never_reaches_a_masked_message(
    empty_database_url: str, db_factory: DbFactoryLike
) -> None:
    broken = db_factory(url=empty_database_url)
    async with app_client(broken) as gql_raw:
        response = checked(await gql_raw(COUNT, headers={"X-Request-ID": "<b>evil</b>"}))
    error = only_error(response.json())
    assert "evil" not in response.text
    match = MASKED.match(error["message"])
    assert match is not None
    assert match.group(1) == response.headers["x-request-id"]


# -------------------------------------------------- connection pool exhausted


def _small_pool(db_factory: DbFactoryLike) -> DatabaseManager:
    return db_factory(pool_size=1, max_overflow=0, pool_timeout=0.5)


@pytest.mark.postgres_only
async def test_mutation_with_no_free_connection_is_service_unavailable(
    db: DatabaseManager, db_factory: DbFactoryLike
) -> None:
    small = _small_pool(db_factory)
    async with app_client(small) as gql_raw, small.engine.connect() as held:
        await held.exec_driver_sql("SELECT 1")
        response = checked(await gql_raw(CREATE))
    # Not the caller's fault: a top-level retryable error with a hint (ADR 0003).
    error = only_error(response.json())
    assert error["message"] == "no database connection available (pool exhausted)"
    assert error["extensions"] == {
        "code": "SERVICE_UNAVAILABLE",
        "retryable": True,
        "retryAfterSeconds": 1,
    }
    async with app_client(db) as gql_raw:
        after = checked(await gql_raw(COUNT)).json()
    assert data_of(after) == {"sessions": {"totalCount": 0}}


@pytest.mark.postgres_only
async def test_query_with_no_free_connection_is_service_unavailable(
    db: DatabaseManager, db_factory: DbFactoryLike
) -> None:
    small = _small_pool(db_factory)
    async with app_client(small) as gql_raw, small.engine.connect() as held:
        await held.exec_driver_sql("SELECT 1")
        response = checked(await gql_raw(COUNT))
    error = only_error(response.json())
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["retryable"] is True


@pytest.mark.postgres_only
async def test_statement_timeout_is_service_unavailable_and_writes_nothing(
    db_factory: DbFactoryLike, database_url: str
) -> None:
    """A statement PostgreSQL cancels (DB_STATEMENT_TIMEOUT_MS passed behind a lock) is
    a typed, retryable SERVICE_UNAVAILABLE, for a read and for a write; not a masked
    internal error, and the write left nothing behind."""
    impatient = db_factory(statement_timeout_ms=200)
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        async with app_client(impatient) as gql_raw:
            async with admin.transaction():
                await admin.execute("LOCK TABLE validation_sessions IN ACCESS EXCLUSIVE MODE")
                read = checked(await gql_raw(COUNT)).json()
                write = checked(await gql_raw(CREATE)).json()
            assert data_of((await gql_raw(COUNT)).json()) == {"sessions": {"totalCount": 0}}
    finally:
        await admin.close()
    for body in (read, write):
        error = only_error(body)
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE", error
        assert "statement timeout" in error["message"]
