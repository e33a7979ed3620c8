"""What a request allocates is freed when it is answered. A reference cycle near the
execution context (a validation rule class made per request did it) kept the whole
response tree alive until the cyclic garbage collector ran, several times per
dashboard request. `migval serve` now runs the collector less often
(graph.app.tune_collector), so what requests leave to it must stay small:

- a planned read leaves nothing: its context, loaders and limits extension are freed
  by reference counting, and no server object is left in a cycle;
- standard execution leaves graphql-core's executor in a cycle (it refers to itself
  through bound methods, ``async_helpers``), with the context it was given; graphql-core's
  validation rules are cyclic with their validation context too. Those go at the next
  collection, and the response tree is not among them.
"""

import gc
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from graphql import ASTValidationRule
from graphql.execution import Executor

from graph.context import Context
from graph.limits import QueryLimits
from graph.loaders import Loaders
from graph.settings import PlanMode
from tests.graph.conftest import Gql, Seeder, data_of
from tests.graph.test_mutations import RECORD, discrepancy_input, result_input
from tests.graph.test_statement_counts import DASHBOARD

# Top-level packages of server objects (the test's own httpx client, asyncio and
# builtins are not ours to judge); graphql-core's cyclic parts are counted as its own.
SERVER_PACKAGES = {"graph", "persistence", "strawberry", "sqlalchemy", "starlette"}
GRAPHQL_CORE_CYCLIC = (Executor, ASTValidationRule)
# What one request creates and nothing may keep once it is answered.
PER_REQUEST = (Context, Loaders, QueryLimits)


def _alive() -> list[object]:
    return [o for o in gc.get_objects() if isinstance(o, PER_REQUEST)]


def _describe(obj: object) -> str:
    """``response`` for a piece of the response tree, ``module.Type`` for a server
    object, "" for anything else."""
    if type(obj) is dict and ("sessions" in obj or "node" in obj):
        return "response"
    if isinstance(obj, GRAPHQL_CORE_CYCLIC):
        return ""
    module = str(obj.__module__ if isinstance(obj, type) else type(obj).__module__)
    if module.partition(".")[0] not in SERVER_PACKAGES:
        return ""
    return f"{module}.{type(obj).__qualname__}"


async def _cyclic_garbage(
    request: Callable[[], Awaitable[dict[str, Any]]], *, refcounted: bool
) -> list[str]:
    """What only the cyclic collector would free after one ``request`` (``_describe``).
    With ``refcounted``, the request's context, loaders and limits extension must be
    gone before any collection; in any case after one."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert _alive() == []
        data_of(await request())
        if refcounted:
            assert _alive() == []
        gc.collect()
        found = sorted({_describe(o) for o in gc.garbage} - {""})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    gc.collect()
    assert _alive() == []  # nothing outlives a collection
    return found


async def test_dashboard_query_leaves_no_cycles(
    read_gql: Gql, seed: Seeder, request: pytest.FixtureRequest
) -> None:
    planned = request.node.callspec.params["read_gql"] is PlanMode.ON
    for i in range(3):
        await seed.full(f"cycles-{i}", n_discrepancies=3, n_tests=2)
    await read_gql(DASHBOARD)  # caches filled (plans, statements): kept, not garbage

    # cached parse, validation and plan; then a new text: parsed, validated, compiled
    for query in (DASHBOARD, f"{DASHBOARD}\n# {uuid.uuid4()}"):
        garbage = await _cyclic_garbage(lambda query=query: read_gql(query), refcounted=planned)

        if planned:
            assert garbage == []
        else:
            assert "response" not in garbage


async def test_bulk_mutation_leaves_no_cycles(gql: Gql, seed: Seeder) -> None:
    await seed.session("cycles")
    items = [discrepancy_input(i) for i in range(50)]

    def record() -> Awaitable[dict[str, Any]]:
        return gql(RECORD, {"input": result_input({"requestId": "cycles"}, discrepancies=items)})

    data_of(await record())  # first write: caches filled

    garbage = await _cyclic_garbage(record, refcounted=False)  # standard execution

    assert "response" not in garbage
    # the limits extension, its rule's variables (the whole input) with it, went at once
    assert [name for name in garbage if name.startswith("graph.limits")] == []
