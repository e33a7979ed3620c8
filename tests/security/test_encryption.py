"""Field encryption at rest (issue "[security] 6"): secret JSON columns are AES-GCM
envelopes in the database, plaintext through repositories, services and GraphQL;
moved or altered ciphertexts fail loudly; keys rotate with `migval keys rotate`."""

import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from graph.cli import main as cli_main
from graph.schema import build_graphql_app
from persistence import crypto
from persistence.crypto import (
    ENV_KEYS,
    DecryptionError,
    KeyRing,
    configure_encryption,
    default_kid,
    generate_key,
)
from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError, Conflict, ValidationFailed
from persistence.models import metadata
from persistence.repositories import BehavioralTestRepository, SessionRepository
from persistence.services import BehavioralTestService, SessionService
from persistence.services.keys import rotate_keys

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SESSIONS = metadata.tables["validation_sessions"]
TESTS = metadata.tables["behavioral_test_results"]
SESSION_SECRETS = ("source_metadata", "target_metadata", "source_urls", "target_urls")

OLD = f"old:{generate_key()}"
NEW = f"new:{generate_key()}"

UseKeys = Callable[..., KeyRing | None]


# ------------------------------------------------------------------------- helpers


@pytest.fixture
def use_keys(monkeypatch: pytest.MonkeyPatch) -> UseKeys:
    """``use_keys(*entries)`` sets the process key ring (none: plaintext mode); the
    original setting is restored after the test."""
    monkeypatch.setattr(crypto, "_active", crypto._active)

    def use(*entries: str) -> KeyRing | None:
        ring = KeyRing.parse(",".join(entries)) if entries else None
        configure_encryption(ring)
        return ring

    return use


def secret_session(request_id: str, tag: str = "s3cr3t", **overrides: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "source_technology": "PYTHON_FLASK",
        "target_technology": "JAVA_SPRING",
        "validation_scope": "FULL_SYSTEM",
        "source_input_type": "CODE_FILES",
        "target_input_type": "CODE_FILES",
        "source_urls": [f"https://admin:{tag}-src@source.example/"],
        "target_urls": {"base": f"https://target.example/?token={tag}-tgt"},
        "source_metadata": {"db_password": f"{tag}-srcmeta", "n": 1.5, "ok": True},
        "target_metadata": {"api_key": f"{tag}-tgtmeta", "nested": [1, None, "é"]},
        "session_metadata": {"type": "visible"},
        **overrides,
    }


def secret_test(name: str, tag: str = "s3cr3t") -> dict[str, Any]:
    return {
        "scenario_name": name,
        "source_url": "http://source.example/login",
        "target_url": "http://target.example/login",
        "execution_status": "passed",
        "interaction_log": [{"type": "fill", "field": "password", "value": f"{tag}-typed"}],
    }


async def create(db: DatabaseManager, request_id: str, tag: str = "s3cr3t") -> int:
    outcome = await SessionService(db).create(secret_session(request_id, tag))
    assert outcome.created
    assert outcome.session.id is not None
    return outcome.session.id


async def raw_text(db: DatabaseManager, table: sa.Table, column: str) -> list[str | None]:
    """The stored values of ``column`` as the database's own JSON text, in id order."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(f"SELECT CAST({column} AS TEXT) FROM {table.name} ORDER BY id")
        )
        return [row[0] for row in rows]


async def raw_envelopes(db: DatabaseManager, table: sa.Table, column: str) -> list[Any]:
    return [None if t is None else json.loads(t) for t in await raw_text(db, table, column)]


async def execute(
    db: DatabaseManager, statement: Any, params: dict[str, Any] | None = None
) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(statement, params or {})


async def read_session(db: DatabaseManager, request_id: str) -> Any:
    async with db.read_session() as s:
        return await SessionRepository(s).get_by_request_id(request_id)


async def read_tests(db: DatabaseManager, session_id: int) -> list[Any]:
    async with db.read_session() as s:
        return (await BehavioralTestRepository(s).list_by_session_ids([session_id]))[0]


# ------------------------------------------------------------- storage and reads


async def test_secrets_are_ciphertext_in_the_database_and_plaintext_when_read(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    use_keys(NEW, OLD)
    values = secret_session("req-a")
    outcome = await SessionService(db).create(values)
    created = outcome.session
    for column in SESSION_SECRETS:  # the INSERT ... RETURNING object is plaintext
        assert getattr(created, column) == values[column]
    assert created.id is not None
    tests = await BehavioralTestService(db).record(
        created.id, [secret_test("login"), {**secret_test("no-log"), "interaction_log": None}]
    )
    assert tests[0].interaction_log == secret_test("login")["interaction_log"]
    assert tests[1].interaction_log is None

    stored: list[str] = []
    for column in SESSION_SECRETS:
        stored += [t or "" for t in await raw_text(db, SESSIONS, column)]
    stored += [t or "" for t in await raw_text(db, TESTS, "interaction_log")]
    for text in stored:
        assert "s3cr3t" not in text
        assert "password" not in text
    for column in SESSION_SECRETS:
        (envelope,) = await raw_envelopes(db, SESSIONS, column)
        assert set(envelope) == {"$enc", "kid", "n", "ct"}
        assert (envelope["$enc"], envelope["kid"]) == ("v1", "new")
        assert len(base64.b64decode(envelope["n"])) == 12
    log_envelope, no_log = await raw_envelopes(db, TESTS, "interaction_log")
    assert log_envelope["kid"] == "new"
    assert no_log is None  # NULL stays NULL
    # Columns that are not secret stay queryable JSON.
    assert json.loads((await raw_text(db, SESSIONS, "session_metadata"))[0]) == {"type": "visible"}

    row = await read_session(db, "req-a")
    for column in SESSION_SECRETS:
        assert getattr(row, column) == values[column]
    async with db.read_session() as s:
        (by_id,) = await SessionRepository(s).list_by_ids([created.id])
        assert by_id is not None
        assert by_id.source_urls == values["source_urls"]
    read_back = await read_tests(db, created.id)
    assert [t.interaction_log for t in read_back] == [t.interaction_log for t in tests]


async def test_graphql_reads_plaintext_through_loaders(
    db: DatabaseManager, use_keys: UseKeys, caplog: pytest.LogCaptureFixture
) -> None:
    use_keys(NEW)
    session_id = await create(db, "req-gql")
    await BehavioralTestService(db).record(session_id, [secret_test("login")])
    query = """query ($rid: String!) { session(requestId: $rid) {
        sourceUrls targetMetadata behavioralTests { interactionLog } } }"""
    transport = httpx.ASGITransport(app=build_graphql_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        variables = {"rid": "req-gql"}
        body = (await client.post("/", json={"query": query, "variables": variables})).json()
        assert "errors" not in body, body
        session = body["data"]["session"]
        assert session["sourceUrls"] == secret_session("req-gql")["source_urls"]
        assert session["targetMetadata"] == secret_session("req-gql")["target_metadata"]
        logs = [{"interactionLog": secret_test("x")["interaction_log"]}]
        assert session["behavioralTests"] == logs

        # A value that fails to decrypt is a masked internal error, never garbage.
        await execute(db, sa.update(TESTS).values(interaction_log={"$enc": "v1"}))
        with caplog.at_level(logging.ERROR):
            body = (await client.post("/", json={"query": query, "variables": variables})).json()
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "interaction_log" not in error["message"]
    assert any("malformed envelope" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_idempotent_create_compares_plaintext(db: DatabaseManager, use_keys: UseKeys) -> None:
    use_keys(NEW)
    await create(db, "req-idem")
    again = await SessionService(db).create(secret_session("req-idem"))
    assert again.created is False
    assert again.session.source_metadata == secret_session("req-idem")["source_metadata"]
    with pytest.raises(Conflict, match="different source_urls"):
        await SessionService(db).create(
            secret_session("req-idem", source_urls=["https://other.example/"])
        )


async def test_equal_plaintexts_give_different_ciphertexts(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    use_keys(NEW)
    first = await create(db, "req-1", tag="same")
    await create(db, "req-2", tag="same")
    await BehavioralTestService(db).record(
        first, [secret_test("a", "same"), secret_test("b", "same")]
    )
    for table, column in [(SESSIONS, c) for c in SESSION_SECRETS] + [(TESTS, "interaction_log")]:
        one, two = await raw_envelopes(db, table, column)
        assert one["n"] != two["n"]
        assert one["ct"] != two["ct"]


async def test_reserved_envelope_key_is_rejected_as_input(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    use_keys()  # also without keys: the value would read back as an envelope
    with pytest.raises(ValidationFailed) as caught:
        await SessionService(db).create(secret_session("req-r", source_urls={"$enc": "v1"}))
    assert caught.value.field == "source_urls"
    session_id = await create(db, "req-ok")
    bad = {**secret_test("t"), "interaction_log": {"$enc": "x"}}
    with pytest.raises(ValidationFailed) as caught:
        await BehavioralTestService(db).record(session_id, [secret_test("ok"), bad])
    assert caught.value.field == "tests[1].interaction_log"
    assert await read_tests(db, session_id) == []  # all or nothing


async def test_without_keys_development_stores_plaintext_and_reads_it(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    use_keys()
    session_id = await create(db, "req-plain")
    await BehavioralTestService(db).record(session_id, [secret_test("t")])
    assert "s3cr3t-src" in (await raw_text(db, SESSIONS, "source_urls"))[0]
    assert "s3cr3t-typed" in (await raw_text(db, TESTS, "interaction_log"))[0]
    row = await read_session(db, "req-plain")
    assert row.source_urls == secret_session("x")["source_urls"]
    # Adding keys later: plaintext rows still read, new rows are sealed.
    use_keys(NEW)
    assert (await read_session(db, "req-plain")).target_metadata == secret_session("x")[
        "target_metadata"
    ]
    await create(db, "req-sealed")
    assert "s3cr3t" not in (await raw_text(db, SESSIONS, "source_urls"))[1]


# ------------------------------------------------------------ integrity failures


async def test_ciphertext_moved_to_another_row_or_column_fails(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    use_keys(NEW)
    await create(db, "req-a", tag="alice")
    bob = await create(db, "req-b", tag="bob")
    await BehavioralTestService(db).record(
        bob, [secret_test("t1", "one"), secret_test("t2", "two")]
    )

    await execute(
        db,
        sa.text(
            "UPDATE validation_sessions SET source_urls = "
            "(SELECT source_urls FROM validation_sessions WHERE request_id = 'req-a') "
            "WHERE request_id = 'req-b'"
        ),
    )
    with pytest.raises(DecryptionError) as caught:
        await read_session(db, "req-b")
    message = str(caught.value)
    assert "validation_sessions.source_urls" in message
    assert "request_id='req-b'" in message
    assert "authentication failed" in message
    assert "alice" not in message
    assert "bob" not in message
    assert (await read_session(db, "req-a")).source_urls == secret_session("x", "alice")[
        "source_urls"
    ]

    # Another column of the same row.
    await execute(
        db,
        sa.text(
            "UPDATE validation_sessions SET target_urls = source_urls WHERE request_id = 'req-a'"
        ),
    )
    with pytest.raises(DecryptionError, match=r"validation_sessions\.target_urls"):
        await read_session(db, "req-a")

    # Behavioral tests are bound to their id.
    await execute(
        db,
        sa.text(
            "UPDATE behavioral_test_results SET interaction_log = "
            "(SELECT interaction_log FROM behavioral_test_results WHERE id = 1) WHERE id = 2"
        ),
    )
    with pytest.raises(DecryptionError, match=r"behavioral_test_results\.interaction_log \(id=2\)"):
        await read_tests(db, bob)


async def test_tampered_or_unknown_key_ciphertext_fails(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    use_keys(NEW)
    await create(db, "req-t")
    (envelope,) = await raw_envelopes(db, SESSIONS, "source_metadata")
    ct = bytearray(base64.b64decode(envelope["ct"]))
    ct[0] ^= 0x01
    tampered = {**envelope, "ct": base64.b64encode(bytes(ct)).decode()}
    await execute(db, sa.update(SESSIONS).values(source_metadata=tampered))
    with pytest.raises(DecryptionError, match="authentication failed"):
        await read_session(db, "req-t")

    await execute(db, sa.update(SESSIONS).values(source_metadata={**envelope, "n": "AAAA"}))
    with pytest.raises(DecryptionError, match="malformed envelope"):
        await read_session(db, "req-t")

    await execute(db, sa.update(SESSIONS).values(source_metadata=envelope))
    assert (await read_session(db, "req-t")).source_metadata == secret_session("x")[
        "source_metadata"
    ]

    use_keys(OLD)  # a key ring without the key the value was sealed with
    with pytest.raises(DecryptionError, match="key id 'new', which is not in"):
        await read_session(db, "req-t")
    use_keys()
    with pytest.raises(DecryptionError, match=f"encrypted but {ENV_KEYS} is not set"):
        await read_session(db, "req-t")


# ------------------------------------------------------------------ key rotation


async def test_two_keys_new_first_still_open_old_values(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    use_keys(OLD)
    old_id = await create(db, "req-old")
    await BehavioralTestService(db).record(old_id, [secret_test("t")])
    use_keys(NEW, OLD)
    await create(db, "req-new")
    assert [e["kid"] for e in await raw_envelopes(db, SESSIONS, "source_urls")] == ["old", "new"]
    row = await read_session(db, "req-old")
    assert row.source_urls == secret_session("x")["source_urls"]
    assert (await read_tests(db, old_id))[0].interaction_log == secret_test("t")["interaction_log"]


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "graph.cli",
        *args,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_keys_rotate_cli_reencrypts_everything_and_is_idempotent(
    db: DatabaseManager, database_url: str, use_keys: UseKeys
) -> None:
    use_keys()  # one row from before encryption was enabled
    plain_id = await create(db, "req-plain")
    use_keys(OLD)
    ids = [plain_id] + [await create(db, f"req-{i}") for i in range(3)]
    await BehavioralTestService(db).record(ids[1], [secret_test("a"), secret_test("b")])
    await BehavioralTestService(db).record(ids[2], [{**secret_test("c"), "interaction_log": None}])

    env = {k: v for k, v in os.environ.items() if k not in {"MIGVAL_ENV", ENV_KEYS}}
    env.update({"DATABASE_URL": database_url, ENV_KEYS: f"{NEW},{OLD}"})
    code, out, err = await run_cli("keys", "rotate", "--batch-size", "2", env=env)
    assert code == 0, out + err
    assert "rotating to key 'new'" in out
    assert "validation_sessions: rows up to id 2: 2 scanned" in out  # batch progress
    assert "validation_sessions: 4 rows; 12 re-encrypted, 4 plaintext encrypted" in out
    assert "behavioral_test_results: 3 rows; 2 re-encrypted, 0 plaintext encrypted" in out
    assert "done: 18 values rewritten" in out

    for column in SESSION_SECRETS:
        assert {e["kid"] for e in await raw_envelopes(db, SESSIONS, column)} == {"new"}
    assert [e and e["kid"] for e in await raw_envelopes(db, TESTS, "interaction_log")] == [
        "new",
        "new",
        None,
    ]

    code, out, err = await run_cli("keys", "rotate", env=env)
    assert code == 0, out + err
    assert "validation_sessions: 4 rows; 0 re-encrypted, 0 plaintext encrypted, 16 already" in out
    assert "done: 0 values rewritten" in out

    use_keys(NEW)  # the old key is no longer needed
    for request_id in ["req-plain", "req-0", "req-1", "req-2"]:
        row = await read_session(db, request_id)
        assert row.target_urls == secret_session("x")["target_urls"]
    logs = [t.interaction_log for t in await read_tests(db, ids[1])]
    assert logs == [secret_test("a")["interaction_log"]] * 2


async def test_rotation_resumes_after_a_failed_batch(
    db: DatabaseManager, use_keys: UseKeys
) -> None:
    old = use_keys(OLD)
    assert old is not None
    for i in range(5):
        await create(db, f"req-{i}")
    # Row 3 holds a value no key opens: the run stops there, batches before it stay.
    await execute(
        db,
        sa.text(
            "UPDATE validation_sessions SET source_urls = "
            "(SELECT source_urls FROM validation_sessions WHERE id = 1) WHERE id = 3"
        ),
    )
    ring = KeyRing.parse(f"{NEW},{OLD}")
    with pytest.raises(DecryptionError, match=r"source_urls \(request_id='req-2'\)"):
        await rotate_keys(db, ring, batch_size=2)
    kids = [e["kid"] for e in await raw_envelopes(db, SESSIONS, "target_urls")]
    assert kids == ["new", "new", "old", "old", "old"]  # batch 2 rolled back whole

    await execute(db, sa.text("DELETE FROM validation_sessions WHERE id = 3"))
    batches: list[int] = []
    (sessions, tests) = await rotate_keys(
        db, ring, batch_size=2, progress=lambda b: batches.append(b.rows)
    )
    assert (sessions.rows, sessions.current, sessions.resealed) == (4, 8, 8)
    assert (tests.rows, tests.rewritten) == (0, 0)
    assert batches == [2, 2]
    assert {e["kid"] for e in await raw_envelopes(db, SESSIONS, "target_urls")} == {"new"}


async def test_cli_keys_generate_and_rotate_without_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_main(["keys", "generate", "--kid", "k2025"]) == 0
    line = capsys.readouterr().out.strip()
    ring = KeyRing.parse(line)
    assert ring.kids == ("k2025",)
    assert cli_main(["keys", "generate"]) == 0
    key = capsys.readouterr().out.strip()
    assert KeyRing.parse(key).primary_kid == default_kid(base64.urlsafe_b64decode(key + "="))

    monkeypatch.delenv(ENV_KEYS, raising=False)
    monkeypatch.delenv("MIGVAL_ENV", raising=False)
    assert await asyncio.to_thread(cli_main, ["keys", "rotate"]) == 2
    assert f"{ENV_KEYS}: is required" in capsys.readouterr().err


# ------------------------------------------------------------ key configuration


def test_key_ring_from_env() -> None:
    k1, k2 = generate_key(), generate_key()
    ring = KeyRing.from_env({ENV_KEYS: f" a:{k1} , {k2}=", "MIGVAL_ENV": "production"})
    assert ring is not None
    assert ring.kids == ("a", default_kid(base64.urlsafe_b64decode(k2 + "=")))
    assert ring.primary_kid == "a"
    assert k1 not in repr(ring)
    # The same key id whatever the position of an unnamed key.
    again = KeyRing.from_env({ENV_KEYS: f"{k2},a:{k1}"})
    assert again is not None
    assert again.primary_kid == ring.kids[1]


def test_key_ring_from_env_production_requires_keys() -> None:
    for env in ({"MIGVAL_ENV": "production"}, {"MIGVAL_ENV": " Production ", ENV_KEYS: "  "}):
        with pytest.raises(ConfigurationError) as caught:
            KeyRing.from_env(env)
        assert caught.value.field == ENV_KEYS
        assert "MIGVAL_ENV=production" in caught.value.message


def test_key_ring_from_env_development_warns_once_and_is_plaintext(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crypto, "_warned_plaintext", False)
    with caplog.at_level(logging.WARNING, logger="persistence.crypto"):
        assert KeyRing.from_env({}) is None
        assert KeyRing.from_env({"MIGVAL_ENV": "development"}) is None
    warnings = [r for r in caplog.records if ENV_KEYS in r.getMessage()]
    assert len(warnings) == 1
    assert "PLAINTEXT" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("not*base64", "entry 1: key is not base64url"),
        (base64.urlsafe_b64encode(b"x" * 16).decode(), "must decode to 32 bytes, got 16"),
        (base64.b64encode(b"\xfb" * 32).decode(), "not base64url"),  # '+' and '/'
        ("AAAA", "must decode to 32 bytes, got 3"),
        (f"{generate_key()},", "entry 2 is empty"),
        (f"a b:{generate_key()}", "key id 'a b'"),
        (f":{generate_key()}", "key id ''"),
        (f"a:{generate_key()},a:{generate_key()}", "'a' appears twice"),
        ("a:{k},b:{k}".format(k=generate_key()), "'b' is the same key as 'a'"),
    ],
)
def test_key_ring_from_env_rejects_malformed_keys(raw: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        KeyRing.from_env({ENV_KEYS: raw})
    assert caught.value.field == ENV_KEYS
    assert fragment in caught.value.message
    for part in raw.replace(":", ",").split(","):
        if len(part) > 20:
            assert part not in str(caught.value)  # never echo key material


def test_key_ring_from_env_rejects_unknown_mode() -> None:
    with pytest.raises(ConfigurationError) as caught:
        KeyRing.from_env({"MIGVAL_ENV": "prod", ENV_KEYS: generate_key()})
    assert caught.value.field == "MIGVAL_ENV"


def test_envelope_binds_table_column_and_row() -> None:
    ring = KeyRing.parse(NEW)
    sealed = crypto.SESSIONS.seal("source_urls", "req-1", {"a": 1}, ring)
    assert crypto.SESSIONS.open("source_urls", "req-1", sealed, ring) == {"a": 1}
    for column, row_key in [("source_urls", "req-2"), ("target_urls", "req-1")]:
        with pytest.raises(DecryptionError):
            crypto.SESSIONS.open(column, row_key, sealed, ring)
    with pytest.raises(DecryptionError):
        crypto.BEHAVIORAL_TESTS.open("interaction_log", 1, sealed, ring)
