"""Development and production modes (graph.settings): authentication, GraphiQL,
introspection, suggestions, the actor of a request, and `migval serve`'s refusal to
expose anonymous access beyond loopback."""

import base64
import secrets
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import persistence.crypto
from graph.app import create_app
from graph.cli import main
from graph.schema import build_graphql_app
from graph.settings import AppSettings, Environment, PlanMode, is_loopback
from persistence.actor import SYSTEM, current_actor
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.errors import ConfigurationError
from tests.security.conftest import (
    BASE_URL,
    DEVELOPMENT,
    PRODUCTION,
    Issue,
    MakeApi,
    run_cli,
)

INTROSPECTION = "{ __schema { queryType { name } types { name } } }"
CREATE = (
    'mutation { createValidationSession(input: {requestId: "dev-1", sourceTechnology: '
    "PYTHON_FLASK, targetTechnology: JAVA_SPRING, validationScope: FULL_SYSTEM, "
    "sourceInputType: CODE_FILES, targetInputType: CODE_FILES}) { created errors { code } } }"
)


# ----------------------------------------------------------------- production


async def test_production_requires_a_token(db: DatabaseManager, make_api: MakeApi) -> None:
    api = make_api(PRODUCTION)
    for query in ("{ sessions { totalCount } }", CREATE, INTROSPECTION, "{ __typename }"):
        response = await api.post(query, headers={"X-Request-ID": "req-401"})
        assert response.status_code == 401
        assert response.json() == {
            "errors": [
                {
                    "message": "authentication required: send the header "
                    "'Authorization: Bearer <token>'",
                    "extensions": {"code": "UNAUTHENTICATED"},
                }
            ]
        }
        assert response.headers["www-authenticate"] == 'Bearer realm="migval"'
        assert response.headers["x-request-id"] == "req-401"
    async with db.read_session() as s:
        assert await s.scalar(sa.text("SELECT count(*) FROM validation_sessions")) == 0


async def test_production_refuses_introspection(make_api: MakeApi, issue: Issue) -> None:
    api = make_api(PRODUCTION, await issue(Role.ADMIN))
    for query in (INTROSPECTION, '{ __type(name: "Query") { name } }'):
        body = await api.gql(query)
        assert body.get("data") is None, body
        assert body["errors"], body
        assert "introspection" in body["errors"][0]["message"].lower()
    assert (await api.gql("{ __typename }"))["data"] == {"__typename": "Query"}
    # development (the default) answers it
    dev = await make_api(DEVELOPMENT).gql(INTROSPECTION)
    assert dev["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_production_serves_no_graphiql(make_api: MakeApi, issue: Issue) -> None:
    html = {"Accept": "text/html"}
    anonymous = await make_api(PRODUCTION).client.get("/", headers=html)
    assert anonymous.status_code == 401
    admin_token = await issue(Role.ADMIN)
    authorized = await make_api(PRODUCTION).client.get(
        "/", headers={**html, "Authorization": f"Bearer {admin_token}"}
    )
    assert authorized.status_code == 404
    for response in (anonymous, authorized):
        assert "graphiql" not in response.text.lower()
        assert not response.headers.get("content-type", "").startswith("text/html")
    dev = await make_api(DEVELOPMENT).client.get("/", headers=html)
    assert dev.status_code == 200
    assert "graphiql" in dev.text.lower()


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ sesions { totalCount } }", None),  # field
        ("{ sessions(frist: 1) { totalCount } }", None),  # argument
        ("{ sessions { totalCont } }", None),  # nested field
        ("{ metrics(period: DAYLY) { id } }", None),  # enum literal
        ("query($p: MetricPeriod!) { metrics(period: $p) { id } }", {"p": "DAYLY"}),  # variable
        ("query($f: SesionFilterInput) { sessions(filter: $f) { totalCount } }", None),  # type
    ],
)
async def test_production_gives_no_suggestions(
    make_api: MakeApi, issue: Issue, query: str, variables: dict[str, Any] | None
) -> None:
    token = await issue(Role.ADMIN)
    dev = await make_api(DEVELOPMENT).gql(query, variables)
    assert "Did you mean" in str(dev["errors"])  # the hint the production mode removes
    prod = await make_api(PRODUCTION, token).gql(query, variables)
    assert prod["errors"], prod
    assert "Did you mean" not in str(prod)
    assert all(e["message"] for e in prod["errors"])


# ---------------------------------------------------------------- development


async def test_development_lets_anonymous_requests_in_as_admin(
    db: DatabaseManager, make_api: MakeApi
) -> None:
    api = make_api(DEVELOPMENT)
    body = await api.gql(CREATE, headers={"X-Request-ID": "dev-req"})
    assert body["data"] == {"createValidationSession": {"created": True, "errors": []}}
    assert (await api.gql("{ sessions { totalCount } }"))["data"]["sessions"]["totalCount"] == 1
    async with db.read_session() as s:
        row = (
            await s.execute(
                sa.text(
                    "SELECT actor_name, actor_role, actor_token_id, request_id, "
                    "client_address FROM audit_log"
                )
            )
        ).one()
    assert tuple(row) == ("anonymous", "admin", None, "dev-req", "127.0.0.1")
    assert current_actor() == SYSTEM  # the request's actor did not leak into the caller


async def test_the_audit_trail_names_the_token(
    db: DatabaseManager, make_api: MakeApi, issue: Issue
) -> None:
    token = await issue(Role.WRITER, "deploy-bot")
    body = await make_api(PRODUCTION, token).gql(CREATE, headers={"X-Request-ID": "tok-req"})
    assert body["data"]["createValidationSession"]["errors"] == []
    async with db.read_session() as s:
        token_id = await s.scalar(sa.text("SELECT id FROM api_tokens"))
        row = (
            await s.execute(
                sa.text(
                    "SELECT actor_name, actor_role, actor_token_id, request_id FROM audit_log "
                    "WHERE operation = 'createValidationSession'"  # not the token's issuing
                )
            )
        ).one()
    assert tuple(row) == ("deploy-bot", "writer", token_id, "tok-req")


async def test_development_anonymous_role_is_configurable(make_api: MakeApi, issue: Issue) -> None:
    viewer_anonymous = make_api(AppSettings(anonymous_role=Role.VIEWER))
    assert "errors" not in await viewer_anonymous.gql("{ sessions { totalCount } }")
    refused = await viewer_anonymous.gql(CREATE)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # a token still raises the request to its own role
    writer = await issue(Role.WRITER)
    allowed = await viewer_anonymous.gql(CREATE, token=writer)
    assert allowed["data"]["createValidationSession"]["errors"] == []


async def test_websockets_are_refused(db: DatabaseManager) -> None:
    app = build_graphql_app(db, DEVELOPMENT)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/", "headers": [], "subprotocols": ["graphql-ws"]}
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


# ------------------------------------------------------ the real app, from env


async def test_create_app_reads_the_mode_from_the_environment(
    db: DatabaseManager, database_url: str, issue: Issue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGVAL_ENV", "production")
    # create_app() installs the key ring process-wide: put the test's back afterwards.
    monkeypatch.setattr(persistence.crypto, "_active", persistence.crypto._active)
    with pytest.raises(ConfigurationError) as missing:
        create_app()  # production refuses to start without encryption keys
    assert missing.value.field == "MIGVAL_ENCRYPTION_KEYS"
    monkeypatch.setenv(
        "MIGVAL_ENCRYPTION_KEYS", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    )
    app = create_app()
    token = await issue(Role.VIEWER)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert (await client.get("/healthz")).status_code == 200
            query = {"query": "{ sessions { totalCount } }"}
            assert (await client.post("/graphql", json=query)).status_code == 401
            ok = await client.post(
                "/graphql", json=query, headers={"Authorization": f"Bearer {token}"}
            )
            assert ok.json()["data"] == {"sessions": {"totalCount": 0}}


# ----------------------------------------------------------------- settings


def test_settings_from_env() -> None:
    assert AppSettings.from_env({}) == AppSettings(
        Environment.DEVELOPMENT, Role.ADMIN, False, execution_plans=PlanMode.ON
    )
    assert AppSettings.from_env({"MIGVAL_EXECUTION_PLANS": " OFF "}).execution_plans is (
        PlanMode.OFF
    )
    prod = AppSettings.from_env({"MIGVAL_ENV": "Production"})
    assert prod.production
    assert prod.auth_required
    assert not prod.graphiql
    assert not prod.introspection
    assert prod.anonymous_role is None
    assert AppSettings.from_env({"MIGVAL_ANONYMOUS_ROLE": "viewer"}).anonymous_role is Role.VIEWER
    assert AppSettings.from_env({"MIGVAL_ANONYMOUS_ROLE": "none"}).anonymous_role is None
    assert AppSettings.from_env({"MIGVAL_ALLOW_INSECURE_BIND": "1"}).allow_insecure_bind
    for env, name in (
        ({"MIGVAL_ENV": "staging"}, "MIGVAL_ENV"),
        ({"MIGVAL_ANONYMOUS_ROLE": "root"}, "MIGVAL_ANONYMOUS_ROLE"),
        ({"MIGVAL_ENV": "production", "MIGVAL_ANONYMOUS_ROLE": "admin"}, "MIGVAL_ANONYMOUS_ROLE"),
        ({"MIGVAL_ALLOW_INSECURE_BIND": "maybe"}, "MIGVAL_ALLOW_INSECURE_BIND"),
        ({"MIGVAL_EXECUTION_PLANS": "fast"}, "MIGVAL_EXECUTION_PLANS"),
    ):
        with pytest.raises(ConfigurationError) as error:
            AppSettings.from_env(env)
        assert error.value.field == name


def test_bind_check() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        DEVELOPMENT.check_bind(host)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):  # noqa: S104 - the point
        assert not is_loopback(host)
        with pytest.raises(ConfigurationError, match="refusing to bind"):
            DEVELOPMENT.check_bind(host)
        with pytest.raises(ConfigurationError, match="'none' role"):
            AppSettings(anonymous_role=None).check_bind(host)  # still GraphiQL, introspection
        PRODUCTION.check_bind(host)  # tokens required: fine anywhere
        AppSettings(allow_insecure_bind=True).check_bind(host)  # explicit override


def test_serve_refuses_a_public_bind_in_development(tmp_path: Any) -> None:
    started = time.monotonic()
    result = run_cli(
        "serve",
        "--host",
        "0.0.0.0",  # noqa: S104 - the point of the test
        database_url=f"sqlite+aiosqlite:///{tmp_path}/never.db",
    )
    assert result.returncode == 2, result.stderr
    assert "refusing to bind 0.0.0.0 in development mode" in result.stderr
    assert "MIGVAL_ALLOW_INSECURE_BIND" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20  # refused before any server starts
    assert not (tmp_path / "never.db").exists()


def test_serve_rejects_a_bad_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIGVAL_ENV", "prod")
    assert main(["serve"]) == 2
    assert "MIGVAL_ENV: must be one of development, production" in capsys.readouterr().err
