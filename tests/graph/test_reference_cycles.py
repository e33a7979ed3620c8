"""A request leaves no reference cycles among migval's, Strawberry's, graphql-core's or
SQLAlchemy's objects: what it allocated is freed by reference counting once the
response is sent. A cycle anywhere near the execution context (a validation rule class
made per request did it) kept the whole response tree alive until the cyclic garbage
collector ran, several times per dashboard request; `migval serve` now raises the
collector's threshold (graph/cli.py), which is only safe while requests make no cycles.
"""

import gc
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import ASTValidationRule
from graphql.execution import Executor

from tests.graph.conftest import Gql, Seeder, data_of
from tests.graph.test_mutations import RECORD, discrepancy_input, result_input
from tests.graph.test_statement_counts import DASHBOARD

# Top-level packages whose objects a request must not leave in cycles (the test's own
# httpx client, asyncio and builtins are not ours to judge). Not graphql-core: its
# executor refers to itself through bound methods (``async_helpers``) and its validation
# rules to their validation context, so standard execution and an uncached validation
# leave them (Strawberry's and migval's subclasses too) in cycles, not the response.
SERVER_PACKAGES = {"graph", "persistence", "strawberry", "sqlalchemy", "starlette"}
GRAPHQL_CORE_CYCLIC = (Executor, ASTValidationRule)


def _package(obj: object) -> str:
    if isinstance(obj, GRAPHQL_CORE_CYCLIC):
        return "graphql"
    module = obj.__module__ if isinstance(obj, type) else type(obj).__module__
    return str(module).partition(".")[0]


async def _cyclic_garbage(request: Callable[[], Awaitable[dict[str, Any]]]) -> list[object]:
    """Objects only the cyclic collector would free, after one ``request``."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        data_of(await request())
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def _ours(garbage: list[object]) -> list[str]:
    return sorted({repr(type(o)) for o in garbage if _package(o) in SERVER_PACKAGES})


async def test_dashboard_query_leaves_no_cycles(read_gql: Gql, seed: Seeder) -> None:
    for i in range(3):
        await seed.full(f"cycles-{i}", n_discrepancies=3, n_tests=2)
    await read_gql(DASHBOARD)  # caches filled (plans, statements): kept, not garbage

    garbage = await _cyclic_garbage(lambda: read_gql(DASHBOARD))

    assert _ours(garbage) == []
    # the response tree itself was freed by reference counting
    assert not [o for o in garbage if type(o) is dict and ("sessions" in o or "node" in o)]


async def test_bulk_mutation_leaves_no_cycles(gql: Gql, seed: Seeder) -> None:
    await seed.session("cycles")
    items = [discrepancy_input(i) for i in range(50)]

    def record() -> Awaitable[dict[str, Any]]:
        return gql(RECORD, {"input": result_input({"requestId": "cycles"}, discrepancies=items)})

    data_of(await record())  # first write: caches filled

    garbage = await _cyclic_garbage(record)

    assert _ours(garbage) == []
