"""GraphQL over HTTP: an httpx client on the Strawberry ASGI app, plus seeding helpers.

Fixtures:

- ``client``: ``httpx.AsyncClient`` on ``build_graphql_app(db)`` (POST JSON to "/").
- ``gql_raw(query, variables=None, headers=None)``: the raw ``httpx.Response``.
- ``gql(query, variables=None, headers=None)``: the parsed JSON body; fails on a 5xx
  or a non-JSON body.
- ``read_gql``: ``gql`` on an app serving reads through execution plans, then on one
  never using them (parametrized).
- ``seed``: a ``Seeder`` writing through the persistence services (fast, no HTTP).
"""

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection

from graph.ids import to_global_id
from graph.schema import build_graphql_app
from graph.settings import AppSettings, PlanMode
from persistence.database import DatabaseManager
from persistence.models import ValidationResult as ValidationResultRow
from persistence.models import ValidationSession as ValidationSessionRow
from persistence.services import BehavioralTestService, ResultService, SessionService
from tests.persistence.factories import (
    behavioral_test_input,
    discrepancy_input,
    result_input,
    session_input,
)

GqlRaw = Callable[..., Awaitable[httpx.Response]]
DbFactoryLike = Callable[..., DatabaseManager]  # the root conftest's db_factory

Gql = Callable[..., Awaitable[dict[str, Any]]]

# Substrings that must never reach a client: stack traces and SQL.
LEAK_MARKERS = ("Traceback", "SELECT", "INSERT", "sqlalchemy", 'File "')


def gid(type_name: str, db_id: int) -> str:
    return to_global_id(type_name, db_id)


# One set of minimal valid inputs for the whole suite.
session_values = session_input
result_values = result_input
discrepancy_values = discrepancy_input
behavioral_values = behavioral_test_input


@dataclass
class Seeded:
    """Database ids of one seeded session and its children."""

    session_id: int
    request_id: str
    result_ids: list[int] = field(default_factory=list)
    discrepancy_ids: list[int] = field(default_factory=list)
    test_ids: list[int] = field(default_factory=list)

    @property
    def gid(self) -> str:
        return gid("ValidationSession", self.session_id)


class Seeder:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def session(self, request_id: str = "req-1", **overrides: Any) -> Seeded:
        outcome = await SessionService(self.db).create(session_values(request_id, **overrides))
        assert outcome.created
        row = outcome.session
        assert row.id is not None
        return Seeded(row.id, row.request_id)

    async def result(
        self,
        seeded: Seeded,
        discrepancies: Sequence[Mapping[str, Any]] = (),
        **overrides: Any,
    ) -> int:
        row = await ResultService(self.db).record(
            seeded.session_id, result_values(**overrides), discrepancies
        )
        assert row.id is not None
        seeded.result_ids.append(row.id)
        # bulk inserts return no ids: read them back through GraphQL-independent SQL
        seeded.discrepancy_ids = await self._discrepancy_ids(seeded.session_id)
        return row.id

    async def tests(self, seeded: Seeded, *tests: Mapping[str, Any]) -> list[int]:
        rows = await BehavioralTestService(self.db).record(seeded.session_id, list(tests))
        ids = [r.id for r in rows if r.id is not None]
        seeded.test_ids.extend(ids)
        return ids

    async def full(
        self, request_id: str, n_discrepancies: int = 3, n_tests: int = 2, **overrides: Any
    ) -> Seeded:
        """A session with one result, ``n_discrepancies`` and ``n_tests``."""
        seeded = await self.session(request_id, **overrides)
        severities = ("CRITICAL", "WARNING", "INFO")
        await self.result(
            seeded,
            [discrepancy_values(i, severity=severities[i % 3]) for i in range(n_discrepancies)],
        )
        if n_tests:
            await self.tests(seeded, *(behavioral_values(f"scenario-{i}") for i in range(n_tests)))
        return seeded

    async def _discrepancy_ids(self, session_id: int) -> list[int]:
        async with self.db.read_session() as s:
            rows = await s.execute(
                sa.text(
                    "SELECT id FROM validation_discrepancies WHERE session_id = :sid ORDER BY id"
                ),
                {"sid": session_id},
            )
            return [int(r[0]) for r in rows]


@pytest.fixture
async def client(db: DatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(db) as c:
        yield c


@asynccontextmanager
async def app_client(
    db: DatabaseManager, settings: AppSettings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on ``build_graphql_app(db, settings)``."""
    transport = httpx.ASGITransport(app=build_graphql_app(db, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://migval.test") as c:
        yield c


def make_gql_raw(client: httpx.AsyncClient) -> GqlRaw:
    async def post(
        query: str,
        variables: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = dict(variables)
        return await client.post("/", json=body, headers=dict(headers or {}))

    return post


def make_gql(raw: GqlRaw) -> Gql:
    async def run(
        query: str,
        variables: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        response = await raw(query, variables, headers)
        assert response.status_code < 500, response.text
        body = response.json()
        assert isinstance(body, dict), body
        return body

    return run


@pytest.fixture
def gql_raw(client: httpx.AsyncClient) -> GqlRaw:
    return make_gql_raw(client)


@pytest.fixture
def gql(gql_raw: GqlRaw) -> Gql:
    return make_gql(gql_raw)


@pytest.fixture(params=[PlanMode.ON, PlanMode.OFF], ids=["plans", "standard"])
async def read_gql(request: pytest.FixtureRequest, db: DatabaseManager) -> AsyncIterator[Gql]:
    """``gql`` on an app that serves reads through plans, or never through them."""
    async with app_client(db, AppSettings(execution_plans=request.param)) as c:
        yield make_gql(make_gql_raw(c))


@pytest.fixture
def seed(db: DatabaseManager) -> Seeder:
    return Seeder(db)


def data_of(body: dict[str, Any]) -> dict[str, Any]:
    """``data`` of a response that must have no top-level errors."""
    assert "errors" not in body, body.get("errors")
    data = body["data"]
    assert isinstance(data, dict)
    return data


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    """The single top-level error of a response."""
    errors = body.get("errors")
    assert errors is not None, body
    assert len(errors) == 1, body
    error = errors[0]
    assert isinstance(error, dict)
    return error


async def set_created_at(db: DatabaseManager, table: str, row_id: int, when: datetime) -> None:
    """Backdate a row (created_at is set by the database clock on insert)."""
    tables = {
        "validation_sessions": ValidationSessionRow,
        "validation_results": ValidationResultRow,
    }
    model = tables[table]
    columns = model.__table__.c  # type: ignore[attr-defined]
    async with db.write_session() as s:
        await s.execute(sa.update(model).where(columns.id == row_id).values(created_at=when))


# --- statements a request runs (tests/graph/test_statement_counts.py) ----------------
#
# Every statement the driver executes is recorded with ``before_cursor_execute``; after
# each one, ``after_cursor_execute`` asks the driver connection itself whether the server
# session is inside a transaction (asyncpg: ``is_in_transaction()``; sqlite3:
# ``in_transaction``). asyncpg opens transactions without going through a cursor, so
# this second check is what proves reads run outside one.

TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END)\b", re.I)


def _driver_in_transaction(conn: Connection) -> bool:
    driver = conn.connection.driver_connection
    if hasattr(driver, "is_in_transaction"):  # asyncpg
        return bool(driver.is_in_transaction())
    return bool(driver.in_transaction)  # aiosqlite


@dataclass
class StatementLog:
    texts: list[str] = field(default_factory=list)
    in_transaction: list[bool] = field(default_factory=list)
    checkouts: int = 0  # connections taken from the pool

    def clear(self) -> None:
        self.texts.clear()
        self.in_transaction.clear()
        self.checkouts = 0

    @property
    def count(self) -> int:
        return len(self.texts)

    def transaction_control(self) -> list[str]:
        return [t for t in self.texts if TRANSACTION_CONTROL.match(t)]

    def data_statements(self) -> list[str]:
        return [t for t in self.texts if not TRANSACTION_CONTROL.match(t)]

    def assert_read_only_autocommit(self) -> None:
        assert self.transaction_control() == [], self.texts
        assert all(t.lstrip().upper().startswith("SELECT") for t in self.texts), self.texts
        assert self.in_transaction == [False] * self.count, self.texts


@pytest.fixture
def statements(db: DatabaseManager) -> Iterator[StatementLog]:
    log = StatementLog()
    engine = db.engine.sync_engine

    def before(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        log.texts.append(statement)

    def after(conn: Connection, *_args: Any) -> None:
        log.in_transaction.append(_driver_in_transaction(conn))

    def checkout(*_args: Any) -> None:
        log.checkouts += 1

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "checkout", checkout)
    try:
        yield log
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
