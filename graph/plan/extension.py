"""The schema extension that serves validated read queries through compiled plans.

It runs at the execute step, after parsing, the query limits and validation, so every
limit applies to planned queries exactly as to the others. With a plan, it sets the
result and Strawberry skips standard execution; without one (unsupported document, a
role missing, any error), standard execution runs as if plans did not exist. In
``verify`` mode it runs the plan first, lets standard execution answer from the same
request loaders (so from the same rows, with no extra statements), and logs any
difference between the two responses.
"""

import json
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from graph.context import Context
from graph.document_cache import LRU
from graph.plan.compiler import NullValue, Plan, Unsupported, compile_plan
from graph.plan.runner import Loads, prime, run_plan
from graph.settings import PlanMode

log = logging.getLogger("migval.plan")

# Queries served by a plan, fallen back from one (an error to report, a role missing),
# or without a plan (unsupported shape); the tests read it.
STATS: Counter[str] = Counter()


class Mismatches:
    """Differences found in verify mode: how many, and the latest few described (the
    test suite fails on any; see tests/conftest.py)."""

    def __init__(self, keep: int = 50) -> None:
        self.count = 0
        self.recent: deque[str] = deque(maxlen=keep)

    def add(self, description: str) -> None:
        self.count += 1
        self.recent.append(description)


MISMATCHES = Mismatches()


# Compiled plans by schema, document text and operation name; False: not supported.
PLANS: LRU[tuple[object, str, str | None], Plan | bool] = LRU()


def cached_plan(schema: Any, document: Any, query: str, operation: str | None) -> Plan | None:
    key = (schema, query, operation)  # the schema itself: an id could be reused
    entry = PLANS.get(key)
    if entry is None:
        entry = compile_plan(schema, document, operation) or False
        PLANS.put(key, entry)
    return entry if isinstance(entry, Plan) else None


class ExecutionPlans(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        context = ctx.context
        data: dict[str, Any] | None = None
        read_null = False  # the plan gave up on a null in a non-null field
        mode = context.plan_mode if isinstance(context, Context) else PlanMode.OFF
        if (
            mode is not PlanMode.OFF
            and isinstance(context, Context)
            and ctx.graphql_document is not None
            and ctx.query is not None
            and ctx.operation_type is OperationType.QUERY
        ):
            plan = cached_plan(ctx.schema, ctx.graphql_document, ctx.query, ctx.operation_name)
            if plan is None:
                STATS["unsupported"] += 1
            else:
                loads: Loads = []
                try:
                    data = await _attempt(plan, ctx.schema, context, ctx.variables, loads)
                except NullValue:
                    read_null = True
                STATS["fallback" if data is None else "planned"] += 1
                if data is None or mode is PlanMode.VERIFY:  # standard execution runs
                    prime(loads)
        if data is not None and mode is PlanMode.ON:
            ctx.result = GraphQLExecutionResult(data=data, errors=None)
        yield
        if data is not None and mode is PlanMode.VERIFY:
            _compare(ctx.query or "", data, ctx.result)
        elif read_null and mode is PlanMode.VERIFY and not getattr(ctx.result, "errors", None):
            # Standard execution found a value where the plan read null: the plan's
            # narrow read (or its row) lacked a column it writes.
            MISMATCHES.add(f"execution plan read a null for {ctx.query!r}; standard did not")


async def _attempt(
    plan: Plan, schema: Any, context: Context, variables: dict[str, Any] | None, loads: Loads
) -> dict[str, Any] | None:
    try:
        return await run_plan(plan, schema, context, variables, loads)
    except NullValue:
        raise
    except Unsupported:
        return None
    except Exception:  # standard execution answers it (and reports the error)
        log.debug("execution plan failed; standard execution answers", exc_info=True)
        return None


def _compare(query: str, planned: dict[str, Any], result: Any) -> None:
    standard = {"data": getattr(result, "data", None)}
    errors = getattr(result, "errors", None)
    if errors:
        standard["errors"] = [e.formatted for e in errors]
    expected = json.dumps(standard)
    actual = json.dumps({"data": planned})
    if expected != actual:
        message = f"execution plan differs from standard execution for {query!r}"
        MISMATCHES.add(f"{message}\nplan:     {actual[:2000]}\nstandard: {expected[:2000]}")
        log.error("%s", message)
