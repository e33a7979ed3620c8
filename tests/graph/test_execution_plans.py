"""Compiled execution plans (graph.plan): which documents they serve, that they keep
the statement counts, and differential tests against standard execution.

Plans read narrower rows (only the columns a document selects) than resolvers, which
is what the differential tests check most: a column a plan forgot to read would come
back null. The whole suite already runs in ``verify`` mode (tests/conftest.py): every query any
test sends is answered both ways and compared byte for byte. Here, in addition,
hypothesis generates documents of the shapes plans serve (aliases, fragments, nested
relations, connection arguments, bad cursors, variables) and some they do not, and
each is sent to an app with plans on and to one with plans off: the HTTP bodies must
be identical.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import parse
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from graph.ids import GlobalIdOf, to_global_id
from graph.plan.compiler import NullValue, compile_plan
from graph.plan.extension import MISMATCHES, PLANS, STATS
from graph.plan.serialize import leaf_writer
from graph.schema import build_graphql_app, schema
from graph.settings import AppSettings, PlanMode
from persistence.database import DatabaseManager
from tests.conftest import DbFactory
from tests.graph.conftest import Seeder, StatementLog, app_client, data_of, discrepancy_values
from tests.graph.test_statement_counts import DASHBOARD, DASHBOARD_STATEMENTS
from tests.reliability.test_fuzz import examples


def _plan_of(query: str, operation: str | None = None) -> Any:
    return compile_plan(schema, parse(query), operation)


def test_supported_documents_compile() -> None:
    assert _plan_of(DASHBOARD) is not None
    fragments = """
    query Q { a: sessions(first: 2) { ...Page } }
    fragment Page on ValidationSessionConnection { edges { node { ...S } } pageInfo { endCursor } }
    fragment S on ValidationSession { id __typename ... on Node { id } latestResult { id } }
    """
    assert _plan_of(fragments, "Q") is not None
    assert _plan_of('{ session(requestId: "x") { results { discrepancies { session { id } } } } }')


@pytest.mark.parametrize(
    "query",
    [
        'mutation { deleteSession(input: {id: "x"}) { errors { code } } }',
        '{ node(id: "x") { id } }',
        "{ __schema { queryType { name } } }",
        "{ sessions { totalCount @include(if: true) } }",
        "{ metrics(period: DAILY) { id } }",
        "{ auditLog { totalCount } }",
        # two operations, none named: standard execution reports it
        '{ session(requestId: "x") { id } } query B { x: sessions { totalCount } }',
    ],
)
def test_unsupported_documents_do_not_compile(query: str) -> None:
    assert _plan_of(query) is None


@pytest.fixture
async def clients(db: DatabaseManager) -> AsyncIterator[dict[PlanMode, httpx.AsyncClient]]:
    made: dict[PlanMode, httpx.AsyncClient] = {}
    for mode in (PlanMode.ON, PlanMode.OFF):
        app = build_graphql_app(db, AppSettings(execution_plans=mode))
        made[mode] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://migval.test"
        )
    try:
        yield made
    finally:
        for client in made.values():
            await client.aclose()


async def _post(client: httpx.AsyncClient, query: str, variables: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return await client.post("/graphql", json=body)


@pytest.mark.parametrize("mode", [PlanMode.ON, PlanMode.OFF])
async def test_dashboard_statements_and_answer_in_both_modes(
    mode: PlanMode,
    clients: dict[PlanMode, httpx.AsyncClient],
    seed: Seeder,
    statements: StatementLog,
) -> None:
    for i in range(3):
        await seed.full(f"plan-{i}", n_discrepancies=21, n_tests=2)
    before = STATS["planned"]
    statements.clear()
    response = await _post(clients[mode], DASHBOARD)
    statements.assert_read_only_autocommit()
    assert statements.count == DASHBOARD_STATEMENTS
    # served by the plan only when plans are on
    assert STATS["planned"] - before == (1 if mode is PlanMode.ON else 0), dict(STATS)
    data = data_of(response.json())
    assert data["sessions"]["totalCount"] == 3
    assert [len(e["node"]["discrepancies"]["edges"]) for e in data["sessions"]["edges"]] == [20] * 3
    # Plans read only the columns the document selects (the others come back NULL);
    # standard execution reads whole rows for its resolvers.
    page = next(t for t in statements.texts if "validation_discrepancies" in t)
    narrowed = "NULL AS recommendation" in page
    assert narrowed is (mode is PlanMode.ON), page
    assert ("NULL AS severity" in page) is False  # selected: read
    listing = next(t for t in statements.texts if "LIMIT" in t and "validation_sessions" in t)
    assert ("NULL AS source_files" in listing) is (mode is PlanMode.ON), listing
    assert "NULL AS request_id" not in listing


@pytest.mark.parametrize("dropped", ["severity", "description"])  # non-null, nullable
async def test_verify_mode_catches_a_column_a_plan_does_not_read(
    db: DatabaseManager, seed: Seeder, dropped: str
) -> None:
    """A plan whose narrow read lacks a column it writes is a recorded mismatch in
    verify mode, whether the column is nullable (a wrong null) or not (the plan gives
    up on a null standard execution does not see)."""
    await seed.full("verify", n_discrepancies=2)
    query = "{ sessions(first: 5) { edges { node { discrepancies(first: 5) { edges { node "
    query += "{ id severity description } } } } } } }"
    plan = _plan_of(query)
    session = plan.root.relations[0].child.edges[0][1].nodes[0][1]
    relation = session.relations[0]
    assert relation.columns is not None
    assert dropped in relation.columns
    object.__setattr__(relation, "columns", relation.columns - {dropped})
    verify = build_graphql_app(db, AppSettings(execution_plans=PlanMode.VERIFY))
    PLANS.put((schema, query, None), plan)
    seen = MISMATCHES.count
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=verify), base_url="http://migval.test"
        ) as client:
            body = (await _post(client, query)).json()
    finally:
        caught = MISMATCHES.count - seen
        MISMATCHES.count = seen  # expected here: not a failure of this test
        PLANS.put((schema, query, None), _plan_of(query))  # an untampered plan again
    assert "errors" not in body  # standard execution served the right answer
    assert caught == 1


async def test_roles_are_enforced_by_falling_back(db: DatabaseManager, seed: Seeder) -> None:
    await seed.full("roles")
    nobody = AppSettings(anonymous_role=None, execution_plans=PlanMode.ON)
    app = build_graphql_app(db, nobody)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://migval.test"
    ) as client:
        before = dict(STATS)
        body = (await _post(client, "{ sessions { totalCount } }")).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert STATS["fallback"] == before.get("fallback", 0) + 1
    assert STATS["planned"] == before.get("planned", 0)


async def _planned_as_standard(
    clients: dict[PlanMode, httpx.AsyncClient],
    query: str,
    variables: dict[str, Any] | None = None,
) -> httpx.Response:
    """The planned response, after checking that the plan served it (no fallback)
    and that standard execution answers the same bytes."""
    before = dict(STATS)
    planned = await _post(clients[PlanMode.ON], query, variables)
    assert STATS["planned"] == before.get("planned", 0) + 1
    assert STATS.get("fallback", 0) == before.get("fallback", 0)
    standard = await _post(clients[PlanMode.OFF], query, variables)
    assert planned.content == standard.content
    return planned


async def test_leaf_selections_with_nulls_are_served_by_plans(
    seed: Seeder, clients: dict[PlanMode, httpx.AsyncClient]
) -> None:
    """Nulls in nullable leaves, ``__typename``, aliases and a missing ``latestResult``
    come out of the plan's leaf writers as standard execution writes them, without
    falling back (a writer that gave up on a nullable null would still answer right,
    through the fallback: the counters tell)."""
    await seed.full("with-result", n_discrepancies=2)
    await seed.session("no-result")
    query = """{ sessions(first: 5) { edges { node { requestId
        latestResult { __typename id fidelityScore }
        discrepancies(first: 3) { nodes { __typename id resolvedAt resolutionNotes
            recommendation sev: severity isResolved r: resolvedBy } } } } } }"""
    planned = await _planned_as_standard(clients, query)
    nodes = [edge["node"] for edge in planned.json()["data"]["sessions"]["edges"]]
    assert {node["requestId"]: node["latestResult"] is None for node in nodes} == {
        "with-result": False,
        "no-result": True,
    }
    found = [d for node in nodes for d in node["discrepancies"]["nodes"]]
    assert len(found) == 2
    assert all(d["__typename"] == "Discrepancy" and d["resolvedAt"] is None for d in found)


async def test_raw_discrepancy_pages_serve_cursors_parents_and_decoded_leaves(
    seed: Seeder, clients: dict[PlanMode, httpx.AsyncClient]
) -> None:
    """A plan writes session discrepancy pages from the driver's raw records on
    PostgreSQL (rows elsewhere): enums, datetimes and JSON decoded by the writer,
    cursors and a parent relation read from the records, all as standard execution
    answers and without falling back."""
    await seed.full("raw-a", n_discrepancies=4)
    await seed.full("raw-b", n_discrepancies=2)
    query = """{ sessions(first: 5) { edges { node { requestId
        discrepancies(first: 3) { totalCount pageInfo { endCursor hasNextPage }
            edges { cursor node { id createdAt severity discrepancyType confidence
                validationContext isResolved session { requestId status } } } } } } } }"""
    planned = await _planned_as_standard(clients, query)
    pages = [e["node"]["discrepancies"] for e in planned.json()["data"]["sessions"]["edges"]]
    assert sorted(p["totalCount"] for p in pages) == [2, 4]
    nodes = [edge["node"] for page in pages for edge in page["edges"]]
    assert len(nodes) == 5
    assert all(n["createdAt"] and n["severity"] for n in nodes)
    assert {n["session"]["requestId"] for n in nodes} == {"raw-a", "raw-b"}


async def test_raw_pages_after_a_cursor_and_with_other_filters_answer_as_standard(
    seed: Seeder, clients: dict[PlanMode, httpx.AsyncClient]
) -> None:
    """Raw discrepancy pages after a cursor (the rows before it dropped by position)
    and under other filter values (other statements, one writer) answer as standard
    execution does, served by the plan."""
    await seed.full("after", n_discrepancies=9)  # 3 each of CRITICAL, WARNING, INFO
    first = """{ sessions(first: 1) { edges { node {
        discrepancies(first: 4) { pageInfo { endCursor } } } } } }"""
    page = (await _planned_as_standard(clients, first)).json()["data"]["sessions"]["edges"][0]
    cursor = page["node"]["discrepancies"]["pageInfo"]["endCursor"]
    query = """query($after: String, $sev: [SeverityLevel!]) { sessions(first: 1) { edges {
        node { discrepancies(first: 3, after: $after, filter: {severity: $sev}) {
            totalCount edges { node { id severity description } } } } } } }"""
    seen = []
    for variables in (
        {"after": cursor, "sev": None},
        {"after": None, "sev": ["INFO"]},
        {"after": cursor, "sev": ["WARNING", "CRITICAL"]},
    ):
        answer = (await _planned_as_standard(clients, query, variables)).json()
        connection = answer["data"]["sessions"]["edges"][0]["node"]["discrepancies"]
        seen.append((connection["totalCount"], len(connection["edges"])))
    assert seen[0] == (9, 3)  # 5 left after the 4th: a page of 3
    assert seen[1] == (3, 3)
    assert seen[2][0] == 6


async def test_each_row_fills_its_own_dictionary_across_parents_and_selections(
    seed: Seeder, clients: dict[PlanMode, httpx.AsyncClient]
) -> None:
    """The runner loads every level before it creates any dictionary, then pairs rows
    with dictionaries by order: parents with no child rows, a missing ``latestResult``,
    two node selections of one page and an aliased second page must each get their
    own rows (a shifted pairing puts one session's discrepancies under another)."""
    await seed.full("pair-a", n_discrepancies=3)
    await seed.session("pair-empty")
    await seed.full("pair-b", n_discrepancies=1, n_tests=0)
    query = """{ sessions(first: 5) { nodes { requestId latestResult { id }
        discrepancies(first: 2) { nodes { id session { requestId } }
            edges { node { id description } } }
        one: discrepancies(first: 1) { nodes { session { requestId } } }
        behavioralTests { session { requestId } } } } }"""
    sessions = (await _planned_as_standard(clients, query)).json()["data"]["sessions"]["nodes"]
    assert [s["requestId"] for s in sessions] == ["pair-b", "pair-empty", "pair-a"]
    assert [s["latestResult"] is None for s in sessions] == [False, True, False]
    for s in sessions:
        page = s["discrepancies"]
        assert len(page["nodes"]) == {"pair-a": 2, "pair-b": 1, "pair-empty": 0}[s["requestId"]]
        assert [n["id"] for n in page["nodes"]] == [e["node"]["id"] for e in page["edges"]]
        owners = [n["session"]["requestId"] for n in page["nodes"] + s["one"]["nodes"]]
        owners += [t["session"]["requestId"] for t in s["behavioralTests"]]
        assert set(owners) <= {s["requestId"]}
    assert len(sessions[2]["behavioralTests"]) == 2


async def test_arguments_with_variables_are_converted_per_run(
    seed: Seeder, clients: dict[PlanMode, httpx.AsyncClient]
) -> None:
    """Plans keep the converted arguments of relations written without variables;
    a variable anywhere in a relation's arguments (nested in a list of an input
    object too) is read again in every run."""
    await seed.full("vars", n_discrepancies=6)  # 2 each of CRITICAL, WARNING, INFO
    query = """query($sev: SeverityLevel!, $n: Int!) { sessions(first: 5) { edges { node {
        fixed: discrepancies(first: 1, filter: {severity: [INFO]}) { totalCount }
        nested: discrepancies(first: 5, filter: {severity: [$sev]}) { totalCount
            nodes { severity } }
        paged: discrepancies(first: $n) { nodes { id } } } } } }"""
    answers = []
    for variables in ({"sev": "CRITICAL", "n": 1}, {"sev": "WARNING", "n": 3}):
        planned = await _planned_as_standard(clients, query, variables)
        answers.append(planned.json()["data"]["sessions"]["edges"][0]["node"])
    assert [a["fixed"]["totalCount"] for a in answers] == [2, 2]
    assert [{n["severity"] for n in a["nested"]["nodes"]} for a in answers] == [
        {"CRITICAL"},
        {"WARNING"},
    ]
    assert [len(a["paged"]["nodes"]) for a in answers] == [1, 3]


@settings(max_examples=300, deadline=None, database=None)
@given(
    type_name=st.sampled_from(["Discrepancy", "ValidationSession", "Odd Type>", "x_1"]),
    value=st.one_of(st.integers(), st.text(max_size=8), st.booleans()),
)
def test_leaf_writers_write_global_ids_as_to_global_id(type_name: str, value: Any) -> None:
    """The writers' inline global ids (bytes formatting, no translation for word
    types and int ids; the general form otherwise) equal ``to_global_id``'s."""
    write = leaf_writer([("id", 0, GlobalIdOf(type_name), True)], NullValue)
    out: dict[str, Any] = {}
    write([(value,)], [out])
    assert out == {"id": to_global_id(type_name, value)}


# --------------------------------------------------------------- generated documents

SCALARS = {
    "ValidationSession": [
        "id", "databaseId", "requestId", "status", "sourceTechnology", "targetTechnology",
        "validationScope", "sourceMetadata", "sourceUrls", "behavioralTimeout",
        "executionTime", "sessionMetadata", "createdAt", "updatedAt",
    ],
    "ValidationResult": [
        "id", "databaseId", "overallStatus", "fidelityScore", "summary", "executionTime",
        "resultMetadata", "resultType", "createdAt",
    ],
    "Discrepancy": [
        "id", "databaseId", "discrepancyType", "severity", "description", "sourceElement",
        "confidence", "componentType", "validationContext", "isResolved", "resolvedAt",
        "resolvedBy", "version", "createdAt",
    ],
    "BehavioralTestResult": [
        "id", "databaseId", "scenarioName", "executionStatus", "interactionLog",
        "sourceLoadTime", "errorMessage", "createdAt",
    ],
}  # fmt: skip
# (field, target type, kind, arguments)
RELATIONS: dict[str, list[tuple[str, str, str, str]]] = {
    "ValidationSession": [
        ("results", "ValidationResult", "list", ""),
        ("latestResult", "ValidationResult", "one", ""),
        ("discrepancies", "Discrepancy", "page", "first"),
        ("behavioralTests", "BehavioralTestResult", "list", ""),
    ],
    "ValidationResult": [
        ("session", "ValidationSession", "one", ""),
        ("discrepancies", "Discrepancy", "list", ""),
    ],
    "Discrepancy": [
        ("session", "ValidationSession", "one", ""),
        ("result", "ValidationResult", "one", ""),
    ],
    "BehavioralTestResult": [("session", "ValidationSession", "one", "")],
}
CONNECTIONS = {
    "ValidationSession": "ValidationSessionConnection",
    "Discrepancy": "DiscrepancyConnection",
    "BehavioralTestResult": "BehavioralTestResultConnection",
}
BAD_CURSOR = "bm90LWEtY3Vyc29y"


@st.composite
def _alias(draw: st.DrawFn, name: str) -> str:
    alias = draw(st.sampled_from(["", "", "", "a_", "b_"]))
    return f"{alias}{name}: {name}" if alias else name


@st.composite
def _object(draw: st.DrawFn, type_name: str, depth: int) -> str:
    parts = [
        draw(_alias(f)) for f in draw(st.lists(st.sampled_from(SCALARS[type_name]), max_size=4))
    ]
    if draw(st.booleans()):
        parts.append("__typename")
    if depth > 0:
        for field, target, kind, args in draw(
            st.lists(st.sampled_from(RELATIONS[type_name]), max_size=2, unique=True)
        ):
            inner = draw(
                _connection(target, depth - 1) if kind == "page" else _object(target, depth - 1)
            )
            arguments = f"(first: {draw(st.integers(0, 3))})" if args else ""
            parts.append(f"{draw(_alias(field))}{arguments} {inner}")
    if not parts:
        parts.append("id")
    wrap = draw(st.sampled_from(["plain", "plain", "inline", "node"]))
    body = " ".join(parts)
    if wrap == "inline":
        body = f"... on {type_name} {{ {body} }}"
    elif wrap == "node":
        body = f"id ... on Node {{ id }} {body}"
    return "{ " + body + " }"


@st.composite
def _connection(draw: st.DrawFn, type_name: str, depth: int) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append("totalCount")
    if draw(st.booleans()):
        parts.append("pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }")
    if draw(st.booleans()):
        cursor = "cursor " if draw(st.booleans()) else ""
        parts.append(f"edges {{ {cursor}node {draw(_object(type_name, depth))} }}")
    if draw(st.booleans()) or not parts:
        parts.append(f"nodes {draw(_object(type_name, depth))}")
    if draw(st.booleans()):
        parts.append("__typename")
    return "{ " + " ".join(parts) + " }"


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[str, Any] | None]:
    root = draw(st.sampled_from(["sessions", "discrepancies", "behavioralTests", "session"]))
    depth = draw(st.integers(0, 2))
    variables: dict[str, Any] | None = None
    if root == "session":
        request_id = draw(st.sampled_from(["diff-0", "diff-1", "missing"]))
        return (
            f'{{ session(requestId: "{request_id}") {draw(_object("ValidationSession", depth))} }}',
            None,
        )
    type_name = {"sessions": "ValidationSession", "discrepancies": "Discrepancy",
                 "behavioralTests": "BehavioralTestResult"}[root]  # fmt: skip
    args = [f"first: {draw(st.integers(0, 4))}"]
    after = draw(st.sampled_from([None, None, BAD_CURSOR, "$after"]))
    if after == "$after":
        variables = {"after": None}
        args.append("after: $after")
    elif after:
        args.append(f'after: "{after}"')
    if root == "sessions" and draw(st.booleans()):
        args.append("orderBy: {field: UPDATED_AT, direction: ASC}")
    if root == "discrepancies" and draw(st.booleans()):
        args.append("filter: {isResolved: false, severities: [CRITICAL, INFO]}")
    header = "query($after: String)" if variables is not None else "query"
    body = f"{header} {{ {root}({', '.join(args)}) {draw(_connection(type_name, depth))} }}"
    return body, variables


@pytest.fixture
async def seeded_for_diff(seed: Seeder) -> None:
    for i in range(3):
        s = await seed.full(f"diff-{i}", n_discrepancies=4, n_tests=1, source_metadata={"k": i})
        await seed.result(s, [discrepancy_values(9, severity="INFO")], fidelity_score=0.5)


DOCUMENTS = examples(documents(), 80)


async def test_generated_documents_answer_identically(
    seeded_for_diff: None, clients: dict[PlanMode, httpx.AsyncClient]
) -> None:
    assert len(DOCUMENTS) >= 50
    before = STATS["planned"]
    for query, variables in DOCUMENTS:
        planned = await _post(clients[PlanMode.ON], query, variables)
        standard = await _post(clients[PlanMode.OFF], query, variables)
        assert planned.status_code == standard.status_code, query
        assert planned.content == standard.content, query
    # most of them were really served by plans (the rest fell back: bad cursors)
    assert STATS["planned"] - before >= len(DOCUMENTS) // 2


@pytest.mark.postgres_only
async def test_a_failed_batch_is_reported_as_standard_execution_reports_it(
    db_factory: DbFactory, database_url: str, seed: Seeder
) -> None:
    """A plan's batch that fails on the run's shared read session (here: a statement
    timeout behind a table lock) gives the answer standard execution gives, and the
    fallback does not read it again (a read is not retried behind the client's back)."""
    for i in range(2):
        await seed.full(f"locked-{i}", n_discrepancies=2, n_tests=1)
    impatient = db_factory(statement_timeout_ms=300)
    texts: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        texts.append(statement)

    event.listen(impatient.engine.sync_engine, "before_cursor_execute", before)
    bodies: dict[PlanMode, bytes] = {}
    reads: dict[PlanMode, int] = {}
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        async with admin.transaction():
            await admin.execute("LOCK TABLE validation_discrepancies IN ACCESS EXCLUSIVE MODE")
            for mode in (PlanMode.ON, PlanMode.OFF):
                settings = AppSettings(execution_plans=mode)
                async with app_client(impatient, settings) as client:
                    texts.clear()
                    response = await _post(client, DASHBOARD)
                assert response.status_code == 200
                bodies[mode] = response.content
                reads[mode] = sum("validation_discrepancies" in t for t in texts)
    finally:
        await admin.close()
        event.remove(impatient.engine.sync_engine, "before_cursor_execute", before)

    assert bodies[PlanMode.ON] == bodies[PlanMode.OFF]
    errors = json.loads(bodies[PlanMode.ON])["errors"]
    assert errors
    assert {e["extensions"]["code"] for e in errors} == {"SERVICE_UNAVAILABLE"}
    assert {e["path"][-1] for e in errors} == {"discrepancies"}
    assert reads == {PlanMode.ON: 1, PlanMode.OFF: 1}
