"""Write side over HTTP: payload errors name the input field, nothing is half-written,
idempotency, status transitions, optimistic concurrency and cascading delete."""

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from persistence.database import DatabaseManager
from tests.graph.conftest import Gql, Seeder, data_of, gid, only_error

SESSION_FIELDS = "id databaseId requestId status targetTechnology behavioralTimeout sourceUrls"

CREATE = f"""
mutation($input: CreateValidationSessionInput!) {{
  createValidationSession(input: $input) {{
    created
    session {{ {SESSION_FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""

UPDATE_STATUS = """
mutation($input: UpdateSessionStatusInput!) {
  updateSessionStatus(input: $input) {
    session { id status }
    errors { field code message }
  }
}
"""

RECORD = """
mutation($input: RecordValidationResultInput!) {
  recordValidationResult(input: $input) {
    result {
      id databaseId fidelityScore resultType
      session { requestId }
      discrepancies { databaseId confidence validationContext isResolved version }
    }
    errors { field code message }
  }
}
"""

RECORD_TESTS = """
mutation($input: RecordBehavioralTestResultsInput!) {
  recordBehavioralTestResults(input: $input) {
    tests { id databaseId scenarioName executionStatus sourceLoadTime session { requestId } }
    errors { field code message }
  }
}
"""

DISCREPANCY_FIELDS = "id version isResolved resolvedBy resolvedAt resolutionNotes"

RESOLVE = f"""
mutation($input: ResolveDiscrepancyInput!) {{
  resolveDiscrepancy(input: $input) {{
    discrepancy {{ {DISCREPANCY_FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""

REOPEN = f"""
mutation($input: ReopenDiscrepancyInput!) {{
  reopenDiscrepancy(input: $input) {{
    discrepancy {{ {DISCREPANCY_FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""

RESOLVE_MANY = f"""
mutation($input: ResolveDiscrepanciesInput!) {{
  resolveDiscrepancies(input: $input) {{
    discrepancies {{ {DISCREPANCY_FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""

DELETE = """
mutation($input: DeleteSessionInput!) {
  deleteSession(input: $input) { deletedSessionId errors { field code message } }
}
"""

NODE = f"""
query($id: ID!) {{
  node(id: $id) {{ id ... on Discrepancy {{ {DISCREPANCY_FIELDS} }} }}
}}
"""


def create_input(request_id: str = "req-1", **overrides: Any) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "sourceTechnology": "PYTHON_FLASK",
        "targetTechnology": "JAVA_SPRING",
        "validationScope": "FULL_SYSTEM",
        "sourceInputType": "CODE_FILES",
        "targetInputType": "CODE_FILES",
        **overrides,
    }


def result_input(session: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return {
        **session,
        "overallStatus": "APPROVED_WITH_WARNINGS",
        "fidelityScore": 0.85,
        "summary": "mostly equivalent",
        **overrides,
    }


def discrepancy_input(i: int, **overrides: Any) -> dict[str, Any]:
    return {
        "discrepancyType": "missing_field",
        "severity": ("CRITICAL", "WARNING", "INFO")[i % 3],
        "description": f"field {i} differs",
        **overrides,
    }


def scenario_input(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "scenarioName": name,
        "sourceUrl": "http://source.example/",
        "targetUrl": "http://target.example/",
        "executionStatus": "PASSED",
        **overrides,
    }


def payload_error(payload: dict[str, Any]) -> dict[str, Any]:
    errors = payload["errors"]
    assert len(errors) == 1, payload
    error = errors[0]
    assert isinstance(error, dict)
    assert error["message"], error
    return error


async def row_counts(db: DatabaseManager) -> dict[str, int]:
    tables = (
        "validation_sessions",
        "validation_results",
        "validation_discrepancies",
        "behavioral_test_results",
    )
    async with db.read_session() as s:
        return {t: int(await s.scalar(sa.text(f"SELECT count(*) FROM {t}")) or 0) for t in tables}


async def create(gql: Gql, **variables: Any) -> dict[str, Any]:
    body = await gql(CREATE, {"input": create_input(**variables)})
    payload = data_of(body)["createValidationSession"]
    assert isinstance(payload, dict)
    return payload


# ---------------------------------------------------------------- createSession


async def test_create_session_is_idempotent_on_request_id(gql: Gql, db: DatabaseManager) -> None:
    extra = {
        "sourceUrls": ["http://a.example/", {"nested": [1, 2.5, None]}],
        "behavioralTimeout": 60,
    }
    first = await create(gql, request_id="idem", **extra)
    assert first["errors"] == []
    assert first["created"] is True
    session = first["session"]
    assert session["requestId"] == "idem"
    assert session["status"] == "PENDING"
    assert session["behavioralTimeout"] == 60
    assert session["sourceUrls"] == extra["sourceUrls"]
    assert session["id"] == gid("ValidationSession", session["databaseId"])

    again = await create(gql, request_id="idem", **extra)
    assert again == {**first, "created": False}

    conflict = await create(gql, request_id="idem", **{**extra, "targetTechnology": "PHP_LARAVEL"})
    assert conflict["session"] is None
    assert conflict["created"] is False
    error = payload_error(conflict)
    assert error["code"] == "CONFLICT"
    assert error["field"] == "input.requestId"
    # the default is part of the content: omitting behavioralTimeout (300) differs too
    without_timeout = await create(gql, request_id="idem", sourceUrls=extra["sourceUrls"])
    assert payload_error(without_timeout)["code"] == "CONFLICT"

    counts = await row_counts(db)
    assert counts["validation_sessions"] == 1
    stored = data_of(await gql('{ session(requestId: "idem") { targetTechnology } }'))
    assert stored == {"session": {"targetTechnology": "JAVA_SPRING"}}

    # default behavioralTimeout: 300
    other = await create(gql, request_id="other")
    assert other["session"]["behavioralTimeout"] == 300


async def test_create_session_unknown_enum_value_is_a_graphql_error(
    gql_raw: Any, db: DatabaseManager
) -> None:
    response = await gql_raw(
        CREATE, {"input": create_input("enum", sourceTechnology="COBOL_MAINFRAME")}
    )
    assert response.status_code in (200, 400)
    body = response.json()
    assert body["data"] is None
    error = only_error(body)
    assert "COBOL_MAINFRAME" in error["message"]
    assert "TechnologyType" in error["message"]
    assert (await row_counts(db))["validation_sessions"] == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"requestId": "r" * 256}, "input.requestId"),
        ({"sourceTechnologyVersion": "v" * 101}, "input.sourceTechnologyVersion"),
        ({"behavioralTimeout": 0}, "input.behavioralTimeout"),
        ({"executionTime": -1.0}, "input.executionTime"),
        ({"requestId": "nul\x00byte"}, "input.requestId"),
        ({"sessionMetadata": {"text": "nul\x00"}}, "input.sessionMetadata"),
    ],
)
async def test_create_session_invalid_values(
    gql: Gql, db: DatabaseManager, overrides: dict[str, Any], field: str
) -> None:
    payload = await create(gql, **{"request_id": "ok", **_snake_request_id(overrides)})
    assert payload["session"] is None
    assert payload["created"] is False
    error = payload_error(payload)
    assert error["code"] == "INVALID"
    assert error["field"] == field
    assert (await row_counts(db))["validation_sessions"] == 0


def _snake_request_id(overrides: dict[str, Any]) -> dict[str, Any]:
    # create() takes request_id as a keyword; the other keys go into the input as is
    out = dict(overrides)
    if "requestId" in out:
        out["request_id"] = out.pop("requestId")
    return out


async def test_create_session_accepts_a_request_id_of_255(gql: Gql) -> None:
    payload = await create(gql, request_id="r" * 255)
    assert payload["errors"] == []
    assert payload["created"] is True


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"behavioralTimeout": "abc"}, "Int"),
        ({"executionTime": "abc"}, "Float"),
        ({"behavioralTimeout": 2**40}, "Int"),
        ({"requestId": None}, "requestId"),
        ({"requestId": 5}, "String"),
    ],
)
async def test_create_session_wrong_variable_types(
    gql_raw: Any, db: DatabaseManager, overrides: dict[str, Any], fragment: str
) -> None:
    response = await gql_raw(CREATE, {"input": {**create_input("typed"), **overrides}})
    assert response.status_code in (200, 400)
    body = response.json()
    assert body["data"] is None
    assert fragment in only_error(body)["message"]
    assert (await row_counts(db))["validation_sessions"] == 0


# ---------------------------------------------------------- updateSessionStatus


async def _status(gql: Gql, **ref: str | None) -> dict[str, Any]:
    status = ref.pop("status")
    body = await gql(UPDATE_STATUS, {"input": {**ref, "status": status}})
    payload = data_of(body)["updateSessionStatus"]
    assert isinstance(payload, dict)
    return payload


async def test_update_session_status_transitions(gql: Gql, seed: Seeder) -> None:
    s = await seed.session("life")
    ok = await _status(gql, sessionId=s.gid, status="PROCESSING")
    assert ok == {"session": {"id": s.gid, "status": "PROCESSING"}, "errors": []}
    # by requestId
    ok = await _status(gql, requestId="life", status="COMPLETED")
    assert ok == {"session": {"id": s.gid, "status": "COMPLETED"}, "errors": []}
    # repeating the current status is a harmless retry
    same = await _status(gql, requestId="life", status="COMPLETED")
    assert same == {"session": {"id": s.gid, "status": "COMPLETED"}, "errors": []}
    # terminal states have no way out
    for target in ("PROCESSING", "PENDING", "FAILED", "CANCELLED"):
        refused = await _status(gql, sessionId=s.gid, status=target)
        assert refused["session"] is None
        error = payload_error(refused)
        assert error["code"] == "INVALID_TRANSITION", target
        assert error["field"] == "input.status"
        assert "completed" in error["message"]

    fresh = await seed.session("fresh")
    for target in ("COMPLETED", "FAILED"):  # PENDING may not skip PROCESSING
        refused = await _status(gql, sessionId=fresh.gid, status=target)
        assert payload_error(refused)["code"] == "INVALID_TRANSITION"
    assert (await _status(gql, requestId="fresh", status="PROCESSING"))["errors"] == []
    back = await _status(gql, requestId="fresh", status="PENDING")
    assert payload_error(back)["code"] == "INVALID_TRANSITION"
    assert (await _status(gql, requestId="fresh", status="CANCELLED"))["errors"] == []

    query = "query($r: String!) { session(requestId: $r) { status } }"
    assert data_of(await gql(query, {"r": "life"}))["session"]["status"] == "COMPLETED"
    assert data_of(await gql(query, {"r": "fresh"}))["session"]["status"] == "CANCELLED"


async def test_update_session_status_references(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("ref", n_discrepancies=1, n_tests=0)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"sessionId": s.gid, "requestId": "ref"}, "INVALID", "input.sessionId"),
        ({}, "INVALID", "input.sessionId"),
        ({"requestId": "nope"}, "NOT_FOUND", "input.requestId"),
        ({"sessionId": gid("Discrepancy", s.discrepancy_ids[0])}, "INVALID", "input.sessionId"),
        ({"sessionId": "not-an-id"}, "INVALID", "input.sessionId"),
    ]
    for ref, code, field in cases:
        payload = await _status(gql, **ref, status="PROCESSING")
        assert payload["session"] is None, ref
        error = payload_error(payload)
        assert (error["code"], error["field"]) == (code, field), ref
    status = data_of(await gql('{ session(requestId: "ref") { status } }'))["session"]
    assert status == {"status": "PENDING"}


async def test_unknown_session_id_names_the_session_id_field(gql: Gql) -> None:
    missing = gid("ValidationSession", 999_999)
    update = await _status(gql, sessionId=missing, status="PROCESSING")
    error = payload_error(update)
    assert error["code"] == "NOT_FOUND"
    assert error["field"] == "input.sessionId"
    body = await gql(DELETE, {"input": {"sessionId": missing}})
    error = payload_error(data_of(body)["deleteSession"])
    assert error["code"] == "NOT_FOUND"
    assert error["field"] == "input.sessionId"


# ------------------------------------------------------- recordValidationResult


async def test_record_validation_result_with_1000_discrepancies(
    gql: Gql, seed: Seeder, db: DatabaseManager
) -> None:
    await seed.session("big")
    items = [discrepancy_input(i) for i in range(1000)]
    items[0] = {**items[0], "confidence": 0.25, "validationContext": {"path": ["a", 1], "ok": True}}
    body = await gql(RECORD, {"input": result_input({"requestId": "big"}, discrepancies=items)})
    payload = data_of(body)["recordValidationResult"]
    assert payload["errors"] == []
    result = payload["result"]
    assert result["fidelityScore"] == 0.85
    assert result["resultType"] == "STATIC"
    assert result["session"] == {"requestId": "big"}
    discrepancies = result["discrepancies"]
    assert len(discrepancies) == 1000
    ids = [d["databaseId"] for d in discrepancies]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert discrepancies[0]["confidence"] == 0.25
    assert discrepancies[0]["validationContext"] == {"path": ["a", 1], "ok": True}
    assert discrepancies[1]["confidence"] == 1.0  # default
    assert discrepancies[1]["validationContext"] is None
    assert {(d["isResolved"], d["version"]) for d in discrepancies} == {(False, 1)}

    # read back through the result node and the session's connection
    query = """
    query($id: ID!) {
      node(id: $id) { ... on ValidationResult { discrepancies { id } } }
      session(requestId: "big") {
        discrepancies(first: 100, filter: {severity: [CRITICAL]}) { totalCount }
        all: discrepancies(first: 1) { totalCount pageInfo { hasNextPage } }
      }
    }
    """
    data = data_of(await gql(query, {"id": result["id"]}))
    assert len(data["node"]["discrepancies"]) == 1000
    assert data["session"]["discrepancies"]["totalCount"] == 334
    assert data["session"]["all"] == {"totalCount": 1000, "pageInfo": {"hasNextPage": True}}
    assert (await row_counts(db))["validation_discrepancies"] == 1000


async def test_record_validation_result_over_10000_discrepancies_is_refused(
    gql: Gql, seed: Seeder, db: DatabaseManager
) -> None:
    await seed.session("huge")
    item = {"discrepancyType": "t", "severity": "INFO", "description": "d"}
    body = await gql(
        RECORD, {"input": result_input({"requestId": "huge"}, discrepancies=[item] * 10_001)}
    )
    payload = data_of(body)["recordValidationResult"]
    assert payload["result"] is None
    error = payload_error(payload)
    assert (error["code"], error["field"]) == ("INVALID", "input.discrepancies")
    assert "10000" in error["message"].replace(",", "").replace("_", "")
    counts = await row_counts(db)
    assert (counts["validation_results"], counts["validation_discrepancies"]) == (0, 0)


async def test_record_validation_result_by_session_id_and_result_type(
    gql: Gql, seed: Seeder
) -> None:
    s = await seed.session("typed")
    body = await gql(
        RECORD, {"input": result_input({"sessionId": s.gid}, resultType="HYBRID", fidelityScore=1)}
    )
    payload = data_of(body)["recordValidationResult"]
    assert payload["errors"] == []
    assert payload["result"]["resultType"] == "HYBRID"
    assert payload["result"]["fidelityScore"] == 1.0
    assert payload["result"]["discrepancies"] == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"fidelityScore": 1.5}, "input.fidelityScore"),
        ({"fidelityScore": -0.01}, "input.fidelityScore"),
        ({"executionTime": -3.0}, "input.executionTime"),
        (
            {
                "discrepancies": [
                    *(discrepancy_input(i) for i in range(7)),
                    discrepancy_input(7, confidence=1.5),
                    discrepancy_input(8),
                ]
            },
            "input.discrepancies[7].confidence",
        ),
        (
            {
                "discrepancies": [
                    discrepancy_input(0),
                    discrepancy_input(1, discrepancyType="x" * 101),
                ]
            },
            "input.discrepancies[1].discrepancyType",
        ),
        (
            {"discrepancies": [discrepancy_input(0, componentType="c" * 51)]},
            "input.discrepancies[0].componentType",
        ),
    ],
)
async def test_record_validation_result_invalid_input_writes_nothing(
    gql: Gql, seed: Seeder, db: DatabaseManager, overrides: dict[str, Any], field: str
) -> None:
    await seed.session("strict")
    before = await row_counts(db)
    body = await gql(RECORD, {"input": result_input({"requestId": "strict"}, **overrides)})
    payload = data_of(body)["recordValidationResult"]
    assert payload["result"] is None
    error = payload_error(payload)
    assert error["code"] == "INVALID"
    assert error["field"] == field
    assert await row_counts(db) == before
    query = """
    { session(requestId: "strict") {
        results { id } latestResult { id } discrepancies { totalCount }
    } }
    """
    session = data_of(await gql(query))["session"]
    assert session == {"results": [], "latestResult": None, "discrepancies": {"totalCount": 0}}


async def test_record_validation_result_unknown_session(
    gql: Gql, seed: Seeder, db: DatabaseManager
) -> None:
    s = await seed.full("known", n_discrepancies=1, n_tests=0)
    before = await row_counts(db)
    cases = [
        ({"requestId": "unknown"}, "NOT_FOUND", "input.requestId"),
        ({"sessionId": gid("ValidationSession", 999_999)}, "NOT_FOUND", "input.sessionId"),
        ({"sessionId": gid("ValidationResult", s.result_ids[0])}, "INVALID", "input.sessionId"),
        ({"sessionId": s.gid, "requestId": "known"}, "INVALID", "input.sessionId"),
        ({}, "INVALID", "input.sessionId"),
    ]
    for ref, code, field in cases:
        body = await gql(RECORD, {"input": result_input(ref, discrepancies=[discrepancy_input(0)])})
        payload = data_of(body)["recordValidationResult"]
        assert payload["result"] is None
        error = payload_error(payload)
        assert (error["code"], error["field"]) == (code, field), ref
    assert await row_counts(db) == before


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("abc", "Float"), (None, "fidelityScore"), ([0.5], "Float")],
)
async def test_record_validation_result_wrong_variable_types(
    gql_raw: Any, seed: Seeder, db: DatabaseManager, value: Any, fragment: str
) -> None:
    await seed.session("vars")
    response = await gql_raw(
        RECORD, {"input": result_input({"requestId": "vars"}, fidelityScore=value)}
    )
    assert response.status_code in (200, 400)
    body = response.json()
    assert body["data"] is None
    assert fragment in only_error(body)["message"]
    assert (await row_counts(db))["validation_results"] == 0


# -------------------------------------------------- recordBehavioralTestResults


async def test_record_behavioral_test_results(gql: Gql, seed: Seeder, db: DatabaseManager) -> None:
    s = await seed.session("bt")
    tests = [
        scenario_input("login", sourceLoadTime=1.25),
        scenario_input("checkout", executionStatus="FAILED", sourceResult={"total": 12}),
    ]
    body = await gql(RECORD_TESTS, {"input": {"requestId": "bt", "tests": tests}})
    payload = data_of(body)["recordBehavioralTestResults"]
    assert payload["errors"] == []
    stored = payload["tests"]
    assert [(t["scenarioName"], t["executionStatus"]) for t in stored] == [
        ("login", "PASSED"),
        ("checkout", "FAILED"),
    ]
    assert stored[0]["sourceLoadTime"] == 1.25
    assert stored[0]["databaseId"] < stored[1]["databaseId"]
    assert {t["session"]["requestId"] for t in stored} == {"bt"}
    listed = data_of(
        await gql('{ session(requestId: "bt") { behavioralTests { id sourceResult } } }')
    )["session"]["behavioralTests"]
    assert [t["id"] for t in listed] == [t["id"] for t in stored]
    assert listed[1]["sourceResult"] == {"total": 12}

    before = await row_counts(db)
    bad = [scenario_input("a"), scenario_input("b", sourceLoadTime=-1.0)]
    body = await gql(RECORD_TESTS, {"input": {"sessionId": s.gid, "tests": bad}})
    payload = data_of(body)["recordBehavioralTestResults"]
    assert payload["tests"] == []
    error = payload_error(payload)
    assert (error["code"], error["field"]) == ("INVALID", "input.tests[1].sourceLoadTime")
    body = await gql(RECORD_TESTS, {"input": {"sessionId": s.gid, "tests": []}})
    error = payload_error(data_of(body)["recordBehavioralTestResults"])
    assert (error["code"], error["field"]) == ("INVALID", "input.tests")
    long_name = [scenario_input("n" * 256)]
    body = await gql(RECORD_TESTS, {"input": {"sessionId": s.gid, "tests": long_name}})
    error = payload_error(data_of(body)["recordBehavioralTestResults"])
    assert (error["code"], error["field"]) == ("INVALID", "input.tests[0].scenarioName")
    body = await gql(RECORD_TESTS, {"input": {"requestId": "nobody", "tests": tests}})
    error = payload_error(data_of(body)["recordBehavioralTestResults"])
    assert (error["code"], error["field"]) == ("NOT_FOUND", "input.requestId")
    assert await row_counts(db) == before


# ------------------------------------------------- resolve / reopen discrepancy


async def _node(gql: Gql, global_id: str) -> dict[str, Any] | None:
    node = data_of(await gql(NODE, {"id": global_id}))["node"]
    assert node is None or isinstance(node, dict)
    return node


async def test_resolve_and_reopen_with_expected_version(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("res", n_discrepancies=2, n_tests=0)
    did = gid("Discrepancy", s.discrepancy_ids[0])
    original = await _node(gql, did)
    assert original is not None
    assert (original["version"], original["isResolved"]) == (1, False)

    body = await gql(
        RESOLVE,
        {"input": {"id": did, "resolvedBy": "alice", "notes": "fixed", "expectedVersion": 1}},
    )
    payload = data_of(body)["resolveDiscrepancy"]
    assert payload["errors"] == []
    resolved = payload["discrepancy"]
    assert resolved["id"] == did
    assert resolved["version"] == 2
    assert resolved["isResolved"] is True
    assert resolved["resolvedBy"] == "alice"
    assert resolved["resolutionNotes"] == "fixed"
    assert resolved["resolvedAt"] is not None
    assert await _node(gql, did) == resolved

    # a writer still holding version 1 loses, and changes nothing
    stale = await gql(
        RESOLVE, {"input": {"id": did, "resolvedBy": "mallory", "expectedVersion": 1}}
    )
    payload = data_of(stale)["resolveDiscrepancy"]
    assert payload["discrepancy"] is None
    error = payload_error(payload)
    assert (error["code"], error["field"]) == ("STALE_VERSION", "input.expectedVersion")
    assert "version 2" in error["message"]
    assert await _node(gql, did) == resolved

    body = await gql(
        REOPEN,
        {"input": {"id": did, "reopenedBy": "bob", "notes": "regressed", "expectedVersion": 2}},
    )
    payload = data_of(body)["reopenDiscrepancy"]
    assert payload["errors"] == []
    reopened = payload["discrepancy"]
    assert reopened["version"] == 3
    assert reopened["isResolved"] is False
    assert reopened["resolvedBy"] is None
    assert reopened["resolvedAt"] is None
    assert reopened["resolutionNotes"] == "reopened by bob: regressed"

    stale = await gql(REOPEN, {"input": {"id": did, "reopenedBy": "bob", "expectedVersion": 2}})
    error = payload_error(data_of(stale)["reopenDiscrepancy"])
    assert error["code"] == "STALE_VERSION"
    assert await _node(gql, did) == reopened

    # without expectedVersion: last writer wins, version still bumps
    body = await gql(RESOLVE, {"input": {"id": did, "resolvedBy": "carol"}})
    assert data_of(body)["resolveDiscrepancy"]["discrepancy"]["version"] == 4
    # the other discrepancy never moved
    untouched = await _node(gql, gid("Discrepancy", s.discrepancy_ids[1]))
    assert untouched is not None
    assert (untouched["version"], untouched["isResolved"]) == (1, False)


async def test_resolve_discrepancy_errors(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("err", n_discrepancies=1, n_tests=0)
    did = gid("Discrepancy", s.discrepancy_ids[0])
    cases = [
        ({"id": gid("Discrepancy", 999_999), "resolvedBy": "a"}, "NOT_FOUND", "input.id"),
        (
            {"id": gid("Discrepancy", 999_999), "resolvedBy": "a", "expectedVersion": 1},
            "NOT_FOUND",
            "input.id",
        ),
        ({"id": s.gid, "resolvedBy": "a"}, "INVALID", "input.id"),
        ({"id": "garbage", "resolvedBy": "a"}, "INVALID", "input.id"),
        ({"id": did, "resolvedBy": "   "}, "INVALID", "input.resolvedBy"),
        ({"id": did, "resolvedBy": "x" * 256}, "INVALID", "input.resolvedBy"),
        ({"id": did, "resolvedBy": "a", "expectedVersion": 0}, "INVALID", "input.expectedVersion"),
    ]
    for variables, code, field in cases:
        payload = data_of(await gql(RESOLVE, {"input": variables}))["resolveDiscrepancy"]
        assert payload["discrepancy"] is None, variables
        error = payload_error(payload)
        assert (error["code"], error["field"]) == (code, field), variables
    node = await _node(gql, did)
    assert node is not None
    assert (node["version"], node["isResolved"]) == (1, False)


async def test_reopen_with_an_empty_name_names_reopened_by(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("reo", n_discrepancies=1, n_tests=0)
    did = gid("Discrepancy", s.discrepancy_ids[0])
    payload = data_of(await gql(REOPEN, {"input": {"id": did, "reopenedBy": " "}}))
    error = payload_error(payload["reopenDiscrepancy"])
    assert error["code"] == "INVALID"
    assert error["field"] == "input.reopenedBy"


async def test_resolve_many_discrepancies(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("many", n_discrepancies=5, n_tests=0)
    ids = [gid("Discrepancy", i) for i in s.discrepancy_ids]
    # one already resolved by alice keeps her resolution
    await gql(RESOLVE, {"input": {"id": ids[0], "resolvedBy": "alice", "notes": "first"}})

    body = await gql(
        RESOLVE_MANY, {"input": {"ids": ids[:4], "resolvedBy": "bob", "notes": "bulk"}}
    )
    payload = data_of(body)["resolveDiscrepancies"]
    assert payload["errors"] == []
    rows = payload["discrepancies"]
    assert sorted(r["id"] for r in rows) == sorted(ids[:4])
    by_id = {r["id"]: r for r in rows}
    assert (by_id[ids[0]]["resolvedBy"], by_id[ids[0]]["version"]) == ("alice", 2)
    for gid_ in ids[1:4]:
        assert by_id[gid_]["isResolved"] is True
        assert (by_id[gid_]["resolvedBy"], by_id[gid_]["resolutionNotes"]) == ("bob", "bulk")
        assert by_id[gid_]["version"] == 2
    last = await _node(gql, ids[4])
    assert last is not None
    assert last["isResolved"] is False

    # repeated ids are fine
    body = await gql(RESOLVE_MANY, {"input": {"ids": [ids[1], ids[1]], "resolvedBy": "bob"}})
    assert data_of(body)["resolveDiscrepancies"]["errors"] == []


async def test_resolve_many_is_all_or_nothing(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("aon", n_discrepancies=3, n_tests=0)
    ids = [gid("Discrepancy", i) for i in s.discrepancy_ids]
    before = [await _node(gql, i) for i in ids]
    cases = [
        ([ids[0], ids[1], gid("Discrepancy", 999_999)], "NOT_FOUND", "input.ids[2]"),
        ([ids[0], s.gid, ids[2]], "INVALID", "input.ids[1]"),
        ([ids[0], "junk"], "INVALID", "input.ids[1]"),
        ([], "INVALID", "input.ids"),
    ]
    for id_list, code, field in cases:
        body = await gql(RESOLVE_MANY, {"input": {"ids": id_list, "resolvedBy": "bob"}})
        payload = data_of(body)["resolveDiscrepancies"]
        assert payload["discrepancies"] == []
        error = payload_error(payload)
        assert (error["code"], error["field"]) == (code, field), id_list
    assert [await _node(gql, i) for i in ids] == before


# ---------------------------------------------------------------- deleteSession


async def test_delete_session_cascades(gql: Gql, seed: Seeder, db: DatabaseManager) -> None:
    doomed = await seed.full("doomed", n_discrepancies=4, n_tests=2)
    kept = await seed.full("kept", n_discrepancies=2, n_tests=1)
    body = await gql(DELETE, {"input": {"sessionId": doomed.gid}})
    assert data_of(body)["deleteSession"] == {"deletedSessionId": doomed.gid, "errors": []}

    assert await _node(gql, doomed.gid) is None
    assert await _node(gql, gid("Discrepancy", doomed.discrepancy_ids[0])) is None
    assert await _node(gql, gid("ValidationResult", doomed.result_ids[0])) is None
    assert await _node(gql, gid("BehavioralTestResult", doomed.test_ids[0])) is None
    counts = """
    query($sid: ID!) {
      discrepancies(filter: {sessionId: $sid}) { totalCount }
      behavioralTests(filter: {sessionId: $sid}) { totalCount }
      sessions { totalCount }
    }
    """
    assert data_of(await gql(counts, {"sid": doomed.gid})) == {
        "discrepancies": {"totalCount": 0},
        "behavioralTests": {"totalCount": 0},
        "sessions": {"totalCount": 1},
    }
    assert data_of(await gql(counts, {"sid": kept.gid}))["discrepancies"] == {"totalCount": 2}
    assert await row_counts(db) == {
        "validation_sessions": 1,
        "validation_results": 1,
        "validation_discrepancies": 2,
        "behavioral_test_results": 1,
    }

    again = data_of(await gql(DELETE, {"input": {"sessionId": doomed.gid}}))["deleteSession"]
    assert again["deletedSessionId"] is None
    assert payload_error(again)["code"] == "NOT_FOUND"

    by_request = data_of(await gql(DELETE, {"input": {"requestId": "kept"}}))["deleteSession"]
    assert by_request == {"deletedSessionId": kept.gid, "errors": []}
    assert sum((await row_counts(db)).values()) == 0


async def test_delete_session_bad_references(gql: Gql, seed: Seeder, db: DatabaseManager) -> None:
    s = await seed.full("stay", n_discrepancies=1, n_tests=0)
    before = await row_counts(db)
    cases = [
        ({"sessionId": gid("Discrepancy", s.discrepancy_ids[0])}, "INVALID", "input.sessionId"),
        ({"requestId": "missing"}, "NOT_FOUND", "input.requestId"),
        ({}, "INVALID", "input.sessionId"),
        ({"sessionId": s.gid, "requestId": "stay"}, "INVALID", "input.sessionId"),
    ]
    for ref, code, field in cases:
        payload = data_of(await gql(DELETE, {"input": ref}))["deleteSession"]
        assert payload["deletedSessionId"] is None
        error = payload_error(payload)
        assert (error["code"], error["field"]) == (code, field), ref
    assert await row_counts(db) == before


# ------------------------------------------------------------------ concurrency


async def test_concurrent_creates_make_one_session(gql: Gql, db: DatabaseManager) -> None:
    payloads = await asyncio.gather(*(create(gql, request_id="race") for _ in range(6)))
    assert [p["errors"] for p in payloads] == [[]] * 6
    assert sorted(p["created"] for p in payloads) == [False] * 5 + [True]
    assert len({p["session"]["id"] for p in payloads}) == 1
    assert (await row_counts(db))["validation_sessions"] == 1


async def test_concurrent_resolves_with_the_same_version_one_wins(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("cas", n_discrepancies=1, n_tests=0)
    did = gid("Discrepancy", s.discrepancy_ids[0])
    bodies = await asyncio.gather(
        *(
            gql(RESOLVE, {"input": {"id": did, "resolvedBy": f"user-{i}", "expectedVersion": 1}})
            for i in range(5)
        )
    )
    payloads = [data_of(b)["resolveDiscrepancy"] for b in bodies]
    winners = [p["discrepancy"] for p in payloads if not p["errors"]]
    assert len(winners) == 1
    assert sorted(e["code"] for p in payloads for e in p["errors"]) == ["STALE_VERSION"] * 4
    assert await _node(gql, did) == winners[0]
    assert winners[0]["version"] == 2


async def test_concurrent_terminal_transitions_one_wins(gql: Gql, seed: Seeder) -> None:
    s = await seed.session("fork")
    assert (await _status(gql, sessionId=s.gid, status="PROCESSING"))["errors"] == []
    targets = ["COMPLETED", "FAILED", "CANCELLED"] * 2
    payloads = await asyncio.gather(*(_status(gql, sessionId=s.gid, status=t) for t in targets))
    final = data_of(await gql('{ session(requestId: "fork") { status } }'))["session"]["status"]
    for target, payload in zip(targets, payloads, strict=True):
        if target == final:  # the winner, or a harmless retry of the winner's move
            assert payload["errors"] == []
            assert payload["session"]["status"] == final
        else:
            assert payload_error(payload)["code"] == "INVALID_TRANSITION"
