"""The audit trail: one append-only audit_log row per successful mutation, written in
the mutation's own transaction, redacted, and readable by admins only.

Service calls run under ``acting_as(ACTOR)``; the GraphQL tests go over HTTP where
the app's authentication sets the actor (anonymous admin in development, or a token).
"""

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event, exc

from graph.ids import to_global_id
from graph.settings import AppSettings
from persistence.actor import Actor, acting_as
from persistence.audit import (
    OMITTED,
    REDACTED,
    AuditOperation,
    EntityType,
    audit_entry,
    json_safe,
    redact,
    scrub_text,
)
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.errors import Conflict, InvalidTransition, NotFound, StaleVersion, ValidationFailed
from persistence.repositories.audit import AuditRepository
from persistence.services import (
    BehavioralTestService,
    DiscrepancyService,
    ResultService,
    SessionService,
)
from persistence.services.tokens import TokenService
from tests.persistence.factories import (
    behavioral_test_input,
    discrepancy_input,
    result_input,
    session_input,
)
from tests.security.conftest import Issue, MakeApi

ACTOR = Actor(
    name="ci-bot",
    role=Role.WRITER,
    token_id=7,
    request_id="req-audit-1",
    client_address="203.0.113.9",
)
# Secrets planted in inputs: none of them may appear in audit_log.
SECRETS = (
    "hunter2-metadata",
    "s3cr3t-target",
    "url-pw-123",
    "qs-token-456",
    "NESTED-pass-789",
    "AKIA-api-key-000",
    "bearer-tok-abcdef",
    "cookie-val-xyz",
    "interaction-typed-pw",
    "files-db-pw",
)


def secret_session(request_id: str = "audited", **overrides: Any) -> dict[str, Any]:
    return session_input(
        request_id,
        source_metadata={"db": {"user": "app", "password": "hunter2-metadata"}},
        target_metadata={"note": "s3cr3t-target"},
        source_urls=["https://admin:url-pw-123@source.example/app?token=qs-token-456"],
        target_urls=["https://target.example/"],
        source_files=[{"path": ".env", "content": "DB_PASSWORD=files-db-pw"}],
        source_framework_details={
            "name": "flask",
            "config": {"nested": [{"Password": "NESTED-pass-789"}], "apiKey": "AKIA-api-key-000"},
        },
        session_metadata={
            "headers": {
                "Authorization": "Bearer bearer-tok-abcdef",
                "Set-Cookie": "cookie-val-xyz",
            },
            "team": "migration",
        },
        **overrides,
    )


async def audit_rows(db: DatabaseManager) -> list[dict[str, Any]]:
    """Every audit_log row in id order, with ``before``/``after`` parsed and their raw
    stored JSON text in ``raw``."""
    async with db.read_session() as s:
        result = await s.execute(
            sa.text(
                "SELECT id, actor_token_id, actor_name, actor_role, operation, entity_type, "
                "entity_id, CAST(before AS TEXT) AS before_text, "
                "CAST(after AS TEXT) AS after_text, request_id, client_address, created_at "
                "FROM audit_log ORDER BY id"
            )
        )
        rows = []
        for r in result.mappings().all():
            row = dict(r)
            before_text, after_text = row.pop("before_text"), row.pop("after_text")
            row["raw"] = f"{before_text} {after_text}"
            row["before"] = None if before_text is None else json.loads(before_text)
            row["after"] = None if after_text is None else json.loads(after_text)
            rows.append(row)
        return rows


async def audit_count(db: DatabaseManager) -> int:
    async with db.read_session() as s:
        return int(await s.scalar(sa.text("SELECT count(*) FROM audit_log")) or 0)


def assert_no_secrets(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert leaked == [], text


def assert_actor(row: dict[str, Any], actor: Actor = ACTOR) -> None:
    assert row["actor_name"] == actor.name
    assert row["actor_role"] == (None if actor.role is None else actor.role.value)
    assert row["actor_token_id"] == actor.token_id
    assert row["request_id"] == actor.request_id
    assert row["client_address"] == actor.client_address
    assert row["created_at"] is not None


async def discrepancy_ids(db: DatabaseManager, session_id: int) -> list[int]:
    async with db.read_session() as s:
        result = await s.scalars(
            sa.text("SELECT id FROM validation_discrepancies WHERE session_id = :s ORDER BY id"),
            {"s": session_id},
        )
        return [int(i) for i in result.all()]


@contextmanager
def failing_commit(db: DatabaseManager) -> Iterator[None]:
    """Every COMMIT on ``db`` fails after all of the transaction's statements ran (the
    audit INSERT included), as a lost write would."""

    def refuse(_conn: sa.Connection) -> None:
        raise RuntimeError("simulated commit failure")

    event.listen(db.engine.sync_engine, "commit", refuse)
    try:
        yield
    finally:
        event.remove(db.engine.sync_engine, "commit", refuse)


# ------------------------------------------------------------------ redaction (no DB)


def test_redact_replaces_secret_fields_and_keys_recursively() -> None:
    value = {
        "source_metadata": {"anything": 1},
        "interaction_log": [{"typed": "x"}],
        "source_screenshots": ["...base64..."],
        "target_urls": None,
        "details": {
            "a": [{"b": {"PASSWORD": "p", "user_password": "p", "apiKey": "k", "x-api-key": "k"}}],
            "Authorization": "Basic abc",
            "client_secret": {"deep": "s"},
            "refreshToken": "t",
            "Cookie": "c",
            "kept": "visible",
            "count": 3,
        },
    }
    out = redact(value)
    assert out["source_metadata"] == REDACTED
    assert out["interaction_log"] == REDACTED
    assert out["source_screenshots"] == OMITTED
    assert out["target_urls"] is None  # nothing to hide
    inner = out["details"]["a"][0]["b"]
    assert set(inner.values()) == {REDACTED}
    for key in ("Authorization", "client_secret", "refreshToken", "Cookie"):
        assert out["details"][key] == REDACTED
    assert out["details"]["kept"] == "visible"
    assert out["details"]["count"] == 3
    assert redact(out) == out  # idempotent


def test_scrub_text_cuts_inline_credentials() -> None:
    text = scrub_text(
        "GET https://bob:pa55w0rd@host/x?api_key=K123&page=2 with Bearer abcdefghijkl, "
        "password=opensesame"
    )
    for secret in ("pa55w0rd", "K123", "abcdefghijkl", "opensesame"):
        assert secret not in text
    assert "page=2" in text
    assert "https://[REDACTED]@host/x" in text
    assert scrub_text(text) == text


def test_deeply_nested_json_is_redacted_not_walked_forever() -> None:
    deep: Any = "password=leak"
    for _ in range(200):
        deep = {"level": deep}
    assert "leak" not in json.dumps(redact(deep))


def test_entry_is_cut_to_the_column_sizes() -> None:
    long_actor = Actor(name="n" * 500, role=None, request_id="r" * 500, client_address="c" * 500)
    values = audit_entry(
        AuditOperation.CREATE_SESSION, EntityType.SESSION, 1, actor=long_actor
    ).values()
    assert len(values["actor_name"]) == 100
    assert len(values["request_id"]) == 64
    assert len(values["client_address"]) == 64
    assert values["actor_role"] is None


# ----------------------------------------------------------------- services, per mutation


async def test_create_writes_one_redacted_entry_by_the_actor(db: DatabaseManager) -> None:
    with acting_as(ACTOR):
        outcome = await SessionService(db).create(secret_session())
    [row] = await audit_rows(db)
    assert row["operation"] == "createValidationSession"
    assert row["entity_type"] == "validation_sessions"
    assert row["entity_id"] == str(outcome.session.id)
    assert_actor(row)
    assert row["before"] is None
    after = row["after"]
    assert after["request_id"] == "audited"
    assert after["status"] == "pending"
    assert after["behavioral_timeout"] == 300
    for field in ("source_metadata", "target_metadata", "source_urls", "source_files"):
        assert after[field] == REDACTED
    assert after["source_framework_details"]["name"] == "flask"
    assert after["source_framework_details"]["config"]["nested"][0]["Password"] == REDACTED
    assert after["session_metadata"]["team"] == "migration"
    assert_no_secrets(row["raw"])


async def test_idempotent_replay_and_conflict_write_nothing(db: DatabaseManager) -> None:
    service = SessionService(db)
    first = await service.create(session_input("replayed"))
    again = await service.create(session_input("replayed"))
    assert first.created
    assert not again.created
    with pytest.raises(Conflict):
        await service.create(session_input("replayed", validation_scope="UI_LAYOUT"))
    rows = await audit_rows(db)
    assert [r["operation"] for r in rows] == ["createValidationSession"]


async def test_invalid_create_writes_nothing(db: DatabaseManager) -> None:
    with pytest.raises(ValidationFailed):
        await SessionService(db).create(session_input("bad", behavioral_timeout=-1))
    with pytest.raises(ValidationFailed):
        await SessionService(db).create(session_input("bad", source_technology="COBOL"))
    assert await audit_count(db) == 0


async def test_status_change_records_before_and_after(db: DatabaseManager) -> None:
    service = SessionService(db)
    sid = (await service.create(session_input("status"))).session.id
    assert sid is not None
    with acting_as(ACTOR):
        await service.update_status(sid, "processing")
        await service.update_status(sid, "processing")  # already there: no change, no entry
        with pytest.raises(InvalidTransition):
            await service.update_status(sid, "pending")
        with pytest.raises(NotFound):
            await service.update_status(sid + 1000, "processing")
    rows = await audit_rows(db)
    assert [r["operation"] for r in rows] == ["createValidationSession", "updateSessionStatus"]
    row = rows[1]
    assert (row["entity_type"], row["entity_id"]) == ("validation_sessions", str(sid))
    assert row["before"] == {"status": "pending"}
    assert row["after"] == {"status": "processing"}
    assert_actor(row)


async def test_record_result_logs_the_result_and_a_count(db: DatabaseManager) -> None:
    sid = (await SessionService(db).create(session_input("rec"))).session.id
    assert sid is not None
    with acting_as(ACTOR):
        stored = await ResultService(db).record(
            sid,
            result_input(result_metadata={"runner": {"token": "qs-token-456"}, "host": "ci"}),
            [discrepancy_input(i) for i in range(25)],
        )
    rows = await audit_rows(db)
    assert len(rows) == 2  # create + ONE entry for the result and its 25 discrepancies
    row = rows[1]
    assert row["operation"] == "recordValidationResult"
    assert (row["entity_type"], row["entity_id"]) == ("validation_results", str(stored.id))
    assert_actor(row)
    after = row["after"]
    assert after["discrepancy_count"] == 25
    assert after["session_id"] == sid
    assert after["fidelity_score"] == 0.9
    assert after["overall_status"] == "approved"
    assert after["result_metadata"] == {"runner": {"token": REDACTED}, "host": "ci"}
    assert_no_secrets(row["raw"])


async def test_failed_record_writes_nothing(db: DatabaseManager) -> None:
    service = SessionService(db)
    sid = (await service.create(session_input("gone"))).session.id
    assert sid is not None
    await service.delete(sid)
    before = await audit_count(db)
    with pytest.raises(NotFound):  # the session was deleted
        await ResultService(db).record(sid, result_input(), [discrepancy_input()])
    with pytest.raises(ValidationFailed):
        await ResultService(db).record(sid, result_input(fidelity_score=7))
    with pytest.raises(NotFound):
        await BehavioralTestService(db).record(sid, [behavioral_test_input()])
    assert await audit_count(db) == before == 2


async def test_commit_failure_leaves_neither_change_nor_entry(db: DatabaseManager) -> None:
    """The entry is in the mutation's transaction: when that transaction does not
    commit (here: COMMIT fails after every statement ran), there is no entry either."""
    with failing_commit(db), pytest.raises(RuntimeError, match="simulated"):
        await SessionService(db).create(session_input("lost"))
    assert await audit_count(db) == 0
    async with db.read_session() as s:
        assert await s.scalar(sa.text("SELECT count(*) FROM validation_sessions")) == 0


async def test_rolled_back_transaction_drops_an_appended_entry(db: DatabaseManager) -> None:
    async def work(session: Any) -> None:
        await AuditRepository(session).append(
            audit_entry(AuditOperation.DELETE_SESSION, EntityType.SESSION, 1)
        )
        raise NotFound("id", "changed my mind")

    with pytest.raises(NotFound):
        await db.run_write(work)
    assert await audit_count(db) == 0


async def test_behavioral_tests_log_count_and_ids(db: DatabaseManager) -> None:
    sid = (await SessionService(db).create(session_input("beh"))).session.id
    assert sid is not None
    tests = [
        behavioral_test_input(
            f"s{i}", interaction_log=[{"type": "fill", "password": "interaction-typed-pw"}]
        )
        for i in range(3)
    ]
    with acting_as(ACTOR):
        rows = await BehavioralTestService(db).record(sid, tests)
    entries = await audit_rows(db)
    assert len(entries) == 2
    row = entries[1]
    assert row["operation"] == "recordBehavioralTestResults"
    assert (row["entity_type"], row["entity_id"]) == ("behavioral_test_results", None)
    assert row["after"] == {"session_id": sid, "count": 3, "ids": [r.id for r in rows]}
    assert_actor(row)
    assert_no_secrets(row["raw"])


async def test_resolve_and_reopen_record_resolution_and_version(db: DatabaseManager) -> None:
    sid = (await SessionService(db).create(session_input("res"))).session.id
    assert sid is not None
    await ResultService(db).record(sid, result_input(), [discrepancy_input(i) for i in range(2)])
    d1, _ = await discrepancy_ids(db, sid)
    service = DiscrepancyService(db)
    with acting_as(ACTOR):
        await service.resolve(d1, "alice", "fixed upstream", expected_version=1)
        with pytest.raises(StaleVersion):
            await service.resolve(d1, "alice", expected_version=1)
        with pytest.raises(NotFound):
            await service.resolve(d1 + 1000, "alice")
        await service.reopen(d1, "bob", "regressed")
    rows = (await audit_rows(db))[2:]  # after create and record
    assert [r["operation"] for r in rows] == ["resolveDiscrepancy", "reopenDiscrepancy"]
    resolved, reopened = rows
    for row in rows:
        assert (row["entity_type"], row["entity_id"]) == ("validation_discrepancies", str(d1))
        assert_actor(row)
    assert resolved["before"] == {
        "is_resolved": False,
        "resolved_by": None,
        "resolution_notes": None,
        "resolved_at": None,
        "version": 1,
    }
    assert resolved["after"]["is_resolved"] is True
    assert resolved["after"]["resolved_by"] == "alice"
    assert resolved["after"]["resolution_notes"] == "fixed upstream"
    assert resolved["after"]["resolved_at"] is not None
    assert resolved["after"]["version"] == 2
    assert reopened["before"] == resolved["after"]
    assert reopened["after"] == {
        "is_resolved": False,
        "resolved_by": None,
        "resolution_notes": "reopened by bob: regressed",
        "resolved_at": None,
        "version": 3,
    }


async def test_resolve_many_writes_one_entry_per_call(db: DatabaseManager) -> None:
    sid = (await SessionService(db).create(session_input("many"))).session.id
    assert sid is not None
    await ResultService(db).record(sid, result_input(), [discrepancy_input(i) for i in range(3)])
    d1, d2, d3 = await discrepancy_ids(db, sid)
    service = DiscrepancyService(db)
    await service.resolve(d3, "carol")
    with acting_as(ACTOR):
        await service.resolve_many([d1, d2, d2, d3], "dave", "batch")
        await service.resolve_many([d1, d2], "dave")  # all already resolved: no change
        with pytest.raises(NotFound):
            await service.resolve_many([d1, d3 + 1000], "dave")
    rows = await audit_rows(db)
    assert [r["operation"] for r in rows][-2:] == ["resolveDiscrepancy", "resolveDiscrepancies"]
    row = rows[-1]
    assert (row["entity_type"], row["entity_id"]) == ("validation_discrepancies", None)
    assert row["before"] == {"ids": [d1, d2], "is_resolved": False}
    assert row["after"]["ids"] == [d1, d2]  # d3 kept carol's resolution
    assert row["after"]["count"] == 2
    assert row["after"]["requested_count"] == 3
    assert row["after"]["resolved_by"] == "dave"
    assert_actor(row)


async def test_delete_logs_the_session_and_what_the_cascade_removed(
    db: DatabaseManager,
) -> None:
    service = SessionService(db)
    sid = (await service.create(secret_session("doomed"))).session.id
    assert sid is not None
    await ResultService(db).record(sid, result_input(), [discrepancy_input(i) for i in range(4)])
    await BehavioralTestService(db).record(sid, [behavioral_test_input("a")])
    with acting_as(ACTOR):
        await service.delete(sid)
        with pytest.raises(NotFound):
            await service.delete(sid)
    rows = await audit_rows(db)
    assert len(rows) == 4  # create, record, tests, delete: the log outlives the session
    row = rows[-1]
    assert row["operation"] == "deleteSession"
    assert (row["entity_type"], row["entity_id"]) == ("validation_sessions", str(sid))
    assert_actor(row)
    assert row["after"] is None
    assert row["before"]["request_id"] == "doomed"
    assert row["before"]["source_metadata"] == REDACTED
    assert row["before"]["child_counts"] == {
        "results": 1,
        "discrepancies": 4,
        "behavioral_tests": 1,
    }
    assert_no_secrets(" ".join(r["raw"] for r in rows))


async def test_without_a_request_the_actor_is_system(db: DatabaseManager) -> None:
    await SessionService(db).create(session_input("cli"))
    [row] = await audit_rows(db)
    assert row["actor_name"] == "system"
    assert row["actor_role"] == "admin"
    assert row["actor_token_id"] is None
    assert row["request_id"] is None


async def test_token_create_and_revoke_are_audited_without_the_secret(
    db: DatabaseManager,
) -> None:
    """Issuing and revoking a token change who may do what: each writes one entry (in
    its transaction), showing name, role and times but never the token, its hash or
    prefix; a refused create, a second revoke and recording a use write none."""
    tokens = TokenService(db)
    with acting_as(ACTOR):
        issued = await tokens.create("deploy-bot", Role.WRITER, timedelta(days=1))
        with pytest.raises(Conflict):
            await tokens.create("deploy-bot", Role.ADMIN)
        await tokens.record_use(await tokens.authenticate(issued.token))
        revoked = await tokens.revoke("deploy-bot")
        assert (await tokens.revoke("deploy-bot")).already_revoked
    created, revoke = await audit_rows(db)
    for row in (created, revoke):
        assert_actor(row)
        assert row["entity_type"] == "api_tokens"
        assert row["entity_id"] == str(issued.row.id)
        for secret in (issued.token, issued.row.token_hash, issued.row.token_prefix):
            assert secret not in row["raw"]
    assert created["operation"] == "createApiToken"
    assert created["before"] is None
    assert created["after"]["name"] == "deploy-bot"
    assert created["after"]["role"] == "writer"
    assert created["after"]["revoked_at"] is None
    assert issued.row.expires_at is not None
    assert created["after"]["expires_at"] == json_safe(issued.row.expires_at)
    assert revoke["operation"] == "revokeApiToken"
    assert revoke["before"] == {"revoked_at": None}
    assert revoke["after"]["revoked_at"] is not None
    assert revoked.row.revoked_at is not None


async def test_concurrent_changes_keep_an_exact_chain_of_before_and_after(
    db: DatabaseManager,
) -> None:
    """Racing writers: each entry's ``before`` is exactly what its change replaced."""
    sid = (await SessionService(db).create(session_input("race"))).session.id
    assert sid is not None
    await ResultService(db).record(sid, result_input(), [discrepancy_input()])
    [did] = await discrepancy_ids(db, sid)
    service = DiscrepancyService(db)
    await asyncio.gather(*(service.resolve(did, f"racer-{i}") for i in range(4)))
    await asyncio.gather(*(SessionService(db).update_status(sid, "processing") for _ in range(4)))

    rows = await audit_rows(db)
    resolves = [r for r in rows if r["operation"] == "resolveDiscrepancy"]
    chain = sorted((r["before"]["version"], r["after"]["version"]) for r in resolves)
    assert chain == [(1, 2), (2, 3), (3, 4), (4, 5)]
    assert sorted(r["before"]["is_resolved"] for r in resolves) == [False, True, True, True]
    statuses = [r for r in rows if r["operation"] == "updateSessionStatus"]
    assert [(r["before"], r["after"]) for r in statuses] == [
        ({"status": "pending"}, {"status": "processing"})
    ]


# ------------------------------------------------------------ append-only (PostgreSQL)


@pytest.mark.postgres_only
async def test_update_and_delete_need_the_maintenance_setting(db: DatabaseManager) -> None:
    await SessionService(db).create(session_input("kept"))
    for statement in (
        "UPDATE audit_log SET actor_name = 'someone else'",
        "DELETE FROM audit_log",
    ):
        with pytest.raises(exc.DBAPIError, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql(statement)
    # the setting is transaction-local: it never leaks to the next transaction
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL migval.audit_maintenance = 'on'")
        await conn.exec_driver_sql("UPDATE audit_log SET client_address = 'maintained'")
    with pytest.raises(exc.DBAPIError, match="append-only"):
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM audit_log")
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL migval.audit_maintenance = 'on'")
        deleted = await conn.exec_driver_sql("DELETE FROM audit_log")
        assert deleted.rowcount == 1


# --------------------------------------------------------------- GraphQL over HTTP

CREATE = """
mutation($input: CreateValidationSessionInput!) {
  createValidationSession(input: $input) { created session { id } errors { code } }
}
"""
STATUS = """
mutation($input: UpdateSessionStatusInput!) {
  updateSessionStatus(input: $input) { session { status } errors { code } }
}
"""
AUDIT_LOG = """
query($first: Int!, $after: String, $filter: AuditLogFilterInput) {
  auditLog(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    nodes {
      databaseId operation entityType entityId entityGlobalId actorName actorRole
      actorTokenId before after requestId clientAddress createdAt
    }
  }
}
"""


def create_input(request_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "sourceTechnology": "PYTHON_FLASK",
        "targetTechnology": "JAVA_SPRING",
        "validationScope": "FULL_SYSTEM",
        "sourceInputType": "CODE_FILES",
        "targetInputType": "CODE_FILES",
        **extra,
    }


async def test_http_mutations_are_audited_with_request_and_token(
    db: DatabaseManager, make_api: MakeApi, issue: Issue
) -> None:
    token = await issue(Role.WRITER, "deployer")
    api = make_api(token=token)
    body = await api.gql(
        CREATE,
        {"input": create_input("http-1", sourceMetadata={"password": "hunter2-metadata"})},
        headers={"X-Request-ID": "trace-42"},
    )
    assert body["data"]["createValidationSession"]["created"] is True
    session_gid = body["data"]["createValidationSession"]["session"]["id"]
    # a failing mutation (an input error) writes nothing
    bad = await api.gql(STATUS, {"input": {"sessionId": session_gid, "status": "COMPLETED"}})
    assert bad["data"]["updateSessionStatus"]["errors"] == [{"code": "INVALID_TRANSITION"}]
    # the replay writes nothing
    again = await api.gql(
        CREATE, {"input": create_input("http-1", sourceMetadata={"password": "hunter2-metadata"})}
    )
    assert again["data"]["createValidationSession"]["created"] is False

    # (entries about tokens, if token administration is audited too, are not counted)
    [row] = [r for r in await audit_rows(db) if r["entity_type"] == "validation_sessions"]
    assert row["operation"] == "createValidationSession"
    assert to_global_id("ValidationSession", int(row["entity_id"])) == session_gid
    assert (row["actor_name"], row["actor_role"]) == ("deployer", "writer")
    assert row["actor_token_id"] is not None
    assert row["request_id"] == "trace-42"
    assert row["client_address"] == "127.0.0.1"  # httpx ASGITransport's client
    assert_no_secrets(row["raw"])


async def test_audit_log_query_paginates_newest_first(
    db: DatabaseManager, make_api: MakeApi
) -> None:
    api = make_api()  # development: anonymous admin
    for i in range(3):
        body = await api.gql(CREATE, {"input": create_input(f"page-{i}")})
        assert body["data"]["createValidationSession"]["errors"] == []
    gid = body["data"]["createValidationSession"]["session"]["id"]
    await api.gql(STATUS, {"input": {"sessionId": gid, "status": "PROCESSING"}})

    first = (await api.gql(AUDIT_LOG, {"first": 3}))["data"]["auditLog"]
    assert first["totalCount"] == 4
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    newest = first["nodes"][0]
    assert newest["operation"] == "updateSessionStatus"
    assert newest["entityGlobalId"] == gid
    assert (newest["before"], newest["after"]) == ({"status": "pending"}, {"status": "processing"})
    assert (newest["actorName"], newest["actorRole"], newest["actorTokenId"]) == (
        "anonymous",
        "admin",
        None,
    )
    rest = (await api.gql(AUDIT_LOG, {"first": 3, "after": first["pageInfo"]["endCursor"]}))[
        "data"
    ]["auditLog"]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert rest["pageInfo"]["hasPreviousPage"] is True
    seen = [n["databaseId"] for n in first["nodes"] + rest["nodes"]]
    assert seen == sorted(seen, key=int, reverse=True)
    assert len(set(seen)) == 4
    assert [n["after"]["request_id"] for n in first["nodes"][1:] + rest["nodes"]] == [
        "page-2",
        "page-1",
        "page-0",
    ]

    by_entity = (await api.gql(AUDIT_LOG, {"first": 10, "filter": {"entity": gid}}))["data"][
        "auditLog"
    ]
    assert [n["operation"] for n in by_entity["nodes"]] == [
        "updateSessionStatus",
        "createValidationSession",
    ]
    only_creates = {"operation": ["createValidationSession"]}
    by_operation = (await api.gql(AUDIT_LOG, {"first": 10, "filter": only_creates}))["data"][
        "auditLog"
    ]
    assert by_operation["totalCount"] == 3

    too_many = await api.gql(AUDIT_LOG, {"first": 101})
    assert too_many["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    bad_cursor = await api.gql(AUDIT_LOG, {"first": 1, "after": "nonsense"})
    assert bad_cursor["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_audit_log_is_admin_only(
    db: DatabaseManager, make_api: MakeApi, issue: Issue
) -> None:
    await SessionService(db).create(session_input("hidden"))
    query = (
        '{ auditLog(first: 5, filter: {entityType: "validation_sessions"}) '
        "{ totalCount nodes { operation } } }"
    )
    for role in (Role.VIEWER, Role.WRITER):
        body = await make_api(token=await issue(role)).gql(query)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    viewer_anonymous = AppSettings(anonymous_role=Role.VIEWER)
    body = await make_api(viewer_anonymous).gql(query)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    admin = await make_api(token=await issue(Role.ADMIN, "root")).gql(query)
    assert admin["data"]["auditLog"] == {
        "totalCount": 1,
        "nodes": [{"operation": "createValidationSession"}],
    }
