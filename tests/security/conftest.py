"""Shared helpers for the security tests: GraphQL clients in a given mode with a given
token, tokens issued through the service, seeded data, and table snapshots.

Fixtures:

- ``make_api(settings=None, token=None)``: an ``Api`` (httpx on
  ``build_graphql_app(db, settings)``, default development settings); closed after
  the test.
- ``issue(role, name=None, expires_in=None)``: create a token through
  ``TokenService`` and return its text.
- ``seed``: one session with a result (three discrepancies, the second resolved) and
  one behavioral test, written through the services; returns ``Seed``.

Helpers: ``snapshot(db)`` reads every data table (api_tokens excepted: last_used_at
moves on use) so a test can assert that a refused request changed nothing;
``run_cli(*args, database_url=...)`` runs ``migval`` as a subprocess.
"""

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from graph.ids import to_global_id
from graph.schema import build_graphql_app
from graph.settings import AppSettings, Environment
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.models import metadata
from persistence.services import (
    BehavioralTestService,
    DiscrepancyService,
    ResultService,
    SessionService,
)
from persistence.services.tokens import TokenService

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = "http://migval.test"
PRODUCTION = AppSettings(env=Environment.PRODUCTION, anonymous_role=None)
DEVELOPMENT = AppSettings()
DEVELOPMENT_NO_ANONYMOUS = AppSettings(anonymous_role=None)
# Tables a refused request must leave as they were (api_tokens.last_used_at may move).
DATA_TABLES = tuple(t.name for t in metadata.sorted_tables if t.name != "api_tokens")


@dataclass
class Api:
    client: httpx.AsyncClient
    token: str | None = None

    async def post(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        bearer = token or self.token
        if bearer is not None and "authorization" not in {k.lower() for k in sent}:
            sent["Authorization"] = f"Bearer {bearer}"
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = dict(variables)
        return await self.client.post("/", json=body, headers=sent)

    async def gql(
        self, query: str, variables: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The JSON body of a 200 answer."""
        response = await self.post(query, variables, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body, dict)
        return body


MakeApi = Callable[..., Api]
Issue = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_api(db: DatabaseManager) -> AsyncIterator[MakeApi]:
    clients: list[httpx.AsyncClient] = []

    def make(settings: AppSettings | None = None, token: str | None = None) -> Api:
        app = build_graphql_app(db, settings or DEVELOPMENT)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        clients.append(client)
        return Api(client, token)

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
def issue(db: DatabaseManager) -> Issue:
    async def create(
        role: Role | str, name: str | None = None, expires_in: timedelta | None = None
    ) -> str:
        issued = await TokenService(db).create(name or f"{role}-token", role, expires_in)
        return issued.token

    return create


@dataclass(frozen=True)
class Seed:
    session_id: int
    request_id: str
    result_id: int
    discrepancy_ids: tuple[int, ...]  # the second one is resolved
    test_id: int

    def gid(self, type_name: str, db_id: int | None = None) -> str:
        return to_global_id(type_name, self.session_id if db_id is None else db_id)


SESSION_VALUES = {
    "source_technology": "PYTHON_FLASK",
    "target_technology": "JAVA_SPRING",
    "validation_scope": "FULL_SYSTEM",
    "source_input_type": "CODE_FILES",
    "target_input_type": "CODE_FILES",
}


@pytest.fixture
async def seed(db: DatabaseManager) -> Seed:
    return await seed_data(db)


async def seed_data(db: DatabaseManager) -> Seed:
    """One session with a result (three discrepancies, the second resolved) and one
    behavioral test, written through the services."""
    session = (await SessionService(db).create({"request_id": "sec-1", **SESSION_VALUES})).session
    assert session.id is not None
    result = await ResultService(db).record(
        session.id,
        {"overall_status": "approved", "fidelity_score": 0.9, "summary": "equivalent"},
        [
            {"discrepancy_type": "layout", "severity": "WARNING", "description": f"diff {i}"}
            for i in range(3)
        ],
    )
    async with db.read_session() as s:
        ids = tuple(
            (await s.scalars(sa.text("SELECT id FROM validation_discrepancies ORDER BY id"))).all()
        )
    await DiscrepancyService(db).resolve(ids[1], "seed")
    tests = await BehavioralTestService(db).record(
        session.id,
        [
            {
                "scenario_name": "login",
                "source_url": "http://source.example/login",
                "target_url": "http://target.example/login",
                "execution_status": "passed",
            }
        ],
    )
    assert result.id is not None
    assert tests[0].id is not None
    return Seed(session.id, session.request_id, result.id, ids, tests[0].id)


async def snapshot(db: DatabaseManager) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every data table, in id order."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read_session() as s:
        for table in DATA_TABLES:
            result = await s.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
            rows[table] = [tuple(r) for r in result.all()]
    return rows


def run_cli(
    *args: str, database_url: str, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``migval ARGS`` as a subprocess (the console script's ``main``), on ``database_url``."""
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIGVAL_")},
        "DATABASE_URL": database_url,
        **(env or {}),
    }
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "graph.cli", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
