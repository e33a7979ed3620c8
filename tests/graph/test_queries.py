"""Read side over HTTP: node(id), natural keys, connections (filters, keyset paging,
argument checks), metrics, and every nested relation."""

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from persistence.database import DatabaseManager
from persistence.enums import SessionStatus
from persistence.models import ValidationMetric
from persistence.services import DiscrepancyService, SessionService
from tests.graph.conftest import (
    Gql,
    Seeder,
    behavioral_values,
    data_of,
    discrepancy_values,
    gid,
    only_error,
    set_created_at,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

SESSION_IDS = """
query($rid: String!) {
  session(requestId: $rid) {
    id databaseId requestId
    results { id }
    discrepancies(first: 100) { edges { node { id } } }
    behavioralTests { id }
  }
}
"""

NODE = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on ValidationSession { requestId }
    ... on ValidationResult { fidelityScore }
    ... on Discrepancy { description }
    ... on BehavioralTestResult { scenarioName }
    ... on ValidationMetric { metricPeriod }
  }
}
"""

SESSIONS_PAGE = """
query($first: Int!, $after: String, $filter: SessionFilterInput, $order: SessionOrderInput) {
  sessions(first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { requestId databaseId createdAt } }
  }
}
"""


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def assert_bad_input(body: dict[str, Any], field: str, path: str) -> None:
    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["field"] == field, error
    assert error["path"][0] == path, error
    assert error["message"].startswith(f"{field}: "), error


# --------------------------------------------------------------------------- node


async def test_node_round_trips_every_type(gql: Gql, seed: Seeder) -> None:
    await seed.full("req-node", n_discrepancies=2, n_tests=1)
    session = data_of(await gql(SESSION_IDS, {"rid": "req-node"}))["session"]
    expected = [
        (session["id"], "ValidationSession", "requestId", "req-node"),
        (session["results"][0]["id"], "ValidationResult", "fidelityScore", 0.9),
        (
            session["discrepancies"]["edges"][1]["node"]["id"],
            "Discrepancy",
            "description",
            "difference 1",
        ),
        (session["behavioralTests"][0]["id"], "BehavioralTestResult", "scenarioName", "scenario-0"),
    ]
    for global_id, type_name, field, value in expected:
        node = data_of(await gql(NODE, {"id": global_id}))["node"]
        assert node is not None, type_name
        assert node["__typename"] == type_name
        assert node["id"] == global_id
        assert node[field] == value
    # the global id encodes the type and the database id
    assert session["id"] == gid("ValidationSession", session["databaseId"])


async def test_node_round_trips_a_metric(gql: Gql, db: DatabaseManager) -> None:
    async with db.write_session() as s:
        s.add(ValidationMetric(metric_date=T0, metric_period="daily", total_sessions=3))
    metric = data_of(await gql("{ metrics(period: DAILY) { id totalSessions } }"))["metrics"][0]
    node = data_of(await gql(NODE, {"id": metric["id"]}))["node"]
    assert node == {"__typename": "ValidationMetric", "id": metric["id"], "metricPeriod": "DAILY"}


async def test_node_of_a_missing_row_is_null(gql: Gql, seed: Seeder) -> None:
    await seed.full("req-1", n_discrepancies=1, n_tests=1)
    for type_name in ("ValidationSession", "ValidationResult", "Discrepancy"):
        body = await gql(NODE, {"id": gid(type_name, 999_999)})
        assert data_of(body) == {"node": None}, type_name
    body = await gql(NODE, {"id": gid("BehavioralTestResult", 2**31 - 1)})
    assert data_of(body) == {"node": None}


async def test_node_with_id_zero_is_null(gql: Gql) -> None:
    # 0 is the id of rows computed on the fly (live metrics): well-formed, never stored.
    body = await gql(NODE, {"id": b64("ValidationMetric:0")})
    assert body == {"data": {"node": None}, "extensions": body.get("extensions")}


@pytest.mark.parametrize(
    "bad_id",
    [
        "zzz",
        "",
        "%%%",
        b64("ValidationSession"),
        b64("Unknown:1"),
        b64("ValidationSession:abc"),
        b64("ValidationSession:-5"),
        b64(f"ValidationSession:{2**31}"),
        base64.urlsafe_b64encode(b"\xff\xfe:1").decode(),
    ],
)
async def test_node_with_a_malformed_id_is_bad_user_input(gql: Gql, bad_id: str) -> None:
    body = await gql(NODE, {"id": bad_id})
    assert body["data"] == {"node": None}
    assert_bad_input(body, "id", "node")


async def test_session_by_request_id(gql: Gql, seed: Seeder) -> None:
    a = await seed.session("req-a")
    await seed.session("req-b")
    query = "query($rid: String!) { session(requestId: $rid) { id requestId status } }"
    found = data_of(await gql(query, {"rid": "req-a"}))["session"]
    assert found == {"id": a.gid, "requestId": "req-a", "status": "PENDING"}
    assert data_of(await gql(query, {"rid": "req-missing"})) == {"session": None}
    assert data_of(await gql(query, {"rid": ""})) == {"session": None}


# ---------------------------------------------------------------------- sessions


async def _walk(gql: Gql, first: int, **variables: Any) -> list[dict[str, Any]]:
    """Every page of sessions(first, ...) via endCursor; checks pageInfo on the way."""
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        body = await gql(SESSIONS_PAGE, {"first": first, "after": after, **variables})
        page = data_of(body)["sessions"]
        info, edges = page["pageInfo"], page["edges"]
        assert info["hasPreviousPage"] is (after is not None)
        if edges:
            assert info["startCursor"] == edges[0]["cursor"]
            assert info["endCursor"] == edges[-1]["cursor"]
        else:
            assert info["startCursor"] is None
            assert info["endCursor"] is None
        pages.append(page)
        if not info["hasNextPage"]:
            return pages
        assert len(edges) == first
        after = info["endCursor"]
        assert len(pages) < 50, "pagination does not terminate"


async def _sessions_with_tied_timestamps(db: DatabaseManager, seed: Seeder, n: int) -> list[int]:
    """n sessions whose created_at come in groups of three equal values."""
    ids = []
    for i in range(n):
        seeded = await seed.session(f"req-{i:02d}")
        await set_created_at(
            db, "validation_sessions", seeded.session_id, T0 + timedelta(minutes=i // 3)
        )
        ids.append(seeded.session_id)
    return ids


async def test_sessions_pagination_walks_every_session_once(
    gql: Gql, seed: Seeder, db: DatabaseManager
) -> None:
    ids = await _sessions_with_tied_timestamps(db, seed, 12)

    pages = await _walk(gql, 5)
    assert [len(p["edges"]) for p in pages] == [5, 5, 2]
    assert {p["totalCount"] for p in pages} == {12}
    assert [p["pageInfo"]["hasNextPage"] for p in pages] == [True, True, False]
    walked = [e["node"]["databaseId"] for p in pages for e in p["edges"]]
    # newest first, ties on created_at broken by id (descending too)
    expected = sorted(ids, key=lambda i: (ids.index(i) // 3, i), reverse=True)
    assert walked == expected

    ascending = await _walk(gql, 4, order={"field": "CREATED_AT", "direction": "ASC"})
    assert [len(p["edges"]) for p in ascending] == [4, 4, 4]
    assert [e["node"]["databaseId"] for p in ascending for e in p["edges"]] == expected[::-1]

    by_update = await _walk(gql, 7, order={"field": "UPDATED_AT", "direction": "DESC"})
    assert sorted(e["node"]["databaseId"] for p in by_update for e in p["edges"]) == sorted(ids)


async def test_sessions_pagination_with_database_timestamps(
    gql: Gql, seed: Seeder, db: DatabaseManager
) -> None:
    """created_at from the database clock (SQLite: milliseconds, so ties are likely),
    and a keyset cursor survives the deletion of the row it points at."""
    ids = [(await seed.session(f"clock-{i}")).session_id for i in range(9)]
    pages = await _walk(gql, 2)
    walked = [e["node"]["databaseId"] for p in pages for e in p["edges"]]
    assert sorted(walked) == sorted(ids)
    assert len(walked) == len(set(walked))
    stamps = [
        (datetime.fromisoformat(e["node"]["createdAt"]), e["node"]["databaseId"])
        for p in pages
        for e in p["edges"]
    ]
    assert stamps == sorted(stamps, reverse=True)

    first = data_of(await gql(SESSIONS_PAGE, {"first": 4}))["sessions"]
    seen = [e["node"]["databaseId"] for e in first["edges"]]
    await SessionService(db).delete(seen[-1])  # the row under endCursor
    rest = data_of(
        await gql(SESSIONS_PAGE, {"first": 100, "after": first["pageInfo"]["endCursor"]})
    )["sessions"]
    remaining = [e["node"]["databaseId"] for e in rest["edges"]]
    assert rest["totalCount"] == 8
    assert sorted(seen + remaining) == sorted(ids)


async def test_sessions_edge_cases_of_first(gql: Gql, seed: Seeder) -> None:
    for i in range(3):
        await seed.session(f"req-{i}")
    empty = data_of(await gql(SESSIONS_PAGE, {"first": 0}))["sessions"]
    assert empty["edges"] == []
    assert empty["totalCount"] == 3
    exact = data_of(await gql(SESSIONS_PAGE, {"first": 3}))["sessions"]
    assert len(exact["edges"]) == 3
    assert exact["pageInfo"]["hasNextPage"] is False
    # the last cursor leads to an empty page that still knows the total
    after_last = data_of(
        await gql(SESSIONS_PAGE, {"first": 3, "after": exact["pageInfo"]["endCursor"]})
    )["sessions"]
    assert after_last["edges"] == []
    assert after_last["totalCount"] == 3
    assert after_last["pageInfo"]["hasNextPage"] is False
    hundred = data_of(await gql(SESSIONS_PAGE, {"first": 100}))["sessions"]
    assert len(hundred["edges"]) == 3


@pytest.mark.parametrize("first", [101, 1000, -1])
async def test_sessions_first_out_of_range(gql: Gql, first: int) -> None:
    body = await gql(SESSIONS_PAGE, {"first": first})
    assert body["data"] is None
    assert_bad_input(body, "first", "sessions")


@pytest.mark.parametrize(
    "after",
    [
        "not a cursor",
        "%%%",
        b64("[1, 2]"),
        b64('["t", "not a date", 1]'),
        b64('["t", "2026-01-01T00:00:00", 1]'),  # naive datetime
        b64('["v", 1, "x"]'),
        b64('["v", [1], 1]'),
        b64('["x", 1, 1]'),
        b64('["v", 1, true]'),
    ],
)
async def test_sessions_malformed_after(gql: Gql, after: str) -> None:
    body = await gql(SESSIONS_PAGE, {"first": 5, "after": after})
    assert body["data"] is None
    assert_bad_input(body, "after", "sessions")


async def test_cursor_of_another_listing_is_bad_user_input(gql: Gql, seed: Seeder) -> None:
    s = await seed.full("cur", n_discrepancies=3, n_tests=1)
    session_cursor = data_of(await gql(SESSIONS_PAGE, {"first": 1}))["sessions"]["pageInfo"][
        "endCursor"
    ]
    discrepancy_cursor = data_of(await gql(DISCREPANCIES, {"first": 1}))["discrepancies"][
        "pageInfo"
    ]["endCursor"]
    assert session_cursor
    assert discrepancy_cursor
    body = await gql(DISCREPANCIES, {"first": 1, "after": session_cursor})
    assert_bad_input(body, "after", "discrepancies")
    body = await gql(SESSIONS_PAGE, {"first": 1, "after": discrepancy_cursor})
    assert_bad_input(body, "after", "sessions")
    body = await gql(BEHAVIORAL_TESTS, {"first": 1, "after": session_cursor})
    assert_bad_input(body, "after", "behavioralTests")
    for huge in (b64(f'["v", 1, {2**40}]'), b64(f'["v", {2**40}, 1]'), b64('["v", 1, -1]')):
        body = await gql(DISCREPANCIES, {"first": 1, "after": huge})
        assert_bad_input(body, "after", "discrepancies")
    nested = """
    query($after: String) {
      session(requestId: "cur") { discrepancies(first: 1, after: $after) { totalCount } }
    }
    """
    body = await gql(nested, {"after": session_cursor})
    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}
    assert error["path"] == ["session", "discrepancies"]
    assert s.discrepancy_ids


async def test_sessions_filters(gql: Gql, seed: Seeder, db: DatabaseManager) -> None:
    service = SessionService(db)
    a = await seed.session("a", source_technology="PYTHON_DJANGO", validation_scope="UI_LAYOUT")
    b = await seed.session("b", target_technology="TYPESCRIPT_REACT")
    c = await seed.session("c", validation_scope="API_ENDPOINTS")
    d = await seed.session("d")
    await service.update_status(b.session_id, SessionStatus.PROCESSING)
    await service.update_status(c.session_id, SessionStatus.PROCESSING)
    await service.update_status(c.session_id, SessionStatus.COMPLETED)
    await service.update_status(d.session_id, SessionStatus.CANCELLED)
    for i, s in enumerate((a, b, c, d)):
        await set_created_at(db, "validation_sessions", s.session_id, T0 + timedelta(days=i))
    await seed.result(a, fidelity_score=0.2)
    await seed.result(a, fidelity_score=0.95)
    await seed.result(b, fidelity_score=0.5)
    await seed.result(c, fidelity_score=1.0)

    async def request_ids(filter_: dict[str, Any]) -> list[str]:
        page = data_of(await gql(SESSIONS_PAGE, {"first": 100, "filter": filter_}))["sessions"]
        ids = [e["node"]["requestId"] for e in page["edges"]]
        assert page["totalCount"] == len(ids)
        return sorted(ids)

    assert await request_ids({}) == ["a", "b", "c", "d"]
    assert await request_ids({"status": ["PENDING"]}) == ["a"]
    assert await request_ids({"status": ["PROCESSING", "CANCELLED"]}) == ["b", "d"]
    assert await request_ids({"status": ["FAILED"]}) == []
    assert await request_ids({"status": []}) == ["a", "b", "c", "d"]
    assert await request_ids({"sourceTechnology": ["PYTHON_DJANGO"]}) == ["a"]
    assert await request_ids({"sourceTechnology": ["PYTHON_FLASK"]}) == ["b", "c", "d"]
    assert await request_ids({"targetTechnology": ["TYPESCRIPT_REACT"]}) == ["b"]
    assert await request_ids({"scope": ["UI_LAYOUT", "API_ENDPOINTS"]}) == ["a", "c"]
    assert await request_ids({"createdFrom": (T0 + timedelta(days=1)).isoformat()}) == [
        "b",
        "c",
        "d",
    ]
    # createdTo is exclusive
    assert await request_ids({"createdTo": (T0 + timedelta(days=2)).isoformat()}) == ["a", "b"]
    assert await request_ids(
        {
            "createdFrom": "2026-03-02T13:00:00+01:00",  # = T0 + 1 day, another offset
            "createdTo": (T0 + timedelta(days=3)).isoformat(),
        }
    ) == ["b", "c"]
    # a session matches when ANY of its results is in range
    assert await request_ids({"fidelityMin": 0.9}) == ["a", "c"]
    assert await request_ids({"fidelityMax": 0.3}) == ["a"]
    assert await request_ids({"fidelityMin": 0.4, "fidelityMax": 0.6}) == ["b"]
    assert await request_ids({"fidelityMin": 1.0, "fidelityMax": 1.0}) == ["c"]
    assert await request_ids({"fidelityMin": 0.0}) == ["a", "b", "c"]
    assert await request_ids(
        {"status": ["PENDING", "PROCESSING"], "fidelityMin": 0.4, "scope": ["FULL_SYSTEM"]}
    ) == ["b"]


@pytest.mark.parametrize(
    ("filter_", "field"),
    [
        ({"fidelityMin": 1.5}, "filter.fidelityMin"),
        ({"fidelityMax": -0.1}, "filter.fidelityMax"),
        ({"createdFrom": "2026-01-01T00:00:00"}, "filter.createdFrom"),
        ({"createdTo": "2026-01-01T00:00:00"}, "filter.createdTo"),
    ],
)
async def test_sessions_bad_filter_values(gql: Gql, filter_: dict[str, Any], field: str) -> None:
    body = await gql(SESSIONS_PAGE, {"first": 5, "filter": filter_})
    assert body["data"] is None
    assert_bad_input(body, field, "sessions")


async def test_sessions_filter_with_an_unknown_enum_value(gql: Gql) -> None:
    body = await gql(SESSIONS_PAGE, {"first": 5, "filter": {"status": ["ARCHIVED"]}})
    assert body["data"] is None
    assert "ARCHIVED" in only_error(body)["message"]


# ----------------------------------------------------------------- discrepancies

DISCREPANCIES = """
query($first: Int!, $after: String, $filter: DiscrepancyFilterInput, $order: IdOrderInput) {
  discrepancies(first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { node { databaseId severity isResolved session { requestId } } }
  }
}
"""


async def test_top_level_discrepancies(gql: Gql, seed: Seeder, db: DatabaseManager) -> None:
    a = await seed.full("a", n_discrepancies=6, n_tests=0)  # C W I C W I
    b = await seed.full("b", n_discrepancies=3, n_tests=0)  # C W I
    await DiscrepancyService(db).resolve_many(
        [a.discrepancy_ids[0], a.discrepancy_ids[1], b.discrepancy_ids[0]], "alice"
    )

    async def ids(filter_: dict[str, Any] | None, **extra: Any) -> list[int]:
        body = await gql(DISCREPANCIES, {"first": 100, "filter": filter_, **extra})
        page = data_of(body)["discrepancies"]
        assert page["totalCount"] == len(page["edges"])
        return [e["node"]["databaseId"] for e in page["edges"]]

    everything = a.discrepancy_ids + b.discrepancy_ids
    assert await ids(None) == everything  # oldest first
    assert await ids(None, order={"direction": "DESC"}) == everything[::-1]
    assert await ids({"severity": ["CRITICAL"]}) == [
        a.discrepancy_ids[0],
        a.discrepancy_ids[3],
        b.discrepancy_ids[0],
    ]
    assert await ids({"resolved": True}) == [*a.discrepancy_ids[:2], b.discrepancy_ids[0]]
    assert await ids({"resolved": False}) == [*a.discrepancy_ids[2:], *b.discrepancy_ids[1:]]
    assert await ids({"sessionId": b.gid}) == b.discrepancy_ids
    assert await ids({"sessionId": b.gid, "resolved": False, "severity": ["INFO"]}) == [
        b.discrepancy_ids[2]
    ]
    assert await ids({"sessionId": gid("ValidationSession", 999_999)}) == []
    assert await ids({"discrepancyType": ["layout"]}) == everything
    assert await ids({"discrepancyType": ["other"]}) == []

    # paging: 2 at a time over the 6 open ones
    walked: list[int] = []
    after = None
    for expected_next in (True, True, False):
        body = await gql(DISCREPANCIES, {"first": 2, "after": after, "filter": {"resolved": False}})
        page = data_of(body)["discrepancies"]
        assert page["totalCount"] == 6
        assert page["pageInfo"]["hasNextPage"] is expected_next
        walked += [e["node"]["databaseId"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
    assert walked == [*a.discrepancy_ids[2:], *b.discrepancy_ids[1:]]

    first_node = data_of(await gql(DISCREPANCIES, {"first": 1}))["discrepancies"]["edges"][0]
    assert first_node["node"]["session"] == {"requestId": "a"}
    assert first_node["node"]["isResolved"] is True


async def test_top_level_discrepancies_bad_arguments(gql: Gql, seed: Seeder) -> None:
    a = await seed.full("a", n_discrepancies=1, n_tests=1)
    wrong_type = gid("Discrepancy", a.discrepancy_ids[0])
    body = await gql(DISCREPANCIES, {"first": 5, "filter": {"sessionId": wrong_type}})
    assert_bad_input(body, "filter.sessionId", "discrepancies")
    assert "expected a ValidationSession ID" in only_error(body)["message"]
    body = await gql(DISCREPANCIES, {"first": 5, "filter": {"sessionId": "nope"}})
    assert_bad_input(body, "filter.sessionId", "discrepancies")
    assert_bad_input(await gql(DISCREPANCIES, {"first": 101}), "first", "discrepancies")
    assert_bad_input(await gql(DISCREPANCIES, {"first": 1, "after": "x"}), "after", "discrepancies")


BEHAVIORAL_TESTS = """
query($first: Int!, $after: String, $filter: BehavioralTestFilterInput) {
  behavioralTests(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { databaseId scenarioName executionStatus session { requestId } } }
  }
}
"""


async def test_top_level_behavioral_tests(gql: Gql, seed: Seeder) -> None:
    a = await seed.session("a")
    b = await seed.session("b")
    a_ids = await seed.tests(
        a,
        behavioral_values("login", execution_status="passed"),
        behavioral_values("search", execution_status="failed"),
        behavioral_values("checkout", execution_status="timeout"),
    )
    b_ids = await seed.tests(b, behavioral_values("login", execution_status="failed"))

    async def ids(filter_: dict[str, Any] | None) -> list[int]:
        body = await gql(BEHAVIORAL_TESTS, {"first": 100, "filter": filter_})
        page = data_of(body)["behavioralTests"]
        assert page["totalCount"] == len(page["edges"])
        return [e["node"]["databaseId"] for e in page["edges"]]

    assert await ids(None) == a_ids + b_ids
    assert await ids({"executionStatus": ["FAILED"]}) == [a_ids[1], b_ids[0]]
    assert await ids({"executionStatus": ["PASSED", "TIMEOUT"]}) == [a_ids[0], a_ids[2]]
    assert await ids({"sessionId": b.gid}) == b_ids
    assert await ids({"sessionId": a.gid, "executionStatus": ["FAILED"]}) == [a_ids[1]]

    page1 = data_of(await gql(BEHAVIORAL_TESTS, {"first": 3}))["behavioralTests"]
    assert page1["totalCount"] == 4
    assert page1["pageInfo"]["hasNextPage"] is True
    page2 = data_of(
        await gql(BEHAVIORAL_TESTS, {"first": 3, "after": page1["pageInfo"]["endCursor"]})
    )["behavioralTests"]
    assert page2["pageInfo"]["hasNextPage"] is False
    assert [e["node"] for e in page2["edges"]] == [
        {
            "databaseId": b_ids[0],
            "scenarioName": "login",
            "executionStatus": "FAILED",
            "session": {"requestId": "b"},
        }
    ]
    bad = await gql(BEHAVIORAL_TESTS, {"first": 3, "filter": {"sessionId": "bad"}})
    assert_bad_input(bad, "filter.sessionId", "behavioralTests")


# ------------------------------------------------------------------------ metrics

METRICS = """
query($period: MetricPeriod!, $from: DateTime, $to: DateTime) {
  metrics(period: $period, from: $from, to: $to) {
    id databaseId metricDate metricPeriod totalSessions avgFidelityScore technologyBreakdown
  }
}
"""


async def test_metrics(gql: Gql, db: DatabaseManager) -> None:
    async with db.write_session() as s:
        s.add_all(
            [
                ValidationMetric(
                    metric_date=T0 + timedelta(days=2), metric_period="daily", total_sessions=3
                ),
                ValidationMetric(
                    metric_date=T0,
                    metric_period="daily",
                    total_sessions=1,
                    avg_fidelity_score=0.75,
                    technology_breakdown={"PYTHON_FLASK->JAVA_SPRING": 1},
                ),
                ValidationMetric(
                    metric_date=T0 + timedelta(days=1), metric_period="daily", total_sessions=2
                ),
                ValidationMetric(metric_date=T0, metric_period="weekly", total_sessions=6),
            ]
        )

    daily = data_of(await gql(METRICS, {"period": "DAILY"}))["metrics"]
    assert [m["totalSessions"] for m in daily] == [1, 2, 3]  # oldest first
    first = daily[0]
    assert first["metricPeriod"] == "DAILY"
    assert datetime.fromisoformat(first["metricDate"]) == T0
    assert first["avgFidelityScore"] == 0.75
    assert first["technologyBreakdown"] == {"PYTHON_FLASK->JAVA_SPRING": 1}
    assert first["id"] == gid("ValidationMetric", first["databaseId"])

    weekly = data_of(await gql(METRICS, {"period": "WEEKLY"}))["metrics"]
    assert [m["totalSessions"] for m in weekly] == [6]
    assert data_of(await gql(METRICS, {"period": "MONTHLY"}))["metrics"] == []

    # [from, to): from inclusive, to exclusive
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(days=2)).isoformat()}
    bounded = data_of(await gql(METRICS, {"period": "DAILY", **window}))["metrics"]
    assert [m["totalSessions"] for m in bounded] == [1, 2]
    later = {"from": (T0 + timedelta(hours=1)).isoformat()}
    assert [
        m["totalSessions"]
        for m in data_of(await gql(METRICS, {"period": "DAILY", **later}))["metrics"]
    ] == [2, 3]

    naive = await gql(METRICS, {"period": "DAILY", "from": "2026-03-01T00:00:00"})
    assert_bad_input(naive, "from", "metrics")
    naive_to = await gql(METRICS, {"period": "DAILY", "to": "2026-03-01T00:00:00"})
    assert_bad_input(naive_to, "to", "metrics")
    unknown = await gql(METRICS, {"period": "YEARLY"})
    assert unknown["data"] is None
    assert "YEARLY" in only_error(unknown)["message"]


# ------------------------------------------------------------------------- nested

NESTED = """
query($rid: String!, $first: Int!, $after: String, $filter: DiscrepancyFilterInput) {
  session(requestId: $rid) {
    requestId
    results { databaseId fidelityScore session { requestId } discrepancies { databaseId } }
    latestResult { databaseId }
    discrepancies(first: $first, after: $after, filter: $filter) {
      totalCount
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      edges {
        cursor
        node { databaseId severity session { requestId } result { databaseId } }
      }
    }
    behavioralTests { databaseId scenarioName session { requestId } }
  }
}
"""


async def test_session_nested_relations(gql: Gql, seed: Seeder, db: DatabaseManager) -> None:
    s = await seed.session("nested")
    first_result = await seed.result(
        s, [discrepancy_values(i, severity="CRITICAL") for i in range(3)], fidelity_score=0.4
    )
    first_ids = list(s.discrepancy_ids)
    second_result = await seed.result(
        s, [discrepancy_values(i, severity="INFO") for i in range(4)], fidelity_score=0.8
    )
    second_ids = s.discrepancy_ids[3:]
    # make the first result clearly older than the second
    await set_created_at(db, "validation_results", first_result, T0)
    await set_created_at(db, "validation_results", second_result, T0 + timedelta(seconds=1))
    test_ids = await seed.tests(s, behavioral_values("one"), behavioral_values("two"))
    other = await seed.full("other", n_discrepancies=2, n_tests=1)

    body = await gql(NESTED, {"rid": "nested", "first": 5})
    session = data_of(body)["session"]
    assert session["results"] == [
        {
            "databaseId": first_result,
            "fidelityScore": 0.4,
            "session": {"requestId": "nested"},
            "discrepancies": [{"databaseId": i} for i in first_ids],
        },
        {
            "databaseId": second_result,
            "fidelityScore": 0.8,
            "session": {"requestId": "nested"},
            "discrepancies": [{"databaseId": i} for i in second_ids],
        },
    ]
    assert session["latestResult"] == {"databaseId": second_result}
    assert session["behavioralTests"] == [
        {"databaseId": test_ids[0], "scenarioName": "one", "session": {"requestId": "nested"}},
        {"databaseId": test_ids[1], "scenarioName": "two", "session": {"requestId": "nested"}},
    ]
    page = session["discrepancies"]
    assert page["totalCount"] == 7
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["hasPreviousPage"] is False
    assert [e["node"]["databaseId"] for e in page["edges"]] == [*first_ids, *second_ids[:2]]
    assert page["edges"][0]["node"] == {
        "databaseId": first_ids[0],
        "severity": "CRITICAL",
        "session": {"requestId": "nested"},
        "result": {"databaseId": first_result},
    }
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]

    # next page, then the empty page after the last cursor still knows the total
    body = await gql(NESTED, {"rid": "nested", "first": 5, "after": page["pageInfo"]["endCursor"]})
    page2 = data_of(body)["session"]["discrepancies"]
    assert [e["node"]["databaseId"] for e in page2["edges"]] == second_ids[2:]
    assert page2["totalCount"] == 7
    assert page2["pageInfo"]["hasNextPage"] is False
    assert page2["pageInfo"]["hasPreviousPage"] is True
    body = await gql(NESTED, {"rid": "nested", "first": 5, "after": page2["pageInfo"]["endCursor"]})
    page3 = data_of(body)["session"]["discrepancies"]
    assert page3["edges"] == []
    assert page3["totalCount"] == 7
    assert page3["pageInfo"]["hasNextPage"] is False

    # a filter narrows both the page and its total
    body = await gql(NESTED, {"rid": "nested", "first": 2, "filter": {"severity": ["INFO"]}})
    info = data_of(body)["session"]["discrepancies"]
    assert info["totalCount"] == 4
    assert [e["node"]["databaseId"] for e in info["edges"]] == second_ids[:2]
    assert info["pageInfo"]["hasNextPage"] is True

    # a sessionId filter on a session's own connection can only narrow it
    body = await gql(NESTED, {"rid": "nested", "first": 5, "filter": {"sessionId": other.gid}})
    assert data_of(body)["session"]["discrepancies"]["totalCount"] == 0

    # other sessions are untouched by this one's children
    body = await gql(NESTED, {"rid": "other", "first": 0})
    other_session = data_of(body)["session"]
    assert other_session["discrepancies"]["totalCount"] == 2
    assert other_session["discrepancies"]["edges"] == []
    assert [t["databaseId"] for t in other_session["behavioralTests"]] == other.test_ids


async def test_nested_pages_with_different_arguments_in_one_request(gql: Gql, seed: Seeder) -> None:
    a = await seed.full("a", n_discrepancies=6, n_tests=0)  # C W I C W I
    b = await seed.full("b", n_discrepancies=2, n_tests=0)  # C W
    empty = await seed.session("empty")
    query = """
    {
      sessions(first: 10, orderBy: {direction: ASC}) {
        edges { node {
          requestId
          latestResult { databaseId }
          all: discrepancies(first: 100) { totalCount edges { node { databaseId } } }
          two: discrepancies(first: 2) { totalCount pageInfo { hasNextPage } }
          warn: discrepancies(filter: {severity: [WARNING]}) {
            totalCount edges { node { databaseId } }
          }
        } }
      }
    }
    """
    edges = data_of(await gql(query))["sessions"]["edges"]
    by_rid = {e["node"]["requestId"]: e["node"] for e in edges}
    assert set(by_rid) == {"a", "b", "empty"}
    assert [n["databaseId"] for n in _nodes(by_rid["a"]["all"])] == a.discrepancy_ids
    assert [n["databaseId"] for n in _nodes(by_rid["b"]["all"])] == b.discrepancy_ids
    assert by_rid["a"]["two"] == {"totalCount": 6, "pageInfo": {"hasNextPage": True}}
    assert by_rid["b"]["two"] == {"totalCount": 2, "pageInfo": {"hasNextPage": False}}
    assert by_rid["a"]["warn"]["totalCount"] == 2
    assert [n["databaseId"] for n in _nodes(by_rid["a"]["warn"])] == [
        a.discrepancy_ids[1],
        a.discrepancy_ids[4],
    ]
    assert [n["databaseId"] for n in _nodes(by_rid["b"]["warn"])] == [b.discrepancy_ids[1]]
    assert by_rid["empty"]["all"] == {"totalCount": 0, "edges": []}
    assert by_rid["empty"]["latestResult"] is None
    assert by_rid["a"]["latestResult"] == {"databaseId": a.result_ids[0]}
    assert empty.session_id not in (a.session_id, b.session_id)


def _nodes(connection: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["node"] for e in connection["edges"]]


async def test_nested_discrepancies_bad_arguments(gql: Gql, seed: Seeder) -> None:
    await seed.full("a", n_discrepancies=1, n_tests=0)
    body = await gql(NESTED, {"rid": "a", "first": 101})
    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
    assert error["path"] == ["session", "discrepancies"]
    body = await gql(NESTED, {"rid": "a", "first": 1, "after": "garbage"})
    error = only_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}
    assert error["path"] == ["session", "discrepancies"]


async def test_discrepancy_relations_from_node(gql: Gql, seed: Seeder, db: DatabaseManager) -> None:
    s = await seed.full("rel", n_discrepancies=2, n_tests=1)
    query = """
    query($id: ID!) {
      node(id: $id) {
        ... on Discrepancy { session { requestId } result { databaseId fidelityScore } }
        ... on BehavioralTestResult { session { requestId } }
        ... on ValidationResult { session { requestId } discrepancies { databaseId } }
      }
    }
    """
    node = data_of(await gql(query, {"id": gid("Discrepancy", s.discrepancy_ids[1])}))["node"]
    assert node == {
        "session": {"requestId": "rel"},
        "result": {"databaseId": s.result_ids[0], "fidelityScore": 0.9},
    }
    node = data_of(await gql(query, {"id": gid("BehavioralTestResult", s.test_ids[0])}))["node"]
    assert node == {"session": {"requestId": "rel"}}
    node = data_of(await gql(query, {"id": gid("ValidationResult", s.result_ids[0])}))["node"]
    assert node == {
        "session": {"requestId": "rel"},
        "discrepancies": [{"databaseId": i} for i in s.discrepancy_ids],
    }

    # a discrepancy whose result link is gone (no API deletes results; SET NULL is
    # the schema's rule) answers result: null
    async with db.write_session() as session:
        await session.execute(
            sa.text("DELETE FROM validation_results WHERE id = :id"), {"id": s.result_ids[0]}
        )
    node = data_of(await gql(query, {"id": gid("Discrepancy", s.discrepancy_ids[1])}))["node"]
    assert node == {"session": {"requestId": "rel"}, "result": None}
