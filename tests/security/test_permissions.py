"""Roles on every field, deny by default.

- The schema walk fails when a root Query or Mutation field carries no role
  permission, or a different role than the one below.
- The matrix runs EVERY root operation (with nested fields, and node(id:) for every
  type) over HTTP as anonymous (production: 401), anonymous without a role
  (development), viewer, writer and admin: allowed operations succeed; refused ones
  are a top-level FORBIDDEN error (or 401) and leave every table as it was.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from strawberry.types.base import StrawberryObjectDefinition

from graph.permissions import RolePermission
from graph.schema import production_schema, schema
from graph.settings import AppSettings
from persistence.database import DatabaseManager
from persistence.enums import ROLE_RANK, Role
from tests.conftest import empty_tables
from tests.security.conftest import (
    DEVELOPMENT_NO_ANONYMOUS,
    PRODUCTION,
    Issue,
    MakeApi,
    Seed,
    seed_data,
    snapshot,
)

# The least role each root field needs. A new root field must be added here (and to
# OPERATIONS below): the tests fail until it is.
EXPECTED_ROLES: dict[str, dict[str, Role]] = {
    "Query": {
        "node": Role.VIEWER,
        "session": Role.VIEWER,
        "sessions": Role.VIEWER,
        "discrepancies": Role.VIEWER,
        "behavioralTests": Role.VIEWER,
        "metrics": Role.VIEWER,
        "discrepancyStats": Role.VIEWER,
        "auditLog": Role.ADMIN,
    },
    "Mutation": {
        "createValidationSession": Role.WRITER,
        "updateSessionStatus": Role.WRITER,
        "recordValidationResult": Role.WRITER,
        "recordBehavioralTestResults": Role.WRITER,
        "resolveDiscrepancy": Role.WRITER,
        "reopenDiscrepancy": Role.WRITER,
        "resolveDiscrepancies": Role.WRITER,
        "deleteSession": Role.ADMIN,
    },
}


# ------------------------------------------------------------------ schema walk


def _root_roles(root: str, which: Any = schema) -> dict[str, list[type]]:
    definition = which.get_type_by_name(root)
    assert isinstance(definition, StrawberryObjectDefinition)
    converter = which.config.name_converter
    return {
        converter.get_graphql_name(field): list(field.permission_classes)
        for field in definition.fields
    }


@pytest.mark.parametrize("which", [schema, production_schema()], ids=["schema", "production"])
@pytest.mark.parametrize("root", ["Query", "Mutation"])
def test_every_root_field_requires_a_role(root: str, which: Any) -> None:
    roles = _root_roles(root, which)
    graphql_type = which._schema.get_type(root)
    # every field graphql-core serves is one strawberry knows (and checked below)
    assert set(graphql_type.fields) == set(roles)
    unguarded = [name for name, perms in roles.items() if not perms]
    assert unguarded == [], f"{root} fields without permission_classes: {unguarded}"
    not_roles = [
        name
        for name, perms in roles.items()
        if not all(issubclass(p, RolePermission) for p in perms)
    ]
    assert not_roles == [], f"{root} fields guarded by something other than a role: {not_roles}"
    actual = {
        name: max((p.role for p in perms), key=ROLE_RANK.__getitem__)
        for name, perms in roles.items()
    }
    assert actual == EXPECTED_ROLES[root], (
        f"{root}: roles differ from EXPECTED_ROLES (a new field must be listed there)"
    )


def test_no_subscriptions_to_guard() -> None:
    assert schema._schema.subscription_type is None


# ----------------------------------------------------------------------- matrix


@dataclass(frozen=True)
class Op:
    label: str
    field: str
    build: Callable[[Seed], tuple[str, dict[str, Any]]]

    @property
    def mutation(self) -> bool:
        return self.field in EXPECTED_ROLES["Mutation"]

    @property
    def role(self) -> Role:
        return {**EXPECTED_ROLES["Query"], **EXPECTED_ROLES["Mutation"]}[self.field]


def _node(
    fragment: str, type_name: str, pick: Callable[[Seed], int]
) -> Callable[[Seed], tuple[str, dict[str, Any]]]:
    query = f"query($id: ID!) {{ node(id: $id) {{ id ... on {type_name} {{ {fragment} }} }} }}"
    return lambda s: (query, {"id": s.gid(type_name, pick(s))})


def _mutation(name: str, selection: str, make_input: Callable[[Seed], dict[str, Any]]) -> Op:
    input_type = {
        "createValidationSession": "CreateValidationSessionInput",
        "updateSessionStatus": "UpdateSessionStatusInput",
        "recordValidationResult": "RecordValidationResultInput",
        "recordBehavioralTestResults": "RecordBehavioralTestResultsInput",
        "resolveDiscrepancy": "ResolveDiscrepancyInput",
        "reopenDiscrepancy": "ReopenDiscrepancyInput",
        "resolveDiscrepancies": "ResolveDiscrepanciesInput",
        "deleteSession": "DeleteSessionInput",
    }[name]
    query = (
        f"mutation($input: {input_type}!) {{ {name}(input: $input) "
        f"{{ errors {{ code message }} {selection} }} }}"
    )
    return Op(name, name, lambda s: (query, {"input": make_input(s)}))


SESSION_TREE = (
    "requestId status results { summary discrepancies { description session { requestId } } } "
    "latestResult { fidelityScore } discrepancies(first: 5) { totalCount nodes { result { id } } } "
    "behavioralTests { scenarioName session { id } }"
)

OPERATIONS = [
    Op("node-session", "node", _node(SESSION_TREE, "ValidationSession", lambda s: s.session_id)),
    Op(
        "node-result",
        "node",
        _node(
            "summary session { requestId } discrepancies { description }",
            "ValidationResult",
            lambda s: s.result_id,
        ),
    ),
    Op(
        "node-discrepancy",
        "node",
        _node(
            "description session { requestId } result { summary }",
            "Discrepancy",
            lambda s: s.discrepancy_ids[0],
        ),
    ),
    Op(
        "node-behavioral-test",
        "node",
        _node("scenarioName session { requestId }", "BehavioralTestResult", lambda s: s.test_id),
    ),
    Op(
        "session",
        "session",
        lambda s: (
            f"query($r: String!) {{ session(requestId: $r) {{ {SESSION_TREE} }} }}",
            {"r": s.request_id},
        ),
    ),
    Op(
        "sessions",
        "sessions",
        lambda s: (
            "{ sessions(first: 5) { totalCount pageInfo { hasNextPage } "
            "edges { cursor node { requestId results { summary } } } } }",
            {},
        ),
    ),
    Op(
        "discrepancies",
        "discrepancies",
        lambda s: (
            "{ discrepancies { totalCount nodes { description session { requestId } "
            "result { summary } } } }",
            {},
        ),
    ),
    Op(
        "behavioralTests",
        "behavioralTests",
        lambda s: (
            "{ behavioralTests { totalCount nodes { scenarioName session { requestId } } } }",
            {},
        ),
    ),
    Op("metrics", "metrics", lambda s: ("{ metrics(period: DAILY) { id totalSessions } }", {})),
    Op(
        "discrepancyStats",
        "discrepancyStats",
        lambda s: (
            "{ discrepancyStats(groupBy: [SEVERITY]) { severity count resolvedCount } }",
            {},
        ),
    ),
    Op(
        "auditLog",
        "auditLog",
        lambda s: ("{ auditLog(first: 5) { totalCount nodes { operation actorName } } }", {}),
    ),
    _mutation(
        "createValidationSession",
        "created session { requestId }",
        lambda s: {
            "requestId": "sec-new",
            "sourceTechnology": "PYTHON_FLASK",
            "targetTechnology": "JAVA_SPRING",
            "validationScope": "FULL_SYSTEM",
            "sourceInputType": "CODE_FILES",
            "targetInputType": "CODE_FILES",
        },
    ),
    _mutation(
        "updateSessionStatus",
        "session { status }",
        lambda s: {"sessionId": s.gid("ValidationSession"), "status": "PROCESSING"},
    ),
    _mutation(
        "recordValidationResult",
        "result { summary discrepancies { description } }",
        lambda s: {
            "sessionId": s.gid("ValidationSession"),
            "overallStatus": "REJECTED",
            "fidelityScore": 0.5,
            "summary": "second opinion",
            "discrepancies": [
                {"discrepancyType": "logic", "severity": "CRITICAL", "description": "x"}
            ],
        },
    ),
    _mutation(
        "recordBehavioralTestResults",
        "tests { scenarioName }",
        lambda s: {
            "requestId": s.request_id,
            "tests": [
                {
                    "scenarioName": "checkout",
                    "sourceUrl": "http://source.example/checkout",
                    "targetUrl": "http://target.example/checkout",
                    "executionStatus": "FAILED",
                }
            ],
        },
    ),
    _mutation(
        "resolveDiscrepancy",
        "discrepancy { isResolved }",
        lambda s: {"id": s.gid("Discrepancy", s.discrepancy_ids[0]), "resolvedBy": "tester"},
    ),
    _mutation(
        "reopenDiscrepancy",
        "discrepancy { isResolved }",
        lambda s: {"id": s.gid("Discrepancy", s.discrepancy_ids[1]), "reopenedBy": "tester"},
    ),
    _mutation(
        "resolveDiscrepancies",
        "discrepancies { isResolved }",
        lambda s: {
            "ids": [
                s.gid("Discrepancy", s.discrepancy_ids[0]),
                s.gid("Discrepancy", s.discrepancy_ids[2]),
            ],
            "resolvedBy": "tester",
        },
    ),
    _mutation(
        "deleteSession",
        "deletedSessionId",
        lambda s: {"sessionId": s.gid("ValidationSession")},
    ),
]


@dataclass(frozen=True)
class Who:
    label: str
    settings: AppSettings
    role: Role | None  # the token's role; None: no Authorization header


ACTORS = [
    Who("anonymous-production", PRODUCTION, None),
    Who("anonymous-without-role", DEVELOPMENT_NO_ANONYMOUS, None),
    Who("viewer", PRODUCTION, Role.VIEWER),
    Who("writer", PRODUCTION, Role.WRITER),
    Who("admin", PRODUCTION, Role.ADMIN),
]


def test_the_matrix_covers_every_root_field() -> None:
    covered = {op.field for op in OPERATIONS}
    expected = set(EXPECTED_ROLES["Query"]) | set(EXPECTED_ROLES["Mutation"])
    assert covered == expected
    node_types = {op.label for op in OPERATIONS if op.field == "node"}
    assert len(node_types) == 4  # every addressable type (metrics have no node lookup)


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda o: o.label)
async def test_role_matrix(db: DatabaseManager, make_api: MakeApi, issue: Issue, op: Op) -> None:
    """Every actor on one operation, least privileged first; the data is seeded again
    after each allowed write (one reset per write keeps the matrix fast)."""
    seed = await seed_data(db)
    for who in ACTORS:
        wrote = await _check(db, make_api, issue, seed, op, who)
        if wrote and who is not ACTORS[-1]:
            await empty_tables(db)
            seed = await seed_data(db)


async def _check(
    db: DatabaseManager, make_api: MakeApi, issue: Issue, seed: Seed, op: Op, who: Who
) -> bool:
    """Run ``op`` as ``who`` and check the outcome; True if it wrote."""
    where = f"{op.label} as {who.label}"
    token = None if who.role is None else await issue(who.role, f"{who.label}-token")
    api = make_api(who.settings, token)
    query, variables = op.build(seed)
    before = await snapshot(db)
    response = await api.post(query, variables)

    if who.settings.auth_required and token is None:
        assert response.status_code == 401, where
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", where
        assert await snapshot(db) == before, where
        return False

    assert response.status_code == 200, (where, response.text)
    body = response.json()
    allowed = who.role is not None and ROLE_RANK[who.role] >= ROLE_RANK[op.role]
    if allowed:
        assert "errors" not in body, (where, body)
        value = body["data"][op.field]
        assert value is not None, where
        if op.mutation:
            assert value["errors"] == [], (where, value)
            assert await snapshot(db) != before, f"{where}: nothing written"
            return True
        assert await snapshot(db) == before, f"{where}: a read wrote"
        return False

    errors = body.get("errors") or []
    assert errors, (where, body)
    assert {e["extensions"]["code"] for e in errors} == {"FORBIDDEN"}, (where, errors)
    assert all("FORBIDDEN" in e["message"] for e in errors), where
    assert errors[0]["path"] == [op.field], where
    assert body["data"] is None or body["data"][op.field] is None, where
    assert await snapshot(db) == before, f"{where}: a refused request changed data"
    return False
