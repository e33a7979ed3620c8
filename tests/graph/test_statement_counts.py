"""SQL statements per GraphQL operation: they depend on the query's depth, never on the
number of rows (ARCHITECTURE.md, "DataLoaders"). The numbers are pinned.

Every statement the driver executes is recorded with ``before_cursor_execute``; after
each one, ``after_cursor_execute`` asks the driver connection itself whether the server
session is inside a transaction (asyncpg: ``is_in_transaction()``, from the protocol's
ReadyForQuery status; sqlite3: ``in_transaction``). asyncpg opens transactions without
going through a cursor, so this second check is what proves reads run outside one.

Reads are pinned twice: through execution plans and through standard execution (not
in verify mode, which runs both: plans read narrower rows than resolvers need, so the
two do not share what they load).
"""

import re
from typing import Any

import pytest

from graph.settings import AppSettings, PlanMode
from persistence.database import DatabaseManager
from tests.graph.conftest import (
    Gql,
    Seeded,
    Seeder,
    StatementLog,
    app_client,
    data_of,
    discrepancy_values,
    gid,
    make_gql,
    make_gql_raw,
)

DASHBOARD = """
{
  sessions(first: 50) {
    totalCount
    edges { node {
      id requestId
      results { id fidelityScore }
      latestResult { id }
      discrepancies(first: 20) { totalCount edges { node { id severity } } }
      behavioralTests { id executionStatus }
    } }
  }
}
"""
# the page of sessions (its rows carry the count), then one batch each: results, latest
# result, discrepancy pages (window function), behavioral tests.
DASHBOARD_STATEMENTS = 5

DEEP = """
{
  sessions(first: 50) {
    edges { node {
      results { session { id } }
      discrepancies(first: 20) { edges { node { session { id } result { id } } } }
      behavioralTests { session { latestResult { id } } }
    } }
  }
}
"""
# the page (with its count), then one batch each: results, discrepancy pages, behavioral
# tests, sessions by id (all three branches ask for the same sessions: the loader's
# cache answers the later ones), results by id, latest result.
DEEP_STATEMENTS = 7


async def _seed_dashboard(seed: Seeder, start: int, stop: int) -> list[Seeded]:
    return [
        await seed.full(f"dash-{i:03d}", n_discrepancies=21, n_tests=2) for i in range(start, stop)
    ]


async def _measure(gql: Gql, statements: StatementLog, query: str) -> dict[str, Any]:
    statements.clear()
    data = data_of(await gql(query))
    statements.assert_read_only_autocommit()
    return data


async def test_dashboard_statement_count_does_not_grow_with_rows(
    read_gql: Gql, seed: Seeder, statements: StatementLog
) -> None:
    gql = read_gql
    await _seed_dashboard(seed, 0, 5)
    small = await _measure(gql, statements, DASHBOARD)
    small_count = statements.count
    small_deep = await _measure(gql, statements, DEEP)
    small_deep_count = statements.count

    await _seed_dashboard(seed, 5, 50)
    large = await _measure(gql, statements, DASHBOARD)
    large_count = statements.count
    large_texts = list(statements.texts)
    large_deep = await _measure(gql, statements, DEEP)
    large_deep_count = statements.count

    # the answers really carry the rows (so the counts are of real work)
    assert small["sessions"]["totalCount"] == 5
    assert len(small["sessions"]["edges"]) == 5
    assert large["sessions"]["totalCount"] == 50
    assert len(large["sessions"]["edges"]) == 50
    for edge in large["sessions"]["edges"]:
        node = edge["node"]
        assert len(node["results"]) == 1
        assert node["latestResult"] == {"id": node["results"][0]["id"]}
        assert node["discrepancies"]["totalCount"] == 21
        assert len(node["discrepancies"]["edges"]) == 20
        assert len(node["behavioralTests"]) == 2
    assert len(large_deep["sessions"]["edges"]) == 50
    assert len(small_deep["sessions"]["edges"]) == 5
    deep_node = large_deep["sessions"]["edges"][0]["node"]
    assert len(deep_node["discrepancies"]["edges"]) == 20
    assert len(deep_node["behavioralTests"]) == 2

    assert small_count == large_count == DASHBOARD_STATEMENTS, large_texts
    assert small_deep_count == large_deep_count == DEEP_STATEMENTS
    # one statement for the root connection, its count inside; no per-row statement
    assert not any(t.lstrip().lower().startswith("select count(") for t in large_texts)
    assert sum("(SELECT count(*)" in t for t in large_texts) == 1
    from_sessions = re.compile(r"\sFROM validation_sessions\b", re.I)
    assert sum(bool(from_sessions.search(t)) for t in large_texts) == 1


async def test_listing_totals_come_with_the_page_or_count_alone_when_it_is_empty(
    read_gql: Gql, seed: Seeder, statements: StatementLog
) -> None:
    """A listing's rows carry its filtered total (one statement); a page with no row
    (past the last cursor) counts on its own (two); first: 0 still reads one row."""
    for i in range(3):
        await seed.session(f"total-{i}")
    end = data_of(await read_gql("{ sessions(first: 3) { pageInfo { endCursor } } }"))
    cursor = end["sessions"]["pageInfo"]["endCursor"]
    future = '"2999-01-01T00:00:00Z"'  # a filter nothing passes
    cases = [
        ("{ sessions(first: 2) { totalCount edges { node { requestId } } } }", 3, 2, 1),
        ("{ sessions(first: 0) { totalCount edges { node { requestId } } } }", 3, 0, 1),
        (
            f'{{ sessions(first: 2, after: "{cursor}") {{ totalCount edges {{ cursor }} }} }}',
            3,
            0,
            2,
        ),
        (f"{{ sessions(first: 2, filter: {{createdFrom: {future}}}) {{ totalCount }} }}", 0, 0, 2),
    ]
    for query, total, shown, count in cases:
        data = await _measure(read_gql, statements, query)
        assert data["sessions"]["totalCount"] == total, query
        assert len(data["sessions"].get("edges", [])) == shown, query
        assert statements.count == count, (query, statements.texts)


@pytest.mark.parametrize(
    ("mode", "checkouts"),
    # plans: every batch on one read session; standard execution: one per loader batch
    # (one statement each)
    [(PlanMode.ON, 1), (PlanMode.OFF, DASHBOARD_STATEMENTS)],
    ids=["plans", "standard"],
)
async def test_dashboard_connection_checkouts(
    db: DatabaseManager, seed: Seeder, statements: StatementLog, mode: PlanMode, checkouts: int
) -> None:
    await _seed_dashboard(seed, 0, 3)
    async with app_client(db, AppSettings(execution_plans=mode)) as c:
        gql = make_gql(make_gql_raw(c))
        data = await _measure(gql, statements, DASHBOARD)
    assert len(data["sessions"]["edges"]) == 3
    assert statements.count == DASHBOARD_STATEMENTS
    assert statements.checkouts == checkouts


async def test_node_statement_counts(read_gql: Gql, seed: Seeder, statements: StatementLog) -> None:
    gql = read_gql
    s = await seed.full("node", n_discrepancies=3, n_tests=1)
    discrepancy = gid("Discrepancy", s.discrepancy_ids[0])
    query = """
    query($id: ID!) {
      node(id: $id) { id ... on Discrepancy { session { id } result { id } } }
    }
    """
    statements.clear()
    node = data_of(await gql(query, {"id": discrepancy}))["node"]
    statements.assert_read_only_autocommit()
    assert node == {
        "id": discrepancy,
        "session": {"id": s.gid},
        "result": {"id": gid("ValidationResult", s.result_ids[0])},
    }
    assert statements.count == 3  # discrepancy, then its session and result (concurrently)

    statements.clear()
    session_query = "query($id: ID!) { node(id: $id) { id } }"
    data_of(await gql(session_query, {"id": s.gid}))
    statements.assert_read_only_autocommit()
    assert statements.count == 1

    # a malformed id costs nothing
    statements.clear()
    await gql(session_query, {"id": "garbage"})
    assert statements.count == 0

    statements.clear()
    by_request = data_of(await gql('{ session(requestId: "node") { id results { id } } }'))
    statements.assert_read_only_autocommit()
    assert by_request["session"]["id"] == s.gid
    assert statements.count == 2


CREATE = """
mutation($input: CreateValidationSessionInput!) {
  createValidationSession(input: $input) { created session { id } errors { code } }
}
"""
# statements of createValidationSession { session { id } } (a new session)
CREATE_STATEMENTS = {"sqlite": 3, "postgresql": 2}
CREATE_INPUT = {
    "requestId": "counted",
    "sourceTechnology": "PYTHON_FLASK",
    "targetTechnology": "JAVA_SPRING",
    "validationScope": "FULL_SYSTEM",
    "sourceInputType": "CODE_FILES",
    "targetInputType": "CODE_FILES",
}


def shape(texts: list[str]) -> list[str]:
    """Each statement as "VERB table" (e.g. "INSERT audit_log"), for readable pins."""
    out = []
    for text in texts:
        verb = text.split(None, 1)[0].upper()
        target = re.search(r"\b(?:INTO|FROM|UPDATE|COPY)\s+\"?(\w+)", text, re.I)
        out.append(f"{verb} {target.group(1)}" if target and verb != "BEGIN" else text.strip())
    return out


async def test_create_session_statement_count(
    gql: Gql, statements: StatementLog, db: DatabaseManager
) -> None:
    # SQLite: the write begins with an explicit BEGIN IMMEDIATE (a statement);
    # PostgreSQL: asyncpg opens the transaction itself (no cursor statement).
    begin = ["BEGIN IMMEDIATE"] if db.dialect == "sqlite" else []

    statements.clear()
    payload = data_of(await gql(CREATE, {"input": CREATE_INPUT}))["createValidationSession"]
    assert payload["created"] is True
    # INSERT ... ON CONFLICT DO NOTHING RETURNING, then its audit entry; the payload's
    # session { id } is built from the returned row (no read after the commit)
    assert shape(statements.texts) == [*begin, "INSERT validation_sessions", "INSERT audit_log"]
    assert statements.count == CREATE_STATEMENTS[db.dialect]
    # writes DO run inside a transaction: the in-transaction probe can say yes
    assert statements.in_transaction == [True] * statements.count

    # the idempotent replay: the INSERT does nothing, one SELECT finds the row, and
    # nothing changed so nothing is audited
    statements.clear()
    again = data_of(await gql(CREATE, {"input": CREATE_INPUT}))["createValidationSession"]
    assert again == {**payload, "created": False}
    assert shape(statements.texts) == [
        *begin,
        "INSERT validation_sessions",
        "SELECT validation_sessions",
    ]


RECORD = """
mutation($input: RecordValidationResultInput!) {
  recordValidationResult(input: $input) { result { id } errors { code field } }
}
"""


@pytest.mark.parametrize("n_discrepancies", [1, 300])
async def test_record_result_statement_count_does_not_grow_with_discrepancies(
    gql: Gql, seed: Seeder, statements: StatementLog, db: DatabaseManager, n_discrepancies: int
) -> None:
    s = await seed.session("rec")
    items = [
        {
            "discrepancyType": d["discrepancy_type"],
            "severity": "INFO",
            "description": d["description"],
        }
        for d in (discrepancy_values(i) for i in range(n_discrepancies))
    ]
    statements.clear()
    body = await gql(
        RECORD,
        {
            "input": {
                "sessionId": s.gid,
                "overallStatus": "APPROVED",
                "fidelityScore": 0.5,
                "summary": "ok",
                "discrepancies": items,
            }
        },
    )
    payload = data_of(body)["recordValidationResult"]
    assert payload["errors"] == []
    # the session exists? + the result + ONE bulk write of all discrepancies (a binary
    # COPY on PostgreSQL, in the same transaction) + audit
    bulk = (
        "INSERT validation_discrepancies"
        if db.dialect == "sqlite"
        else "COPY validation_discrepancies"
    )
    assert shape(statements.data_statements()) == [
        "SELECT validation_sessions",
        "INSERT validation_results",
        bulk,
        "INSERT audit_log",
    ]
    assert statements.transaction_control() == (
        ["BEGIN IMMEDIATE"] if db.dialect == "sqlite" else []
    )
