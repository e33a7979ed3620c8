"""API tokens: the CLI (create, list, revoke) as a subprocess, what is stored, and how
the GraphQL endpoint treats good, expired, revoked, malformed and unknown tokens."""

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from graph import cli as cli_module
from graph.cli import main
from graph.schema import build_graphql_app
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.errors import Conflict, NotFound
from persistence.models import ApiToken
from persistence.services.tokens import TOKEN_PATTERN, TokenService
from tests.conftest import DbFactory
from tests.security.conftest import BASE_URL, DEVELOPMENT, PRODUCTION, Issue, MakeApi, run_cli
from tests.security.test_audit import audit_rows

VIEWER_QUERY = "{ sessions { totalCount } }"


async def token_rows(db: DatabaseManager) -> list[dict[str, object]]:
    async with db.read_session() as s:
        result = await s.execute(sa.text("SELECT * FROM api_tokens ORDER BY id"))
        return [dict(r._mapping) for r in result.all()]


async def set_column(db: DatabaseManager, name: str, **values: object) -> None:
    """An UPDATE of api_tokens behind the service's back (the column type converts
    timestamps for each dialect)."""
    async with db.write_session() as s:
        await s.execute(sa.update(ApiToken).where(ApiToken.name == name).values(**values))  # type: ignore[arg-type]


def assert_unauthenticated(response: object, message: str) -> None:
    status = getattr(response, "status_code", None)
    assert status == 401, getattr(response, "text", response)
    body = response.json()  # type: ignore[attr-defined]
    assert body == {
        "errors": [
            {"message": body["errors"][0]["message"], "extensions": {"code": "UNAUTHENTICATED"}}
        ]
    }
    assert message in body["errors"][0]["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")  # type: ignore[attr-defined]


# --------------------------------------------------------------------- the CLI
# The console script runs as a subprocess for create, list and revoke; the refusals run
# ``graph.cli.main`` in a worker thread (same code, a second faster).


async def cli_in_process(monkeypatch: pytest.MonkeyPatch, database_url: str, *argv: str) -> int:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return await asyncio.to_thread(main, list(argv))


async def test_cli_create_list_revoke(
    db: DatabaseManager, database_url: str, make_api: MakeApi
) -> None:
    created = run_cli(
        "token",
        "create",
        "--name",
        "ci-bot",
        "--role",
        "writer",
        "--expires-in",
        "30d",
        database_url=database_url,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert TOKEN_PATTERN.match(token), created.stdout
    assert len(token) == 4 + 43  # mvt_ + base64url(32 bytes): 256 bits
    assert "only time" in created.stderr

    (row,) = await token_rows(db)
    assert row["name"] == "ci-bot"
    assert row["role"] == "writer"
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert row["token_prefix"] == token[:12]
    assert row["revoked_at"] is None
    assert row["last_used_at"] is None
    assert row["expires_at"] is not None
    assert not any(token in str(value) for value in row.values())  # never the text

    # The printed token works, and its use is recorded.
    api = make_api(PRODUCTION, token)
    assert "errors" not in await api.gql(VIEWER_QUERY)
    (row,) = await token_rows(db)
    assert row["last_used_at"] is not None

    listing = run_cli("token", "list", "--json", database_url=database_url)
    assert listing.returncode == 0, listing.stderr
    (entry,) = json.loads(listing.stdout)
    assert entry["name"] == "ci-bot"
    assert entry["role"] == "writer"
    assert entry["prefix"] == token[:12]
    assert entry["created"] is not None
    assert entry["expires"] is not None
    assert entry["last_used"] is not None
    assert entry["revoked"] is None
    assert token not in listing.stdout
    assert str(row["token_hash"]) not in listing.stdout

    revoked = run_cli("token", "revoke", "ci-bot", database_url=database_url)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked token 'ci-bot'" in revoked.stdout
    assert_unauthenticated(await api.post(VIEWER_QUERY), "token revoked")
    (row,) = await token_rows(db)
    assert row["revoked_at"] is not None

    # The CLI acts as "system"; the audit trail names the token, never its text.
    entries = await audit_rows(db)
    assert [(e["operation"], e["entity_id"], e["actor_name"]) for e in entries] == [
        ("createApiToken", str(row["id"]), "system"),
        ("revokeApiToken", str(row["id"]), "system"),
    ]
    assert all(token not in e["raw"] and str(row["token_hash"]) not in e["raw"] for e in entries)


async def test_cli_list_table_and_refusals(
    db: DatabaseManager,
    database_url: str,
    issue: Issue,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = await issue(Role.VIEWER, "dup")
    assert await cli_in_process(monkeypatch, database_url, "token", "list") == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:3] == ["NAME", "ROLE", "PREFIX"]
    assert "CREATED" in header
    assert "EXPIRES" in header
    assert "LAST USED" in header
    assert "REVOKED" in header
    assert line.split()[:3] == ["dup", "viewer", token[:12]]
    assert token not in line

    # a duplicate name: exit 1, a clear message, no token printed, nothing written
    assert (
        await cli_in_process(
            monkeypatch, database_url, "token", "create", "--name", "dup", "--role", "admin"
        )
        == 1
    )
    out = capsys.readouterr()
    assert out.out == ""
    assert "a token named 'dup' already exists" in out.err
    assert "Traceback" not in out.err
    rows = await token_rows(db)
    assert [(r["name"], r["role"]) for r in rows] == [("dup", "viewer")]

    assert await cli_in_process(monkeypatch, database_url, "token", "revoke", "nobody") == 1
    assert "no token named 'nobody'" in capsys.readouterr().err

    assert await cli_in_process(monkeypatch, database_url, "token", "revoke", "dup") == 0
    assert "revoked token 'dup'" in capsys.readouterr().out
    assert await cli_in_process(monkeypatch, database_url, "token", "revoke", "dup") == 0
    assert "already revoked" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "x", "--role", "viewer", "--expires-in", "soon"), "--expires-in"),
        (("--name", "x", "--role", "viewer", "--expires-in", "0h"), "longer than zero"),
        (("--name", "x", "--role", "viewer", "--expires-in", "99999d"), "at most"),
        (("--name", "has space", "--role", "viewer"), "--name"),
        (("--name", "x", "--role", "root"), "--role"),
        (
            (
                "--role",
                "viewer",
            ),
            "--name",
        ),
    ],
)
def test_cli_rejects_bad_arguments_with_exit_2(
    args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse refuses these before any database is opened."""
    with pytest.raises(SystemExit) as stop:
        main(["token", "create", *args])
    assert stop.value.code == 2
    out = capsys.readouterr()
    assert message in out.err
    assert out.out == ""


def test_cli_accepts_compound_durations() -> None:
    parse = cli_module._duration
    assert parse("30d") == timedelta(days=30)
    assert parse("12h") == timedelta(hours=12)
    assert parse("1w2d3h4m5s") == timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)


# ------------------------------------------------------------ service behaviour


async def test_service_create_list_revoke(db: DatabaseManager) -> None:
    tokens = TokenService(db)
    issued = await tokens.create("svc", Role.ADMIN, timedelta(hours=12))
    assert issued.row.expires_at is not None
    remaining = issued.row.expires_at - datetime.now(UTC)
    assert timedelta(hours=11, minutes=59) < remaining <= timedelta(hours=12)
    with pytest.raises(Conflict):
        await tokens.create("svc", Role.VIEWER)
    assert [t.name for t in await tokens.list_all()] == ["svc"]

    first = await tokens.revoke("svc")
    again = await tokens.revoke("svc")
    assert not first.already_revoked
    assert again.already_revoked
    assert again.row.revoked_at == first.row.revoked_at
    with pytest.raises(NotFound):
        await tokens.revoke("missing")
    assert issued.token != (await tokens.create("svc2", Role.ADMIN)).token


# --------------------------------------------------------------- over HTTP


@pytest.mark.parametrize("settings", [PRODUCTION, DEVELOPMENT], ids=["production", "development"])
async def test_expired_token_is_refused(
    db: DatabaseManager, make_api: MakeApi, issue: Issue, settings: object
) -> None:
    token = await issue(Role.ADMIN, "short-lived", timedelta(hours=1))
    api = make_api(settings, token)
    assert "errors" not in await api.gql(VIEWER_QUERY)
    await set_column(db, "short-lived", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert_unauthenticated(await api.post(VIEWER_QUERY), "token expired")


@pytest.mark.parametrize("settings", [PRODUCTION, DEVELOPMENT], ids=["production", "development"])
async def test_malformed_or_unknown_credentials_are_refused(
    db: DatabaseManager, make_api: MakeApi, issue: Issue, settings: object
) -> None:
    """A wrong Authorization header is refused even where anonymous access is allowed,
    and a refused request changes nothing."""
    token = await issue(Role.ADMIN, "real")
    api = make_api(settings)
    unknown = "mvt_" + "A" * 43
    cases = {
        "Bearer": "malformed Authorization header",
        "Bearer ": "malformed Authorization header",
        f"Basic {token}": "malformed Authorization header",
        f"Token {token}": "malformed Authorization header",
        "Bearer not-a-token": "malformed token",
        f"Bearer {token}x": "malformed token",
        f"Bearer {token[:-1]}": "malformed token",
        f"Bearer {token} extra": "malformed token",
        f"Bearer {unknown}": "invalid token",
        f"Bearer {token[:-1]}{'B' if token.endswith('A') else 'A'}": "invalid token",
    }
    mutation = (
        'mutation { createValidationSession(input: {requestId: "x", sourceTechnology: '
        "PYTHON_FLASK, targetTechnology: JAVA_SPRING, validationScope: FULL_SYSTEM, "
        "sourceInputType: CODE_FILES, targetInputType: CODE_FILES}) { created } }"
    )
    for header, message in cases.items():
        response = await api.post(mutation, headers={"Authorization": header})
        assert_unauthenticated(response, message)
        assert token not in response.text
    async with db.read_session() as s:
        count = await s.scalar(sa.text("SELECT count(*) FROM validation_sessions"))
    assert count == 0
    # the real token, for contrast
    assert (await api.gql(mutation, token=token))["data"]["createValidationSession"]["created"]


async def test_last_used_is_written_at_most_once_a_minute(
    db: DatabaseManager, make_api: MakeApi, issue: Issue
) -> None:
    token = await issue(Role.VIEWER, "busy")
    api = make_api(PRODUCTION, token)
    await api.gql(VIEWER_QUERY)
    (first,) = await token_rows(db)
    assert first["last_used_at"] is not None
    await api.gql(VIEWER_QUERY)
    (second,) = await token_rows(db)
    assert second["last_used_at"] == first["last_used_at"]
    assert second["updated_at"] == first["updated_at"]  # no write at all

    two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
    await set_column(db, "busy", last_used_at=two_minutes_ago)
    await api.gql(VIEWER_QUERY)
    (third,) = await token_rows(db)
    assert third["last_used_at"] != second["last_used_at"]


@pytest.mark.sqlite_only
async def test_a_token_that_cannot_be_checked_gets_503(
    db: DatabaseManager, db_factory: DbFactory, make_api: MakeApi, issue: Issue, tmp_path: Path
) -> None:
    token = await issue(Role.ADMIN)
    unreachable = db_factory(url=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    app = build_graphql_app(unreachable, PRODUCTION)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        response = await client.post(
            "/", json={"query": VIEWER_QUERY}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 503
    assert response.json() == {
        "errors": [
            {
                "message": "cannot check the token now (database unavailable); retry",
                "extensions": {"code": "SERVICE_UNAVAILABLE", "retryable": True},
            }
        ]
    }
    assert response.headers["retry-after"] == "1"
