"""Idempotency keys on every write mutation (persistence/idempotency.py).

Over HTTP and at the service level, on SQLite and PostgreSQL: a replay returns the
first response and writes nothing (not a row, not an audit entry); another input with
the same key is IDEMPOTENCY_MISMATCH and writes nothing; keys are per actor; twenty
concurrent duplicates write once; an expired key is a new request; a write that fails
stores no key; migration 0003 goes up and down.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from graph.ids import from_global_id
from graph.schema import build_graphql_app
from persistence.actor import ANONYMOUS, Actor
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.errors import (
    ConfigurationError,
    IdempotencyMismatch,
    NotFound,
    ValidationFailed,
)
from persistence.idempotency import (
    IdempotencyRequest,
    idempotency_ttl,
    purge_expired_idempotency_keys,
    request_hash,
    scope_of,
)
from persistence.models import IdempotencyKey, metadata
from persistence.services import (
    BehavioralTestService,
    DiscrepancyService,
    ResultService,
    SessionService,
)
from persistence.services.tokens import TokenService
from tests.conftest import AlembicRun
from tests.graph.conftest import (
    Seeded,
    Seeder,
    behavioral_values,
    data_of,
    discrepancy_values,
    gid,
    result_values,
    session_values,
)

KEYS = IdempotencyKey.__table__  # type: ignore[attr-defined]
ERRORS = "errors { field code message }"

CREATE = f"""
mutation($input: CreateValidationSessionInput!) {{
  createValidationSession(input: $input) {{
    session {{ id requestId status }} created replayed {ERRORS}
  }}
}}
"""
UPDATE_STATUS = f"""
mutation($input: UpdateSessionStatusInput!) {{
  updateSessionStatus(input: $input) {{ session {{ id status }} replayed {ERRORS} }}
}}
"""
RECORD = f"""
mutation($input: RecordValidationResultInput!) {{
  recordValidationResult(input: $input) {{
    result {{ id fidelityScore discrepancies {{ id }} }} replayed {ERRORS}
  }}
}}
"""
RECORD_TESTS = f"""
mutation($input: RecordBehavioralTestResultsInput!) {{
  recordBehavioralTestResults(input: $input) {{ tests {{ id scenarioName }} replayed {ERRORS} }}
}}
"""
RESOLVE = f"""
mutation($input: ResolveDiscrepancyInput!) {{
  resolveDiscrepancy(input: $input) {{
    discrepancy {{ id isResolved version }} replayed {ERRORS}
  }}
}}
"""
REOPEN = f"""
mutation($input: ReopenDiscrepancyInput!) {{
  reopenDiscrepancy(input: $input) {{
    discrepancy {{ id isResolved version }} replayed {ERRORS}
  }}
}}
"""
RESOLVE_MANY = f"""
mutation($input: ResolveDiscrepanciesInput!) {{
  resolveDiscrepancies(input: $input) {{
    discrepancies {{ id isResolved version }} replayed {ERRORS}
  }}
}}
"""
DELETE = f"""
mutation($input: DeleteSessionInput!) {{
  deleteSession(input: $input) {{ deletedSessionId replayed {ERRORS} }}
}}
"""


# ------------------------------------------------------------------------ helpers


@pytest.fixture
async def client(db: DatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_graphql_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://migval.test") as c:
        yield c


@pytest.fixture
def seed(db: DatabaseManager) -> Seeder:
    return Seeder(db)


async def post(
    client: httpx.AsyncClient,
    document: str,
    input_: dict[str, Any],
    token: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/", json={"query": document, "variables": {"input": input_}}, headers=headers
    )
    assert response.status_code == 200, response.text
    data = data_of(response.json())
    (payload,) = data.values()
    assert isinstance(payload, dict)
    return payload


async def snapshot(db: DatabaseManager) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (audit_log and idempotency_keys included)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read_session() as s:
        for table in metadata.sorted_tables:
            rows = await s.execute(sa.select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(row) for row in rows]
    return out


async def counts(db: DatabaseManager) -> dict[str, int]:
    return {name: len(rows) for name, rows in (await snapshot(db)).items()}


async def stored_keys(db: DatabaseManager) -> list[dict[str, Any]]:
    async with db.read_session() as s:
        rows = await s.execute(sa.select(KEYS).order_by(KEYS.c.id))
        return [dict(row._mapping) for row in rows]


async def expire_all_keys(db: DatabaseManager) -> None:
    async with db.write_session() as s:
        await s.execute(sa.update(KEYS).values(expires_at=datetime.now(UTC) - timedelta(hours=1)))


def with_key(input_: dict[str, Any], key: str) -> dict[str, Any]:
    return {**input_, "idempotencyKey": key}


def discrepancy_input(i: int) -> dict[str, Any]:
    return {"discrepancyType": "layout", "severity": "WARNING", "description": f"diff {i}"}


def result_input(session_gid: str, **overrides: Any) -> dict[str, Any]:
    return {
        "sessionId": session_gid,
        "overallStatus": "APPROVED",
        "fidelityScore": 0.9,
        "summary": "equivalent",
        "discrepancies": [discrepancy_input(0), discrepancy_input(1)],
        **overrides,
    }


def create_input(request_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "sourceTechnology": "PYTHON_FLASK",
        "targetTechnology": "JAVA_SPRING",
        "validationScope": "FULL_SYSTEM",
        "sourceInputType": "CODE_FILES",
        "targetInputType": "CODE_FILES",
        **overrides,
    }


def behavioral_input(name: str) -> dict[str, Any]:
    return {
        "scenarioName": name,
        "sourceUrl": "http://source.example/",
        "targetUrl": "http://target.example/",
        "executionStatus": "PASSED",
    }


# ------------------------------------------------------- every mutation, over HTTP


@dataclass(frozen=True)
class Case:
    """A write mutation: its document, a first input and another one (given the
    seeded session), and the ids of what its payload returns."""

    name: str
    document: str
    inputs: Callable[[Seeded], tuple[dict[str, Any], dict[str, Any]]]
    ids: Callable[[dict[str, Any]], list[str]]


def _disc(seeded: Seeded, i: int) -> str:
    return gid("Discrepancy", seeded.discrepancy_ids[i])


CASES = [
    Case(
        "createValidationSession",
        CREATE,
        lambda s: (create_input("req-new"), create_input("req-new", behavioralTimeout=60)),
        lambda p: [p["session"]["id"]],
    ),
    Case(
        "updateSessionStatus",
        UPDATE_STATUS,
        lambda s: (
            {"sessionId": s.gid, "status": "PROCESSING"},
            {"sessionId": s.gid, "status": "CANCELLED"},
        ),
        lambda p: [p["session"]["id"]],
    ),
    Case(
        "recordValidationResult",
        RECORD,
        lambda s: (result_input(s.gid), result_input(s.gid, fidelityScore=0.5)),
        lambda p: [p["result"]["id"], *(d["id"] for d in p["result"]["discrepancies"])],
    ),
    Case(
        "recordBehavioralTestResults",
        RECORD_TESTS,
        lambda s: (
            {"sessionId": s.gid, "tests": [behavioral_input("a"), behavioral_input("b")]},
            {"sessionId": s.gid, "tests": [behavioral_input("a")]},
        ),
        lambda p: [t["id"] for t in p["tests"]],
    ),
    Case(
        "resolveDiscrepancy",
        RESOLVE,
        lambda s: (
            {"id": _disc(s, 0), "resolvedBy": "ana"},
            {"id": _disc(s, 0), "resolvedBy": "bob"},
        ),
        lambda p: [p["discrepancy"]["id"]],
    ),
    Case(
        "reopenDiscrepancy",
        REOPEN,
        lambda s: (
            {"id": _disc(s, 2), "reopenedBy": "ana"},
            {"id": _disc(s, 2), "reopenedBy": "ana", "notes": "wrong fix"},
        ),
        lambda p: [p["discrepancy"]["id"]],
    ),
    Case(
        "resolveDiscrepancies",
        RESOLVE_MANY,
        lambda s: (
            {"ids": [_disc(s, 0), _disc(s, 1)], "resolvedBy": "ana"},
            {"ids": [_disc(s, 0)], "resolvedBy": "ana"},
        ),
        lambda p: [d["id"] for d in p["discrepancies"]],
    ),
    Case(
        "deleteSession",
        DELETE,
        # By requestId: the replay must not need the (deleted) session.
        lambda s: ({"requestId": s.request_id}, {"sessionId": s.gid}),
        lambda p: [p["deletedSessionId"]],
    ),
]


async def seeded_session(db: DatabaseManager, seed: Seeder) -> Seeded:
    """A session with a result, three discrepancies (the third resolved) and a test."""
    seeded = await seed.full("req-seed", n_discrepancies=3, n_tests=1)
    await DiscrepancyService(db).resolve(seeded.discrepancy_ids[2], "seeder")
    return seeded


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_replay_returns_the_first_response_and_writes_nothing(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder, case: Case
) -> None:
    seeded = await seeded_session(db, seed)
    first_input, other_input = case.inputs(seeded)

    first = await post(client, case.document, with_key(first_input, "key-1"))
    assert first["errors"] == []
    assert first["replayed"] is False
    assert len(await stored_keys(db)) == 1
    after_first = await snapshot(db)

    again = await post(client, case.document, with_key(first_input, "key-1"))
    assert again["errors"] == []
    assert again["replayed"] is True
    assert case.ids(again) == case.ids(first)
    if case.name == "createValidationSession":
        assert again["created"] is True  # as the first response said
    assert await snapshot(db) == after_first  # no row changed, no audit entry, no key

    mismatch = await post(client, case.document, with_key(other_input, "key-1"))
    assert mismatch["errors"] == [
        {
            "field": "input.idempotencyKey",
            "code": "IDEMPOTENCY_MISMATCH",
            "message": "was already used with a different input; use a new key for a new request",
        }
    ]
    assert mismatch["replayed"] is False
    assert await snapshot(db) == after_first


async def test_replay_of_a_deleted_session_returns_the_same_id(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder
) -> None:
    seeded = await seed.session("req-gone")
    for _ in range(2):
        payload = await post(client, DELETE, {"sessionId": seeded.gid, "idempotencyKey": "del"})
        assert payload["errors"] == []
        assert payload["deletedSessionId"] == seeded.gid
    assert payload["replayed"] is True
    # Without the key the same request is an error: the session is gone.
    unkeyed = await post(client, DELETE, {"sessionId": seeded.gid})
    assert unkeyed["errors"][0]["code"] == "NOT_FOUND"


async def test_same_key_for_another_operation_is_a_mismatch(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder
) -> None:
    seeded = await seed.session("req-op")
    created = await post(client, CREATE, with_key(create_input("req-other"), "shared"))
    assert created["errors"] == []
    before = await snapshot(db)
    keyed = {"sessionId": seeded.gid, "status": "PROCESSING", "idempotencyKey": "shared"}
    moved = await post(client, UPDATE_STATUS, keyed)
    assert moved["session"] is None
    assert moved["errors"][0]["code"] == "IDEMPOTENCY_MISMATCH"
    assert "createValidationSession" in moved["errors"][0]["message"]
    assert await snapshot(db) == before


async def test_without_a_key_nothing_is_stored_and_nothing_replays(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder
) -> None:
    seeded = await seed.session("req-plain")
    for _ in range(2):
        payload = await post(client, RECORD, result_input(seeded.gid))
        assert payload["errors"] == []
        assert payload["replayed"] is False
    assert (await counts(db))["validation_results"] == 2
    assert await stored_keys(db) == []


# ----------------------------------------------------------------------- scoping


async def test_keys_are_scoped_per_actor(db: DatabaseManager, client: httpx.AsyncClient) -> None:
    tokens = TokenService(db)
    alice = (await tokens.create("alice", Role.WRITER)).token
    bob = (await tokens.create("bob", Role.WRITER)).token

    by_alice = await post(client, CREATE, with_key(create_input("req-a"), "same"), alice)
    by_bob = await post(client, CREATE, with_key(create_input("req-b"), "same"), bob)
    by_anonymous = await post(client, CREATE, with_key(create_input("req-c"), "same"))
    sessions = {p["session"]["requestId"]: p for p in (by_alice, by_bob, by_anonymous)}
    assert set(sessions) == {"req-a", "req-b", "req-c"}
    assert all(p["errors"] == [] and p["replayed"] is False for p in sessions.values())

    replay = await post(client, CREATE, with_key(create_input("req-a"), "same"), alice)
    assert replay["replayed"] is True
    assert replay["session"]["id"] == by_alice["session"]["id"]
    # Bob's key is his: Alice's input under it is a mismatch for him, not a replay.
    crossed = await post(client, CREATE, with_key(create_input("req-a"), "same"), bob)
    assert crossed["errors"][0]["code"] == "IDEMPOTENCY_MISMATCH"
    scopes = sorted(k["scope"] for k in await stored_keys(db))
    assert len(scopes) == 3
    assert "anonymous" in scopes


# ------------------------------------------------------------------- concurrency


async def test_twenty_concurrent_duplicates_write_once(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder
) -> None:
    seeded = await seed.session("req-burst")
    before = await counts(db)
    keyed = with_key(
        result_input(seeded.gid, discrepancies=[discrepancy_input(i) for i in range(3)]), "burst"
    )

    payloads = await asyncio.gather(*(post(client, RECORD, keyed) for _ in range(20)))

    assert all(p["errors"] == [] for p in payloads), payloads
    assert sorted(p["replayed"] for p in payloads) == [False] + [True] * 19
    assert len({p["result"]["id"] for p in payloads}) == 1
    assert len({tuple(d["id"] for d in p["result"]["discrepancies"]) for p in payloads}) == 1
    after = await counts(db)
    assert after["validation_results"] == before["validation_results"] + 1
    assert after["validation_discrepancies"] == before["validation_discrepancies"] + 3
    assert after["audit_log"] == before["audit_log"] + 1
    assert after["idempotency_keys"] == 1


# ------------------------------------------------------------ expiry and failures


async def test_an_expired_key_is_a_new_request_and_can_be_purged(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder
) -> None:
    seeded = await seed.session("req-expiry")
    keyed = with_key(result_input(seeded.gid), "old")
    first = await post(client, RECORD, keyed)
    await expire_all_keys(db)

    again = await post(client, RECORD, keyed)
    assert again["errors"] == []
    assert again["replayed"] is False
    assert again["result"]["id"] != first["result"]["id"]
    assert (await counts(db))["validation_results"] == 2
    (key,) = await stored_keys(db)  # the expired row was replaced
    assert key["expires_at"] > datetime.now(UTC)
    assert key["result_ids"] == [from_global_id(again["result"]["id"])[1]]

    # And now it replays the second outcome.
    third = await post(client, RECORD, keyed)
    assert third["replayed"] is True
    assert third["result"]["id"] == again["result"]["id"]

    for name in ("k1", "k2"):
        await post(client, RECORD, with_key(result_input(seeded.gid), name))
    assert await purge_expired_idempotency_keys(db) == 0
    async with db.write_session() as s:
        await s.execute(
            sa.update(KEYS)
            .where(KEYS.c.key.in_(["k1", "old"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await purge_expired_idempotency_keys(db) == 2
    assert [k["key"] for k in await stored_keys(db)] == ["k2"]


async def test_a_failed_write_stores_no_key_so_a_corrected_retry_succeeds(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder
) -> None:
    seeded = await seed.full("req-fail", n_discrepancies=1, n_tests=0)
    before = await snapshot(db)

    # Refused before the transaction (validation) ...
    bad = await post(client, RECORD, with_key(result_input(seeded.gid, fidelityScore=1.5), "fix"))
    assert bad["errors"][0]["code"] == "INVALID"
    # ... and inside it, after the key was claimed (stale version): rolled back, key too.
    stale = await post(
        client,
        RESOLVE,
        {"id": _disc(seeded, 0), "resolvedBy": "ana", "expectedVersion": 7, "idempotencyKey": "v"},
    )
    assert stale["errors"][0]["code"] == "STALE_VERSION"
    assert await snapshot(db) == before

    fixed = await post(client, RECORD, with_key(result_input(seeded.gid, fidelityScore=1.0), "fix"))
    assert fixed["errors"] == []
    assert fixed["replayed"] is False
    resolved = await post(
        client,
        RESOLVE,
        {"id": _disc(seeded, 0), "resolvedBy": "ana", "expectedVersion": 1, "idempotencyKey": "v"},
    )
    assert resolved["errors"] == []
    assert resolved["discrepancy"]["version"] == 2
    assert len(await stored_keys(db)) == 2


@pytest.mark.parametrize(
    ("key", "ok"),
    [("", False), ("k" * 201, False), ("k" * 200, True)],
    ids=["empty", "too-long", "longest"],
)
async def test_key_length(
    db: DatabaseManager, client: httpx.AsyncClient, key: str, ok: bool
) -> None:
    payload = await post(client, CREATE, with_key(create_input("req-len"), key))
    if ok:
        assert payload["errors"] == []
        return
    assert payload["session"] is None
    assert payload["errors"][0]["field"] == "input.idempotencyKey"
    assert payload["errors"][0]["code"] == "INVALID"
    assert (await counts(db))["validation_sessions"] == 0


async def test_replay_of_an_object_deleted_since_is_not_found(
    db: DatabaseManager, client: httpx.AsyncClient, seed: Seeder
) -> None:
    seeded = await seed.session("req-later-gone")
    keyed = {"sessionId": seeded.gid, "status": "PROCESSING", "idempotencyKey": "st"}
    assert (await post(client, UPDATE_STATUS, keyed))["errors"] == []
    await SessionService(db).delete(seeded.session_id)
    payload = await post(client, UPDATE_STATUS, keyed)
    assert payload["session"] is None
    assert payload["errors"][0]["code"] == "NOT_FOUND"
    assert payload["errors"][0]["field"] == "input.idempotencyKey"


# ------------------------------------------------------------------ service level


def keyed(actor: Actor, key: str, operation: str, payload: Any) -> IdempotencyRequest:
    return IdempotencyRequest.for_input(actor, key, operation, payload)


async def test_service_replay_mismatch_and_scope(db: DatabaseManager) -> None:
    service = SessionService(db)
    values = session_values("req-svc")
    writer = Actor(name="pipeline", role=Role.WRITER, token_id=41)

    first_key = keyed(writer, "k", "createValidationSession", values)
    first = await service.create(values, first_key)
    assert first.created
    assert first_key.replayed is False
    before = await snapshot(db)

    again_key = keyed(writer, "k", "createValidationSession", values)
    again = await service.create(values, again_key)
    assert again_key.replayed is True
    assert again.session.id == first.session.id
    assert again.created is True
    assert await snapshot(db) == before

    other = session_values("req-svc-2")
    with pytest.raises(IdempotencyMismatch) as raised:
        await service.create(other, keyed(writer, "k", "createValidationSession", other))
    assert raised.value.field == "idempotency_key"
    assert await snapshot(db) == before

    # The same key of another actor is another key.
    theirs = await service.create(other, keyed(ANONYMOUS, "k", "createValidationSession", other))
    assert theirs.created
    assert theirs.session.id != first.session.id


async def test_service_rollback_leaves_no_key(db: DatabaseManager, seed: Seeder) -> None:
    results = ResultService(db)
    payload = {"session": 999, **result_values()}
    with pytest.raises(NotFound):
        await results.record(999, result_values(), (), keyed(ANONYMOUS, "r", "op", payload))
    assert await stored_keys(db) == []

    seeded = await seed.session("req-rollback")
    payload = {"session": seeded.session_id, **result_values()}
    discrepancies = [discrepancy_values(0)]
    first = await results.record(
        seeded.session_id, result_values(), discrepancies, keyed(ANONYMOUS, "r", "op", payload)
    )
    request = keyed(ANONYMOUS, "r", "op", payload)
    replay = await results.record(seeded.session_id, result_values(), discrepancies, request)
    assert request.replayed is True
    assert replay.id == first.id
    assert (await counts(db))["validation_results"] == 1


async def test_twenty_concurrent_service_calls_write_once(
    db: DatabaseManager, seed: Seeder
) -> None:
    seeded = await seed.session("req-svc-burst")
    payload = {"session": seeded.session_id, "tests": ["login"]}
    requests = [keyed(ANONYMOUS, "t", "recordBehavioralTestResults", payload) for _ in range(20)]
    service = BehavioralTestService(db)
    stored = await asyncio.gather(
        *(service.record(seeded.session_id, [behavioral_values("login")], r) for r in requests)
    )
    assert len({tuple(row.id for row in rows) for rows in stored}) == 1
    assert sorted(r.replayed for r in requests) == [False] + [True] * 19
    assert (await counts(db))["behavioral_test_results"] == 1


@pytest.mark.parametrize("key", ["", "k" * 201, "a\x00b", "\ud800"])
def test_keys_the_database_cannot_store_are_invalid(key: str) -> None:
    # (Over HTTP, NUL and lone surrogates are refused before GraphQL runs.)
    request = keyed(ANONYMOUS, key, "op", {"text": "\ud800"})  # any input hashes
    with pytest.raises(ValidationFailed) as raised:
        request.check()
    assert raised.value.field == "idempotency_key"


def test_ttl_setting_and_request_hash() -> None:
    assert idempotency_ttl({}) == timedelta(hours=24)
    assert idempotency_ttl({"MIGVAL_IDEMPOTENCY_TTL_HOURS": " 2 "}) == timedelta(hours=2)
    for bad in ("0", "-1", "soon", "1.5", "100000"):
        with pytest.raises(ConfigurationError) as error:
            idempotency_ttl({"MIGVAL_IDEMPOTENCY_TTL_HOURS": bad})
        assert error.value.field == "MIGVAL_IDEMPOTENCY_TTL_HOURS"
    # Canonical: key order does not matter; operation and values do.
    assert request_hash("op", {"a": 1, "b": [1, 2]}) == request_hash("op", {"b": [1, 2], "a": 1})
    assert request_hash("op", {"a": 1}) != request_hash("other", {"a": 1})
    assert request_hash("op", {"a": 1}) != request_hash("op", {"a": 2})
    assert len(request_hash("op", {})) == 64
    assert scope_of(ANONYMOUS) == "anonymous"
    assert scope_of(Actor(name="x", role=Role.WRITER, token_id=7)) == "token:7"


async def test_ttl_from_the_environment_sets_expiry(
    db: DatabaseManager, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGVAL_IDEMPOTENCY_TTL_HOURS", "2")
    await post(client, CREATE, with_key(create_input("req-ttl"), "ttl"))
    (key,) = await stored_keys(db)
    lifetime = key["expires_at"] - key["created_at"]
    assert timedelta(hours=2) - timedelta(minutes=1) < lifetime < timedelta(hours=2, minutes=1)


# ---------------------------------------------------------------------- migration


async def test_migration_0003_up_and_down(empty_database_url: str, alembic_run: AlembicRun) -> None:
    url = empty_database_url

    async def tables() -> set[str]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    await alembic_run("upgrade", url, "0002")
    assert "idempotency_keys" not in await tables()
    await alembic_run("upgrade", url, "0003")
    assert "idempotency_keys" in await tables()

    engine = create_async_engine(url, poolclass=NullPool)
    row = {
        "scope": "anonymous",
        "key": "k",
        "operation": "op",
        "request_hash": "0" * 64,
        "expires_at": datetime.now(UTC),
    }
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(KEYS).values(**row))
        for broken in ({}, {"key": ""}, {"key": "k2", "request_hash": "short"}):
            with pytest.raises(exc.IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(sa.insert(KEYS).values(**{**row, **broken}))
    finally:
        await engine.dispose()

    await alembic_run("downgrade", url, "0002")
    assert "idempotency_keys" not in await tables()
    await alembic_run("upgrade", url, "head")
    assert "idempotency_keys" in await tables()
