"""Run a compiled plan: breadth first, one loader batch per loader per level, then the
answer built in one synchronous sweep, leaf values written straight into the response
dictionaries.

Each level gathers the keys of all its relations per loader and calls that loader's
batch function once with the distinct keys (the function a DataLoader would call, so
the same statement), without a future per key; the batches run one after the other
on one read session (``Loaders.one_session``: one connection checkout per run, not one
per batch). Only rows are kept between the awaits: the dictionaries of the answer are
created and filled after the last batch, with no await until the response is encoded,
so they are still in the CPU's caches when the encoder reads them (built level by
level between awaits, under concurrency, encoding alone cost about twice as much).
Anything standard execution would answer with an error (a null in a non-null field, a
value a scalar refuses, a missing role, bad arguments) raises ``Unsupported`` or the
original exception: the caller then falls back to standard execution, which produces
the error.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLInt
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.dataloader import DataLoader
from strawberry.types.arguments import convert_arguments

from graph.context import Context
from graph.plan.compiler import (
    ROW_COLUMNS,
    ConnectionPlan,
    NullValue,
    ObjectPlan,
    Plan,
    RelationPlan,
    Unsupported,
)
from graph.plan.serialize import serializer
from graph.settings import PlanMode
from persistence.driver_reads import Decoding, row_type
from persistence.errors import ServiceUnavailable, ValidationFailed
from persistence.pagination import Page, encode_cursor
from persistence.records import Record

Out = dict[str, Any]
# Batches a run loaded: (loader, keys, values in key order or the batch's error).
Loads = list[tuple[DataLoader[Any, Any], list[Any], Sequence[Any] | Exception]]
_int = serializer(GraphQLInt)
# Errors of a read that do not depend on the columns it reads (an unreachable or busy
# database, a canceled statement, an unstorable lookup value): a failed narrow batch
# with one of these is cached as failed for standard execution too. Anything else (a
# bug in a narrow statement, say) is left for its whole-row read to meet or not.
_NOT_OF_COLUMNS = (ServiceUnavailable, ValidationFailed)


@dataclass(slots=True)
class _Level:
    """Rows of one object selection at one level, and the dictionaries they fill (one
    per row, in row order, created by the sweep)."""

    plan: ObjectPlan
    rows: list[Any]
    decoding: Decoding | None = None  # set: the rows are raw driver records
    outs: list[Out] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    relation: RelationPlan
    parent: _Level
    keys: list[Any]  # per parent row; None: no row (nullable foreign key)
    arguments: dict[str, Any]
    loader: DataLoader[Any, Any]
    standard: DataLoader[Any, Any]  # the loader standard execution reads these keys with
    blank: tuple[int, ...] = ()  # verify mode: columns a narrow read would not return
    values: Sequence[Any] = ()  # once loaded: the value of each key that is not None


# One level of a run: its object selections, the relations they load, and the next
# level's selections by ``_level_of`` key.
_Step = tuple[list[_Level], list[_Job], dict[Any, _Level]]


async def run_plan(
    plan: Plan,
    schema: Any,
    context: Context,
    raw_variables: dict[str, Any] | None,
    loads: "Loads",
) -> Out:
    """The response ``data`` of ``plan``; raises when standard execution must answer.
    Every batch loaded is added to ``loads`` (see ``prime``)."""
    if not all(context.actor.has_role(role) for role in plan.roles):
        raise Unsupported  # standard execution answers FORBIDDEN where it applies
    variables: Any = get_variable_values(
        schema._schema, plan.variable_definitions, raw_variables or {}
    )
    if isinstance(variables, list):  # coercion errors: standard execution reports them
        raise Unsupported
    root = _Level(plan.root, [None])
    steps: list[_Step] = []
    levels = [root]
    async with context.loaders.one_session():
        while levels:
            jobs = [
                _start(relation, level, variables, schema, context)
                for level in levels
                for relation in level.plan.relations
            ]
            merged: dict[Any, _Level] = {}
            steps.append((levels, jobs, merged))
            if not jobs:
                break
            loaded = await _load(jobs, loads)
            for job in jobs:
                found = loaded[id(job.loader)]
                job.values = [found[key] for key in job.keys if key is not None]
                _queue(job, merged)
            levels = [level for level in merged.values() if level.rows]
    # The sweep: everything is loaded; no await from here to the encoder.
    data = plan.root.template.copy()
    root.outs.append(data)
    for levels, jobs, merged in steps:
        for level in levels:
            write = level.plan.writer(level.decoding)
            if write is not None:  # None: the root (no row), selections of relations only
                write(level.rows, level.outs)
        for job in jobs:
            _attach(job, merged)
    return data


def _start(
    relation: RelationPlan, level: _Level, variables: Any, schema: Any, context: Context
) -> _Job:
    arguments = relation.converted.get("")
    if arguments is None:
        raw = get_argument_values(relation.field_def, relation.node, variables)
        arguments = convert_arguments(
            raw,
            relation.strawberry_field.arguments,
            scalar_registry=schema.schema_converter.scalar_registry,
            config=schema.config,
        )
        if relation.static_arguments:
            relation.converted[""] = arguments
    fetch = relation.fetch
    if fetch.parent is None:
        keys = [fetch.key(None, arguments) for _ in level.rows]
    else:
        parent = fetch.parent
        keys = []
        rows = level.rows if level.decoding is None else level.decoding.make(level.rows)
        for row in rows:
            parent_id = getattr(row, parent)
            keys.append(None if parent_id is None else fetch.key(parent_id, arguments))
    loaders, columns = context.loaders, relation.columns
    standard = fetch.loader(loaders)
    if fetch.narrow is None or columns is None:
        return _Job(relation, level, keys, arguments, standard, standard)
    if context.plan_mode is not PlanMode.VERIFY:
        narrow = loaders.narrow(fetch.narrow, columns)
        return _Job(relation, level, keys, arguments, narrow, standard)
    # Verify mode reads whole rows, shared with standard execution (one snapshot, no
    # second read), and blanks what the narrow read would not return: a column the
    # plan forgot still shows up as a difference.
    blank = tuple(i for i, c in enumerate(ROW_COLUMNS[fetch.target]) if c not in columns)
    return _Job(relation, level, keys, arguments, standard, standard, blank)


async def _load(jobs: Sequence[_Job], loads: Loads) -> dict[int, dict[Any, Any]]:
    """Per loader (by id): its value for each key the jobs need, one batch each."""
    wanted: dict[int, tuple[_Job, dict[Any, None]]] = {}
    for job in jobs:
        keys = wanted.setdefault(id(job.loader), (job, {}))[1]
        keys.update(dict.fromkeys(key for key in job.keys if key is not None))
    batches = [(ident, list(keys), job) for ident, (job, keys) in wanted.items()]
    # One after the other: they share the run's read session (Loaders.one_session).
    results = [await _batch(job, k, loads) for _, k, job in batches]
    return {
        ident: dict(zip(keys, values, strict=True))
        for (ident, keys, _), values in zip(batches, results, strict=True)
    }


async def _batch(job: _Job, keys: list[Any], loads: Loads) -> Sequence[Any]:
    if not keys:
        return []
    loader = job.loader
    try:
        values = await loader.load_fn(keys)
    except Exception as error:
        loads.append((loader, keys, error))
        if job.standard is not loader and isinstance(error, _NOT_OF_COLUMNS):
            loads.append((job.standard, keys, error))  # the whole row's read fails alike
        raise
    if any(isinstance(value, BaseException) for value in values):
        raise Unsupported  # a per-key error: standard execution reports it
    loads.append((loader, keys, values))
    return values


def prime(loads: Loads) -> None:
    """Cache what a run loaded in its loaders, as loads would have: standard execution
    after a fallback (or in verify mode) then reads it from the request's loaders
    instead of the database, and a batch that failed fails there the same way (a
    read is not retried behind the client's back). Only then: a future per key."""
    for loader, keys, outcome in loads:
        if not isinstance(outcome, Exception):
            loader.prime_many(dict(zip(keys, outcome, strict=True)))
            continue
        for key in keys:
            if loader.cache_map.get(key) is None:
                failed: asyncio.Future[Any] = loader.loop.create_future()
                failed.set_exception(outcome)
                failed.exception()  # retrieved: no "never retrieved" warning if unused
                loader.cache_map.set(key, failed)


def _queue(job: _Job, merged: dict[Any, _Level]) -> None:
    """Queue the loaded rows as the next level's (``_attach`` gives them their
    dictionaries later, walking them in the same order)."""
    relation = job.relation
    child = relation.child
    kind = relation.fetch.kind
    if kind == "page":
        if not isinstance(child, ConnectionPlan) or relation.fetch.sort_value is None:
            raise Unsupported
        node_plans = child.node_plans
        for page in job.values:
            rows = _blanked(page.items, job.blank)
            for node_plan in node_plans:
                _level_of(node_plan, merged, page.decoding).rows.extend(rows)
        return
    if not isinstance(child, ObjectPlan):
        raise Unsupported
    level = _level_of(child, merged)
    if kind == "one":
        rows = [row for row in job.values if row is not None]
        if relation.non_null and len(rows) < len(job.keys):  # no key or no row
            raise NullValue
        level.rows.extend(_blanked(rows, job.blank))
        return
    for rows in job.values:
        level.rows.extend(_blanked(rows, job.blank))


def _attach(job: _Job, merged: dict[Any, _Level]) -> None:
    """Put the dictionaries of the loaded rows into their parents' (one per row
    ``_queue`` queued, in its order)."""
    relation = job.relation
    name = relation.key
    child = relation.child
    outs = job.parent.outs
    if isinstance(child, ConnectionPlan):  # a page per parent (``_queue`` checked)
        sort_value = relation.fetch.sort_value
        if sort_value is None:
            raise Unsupported
        had_after = job.arguments.get("after") is not None
        pages = iter(job.values)
        for out, key in zip(outs, job.keys, strict=True):
            out[name] = _connection(child, next(pages), sort_value(key), had_after, merged)
        return
    level = _level_of(child, merged)
    copy = child.template.copy
    if relation.fetch.kind == "one":
        found = iter(job.values)
        for out, key in zip(outs, job.keys, strict=True):
            row = None if key is None else next(found)
            if row is None:
                out[name] = None
                continue
            out[name] = item = copy()
            level.outs.append(item)
        return
    for out, rows in zip(outs, job.values, strict=True):
        items = [copy() for _ in rows]
        out[name] = items
        level.outs.extend(items)


def _level_of(
    plan: ObjectPlan, merged: dict[Any, _Level], decoding: Decoding | None = None
) -> _Level:
    """The next level's rows of ``plan`` (raw records of one decoding apart)."""
    key = id(plan) if decoding is None else (id(plan), id(decoding))
    level = merged.get(key)
    if level is None:
        level = merged[key] = _Level(plan, [], decoding)
    return level


def _connection(
    plan: ConnectionPlan,
    page: Page[Record],
    sort_value: Any,
    had_after: bool,
    merged: dict[Any, _Level],
) -> Out:
    out = plan.template.copy()
    rows = list(page.items)
    decoding = page.decoding
    cursors = []
    if plan.needs_cursors:
        decoded = rows if decoding is None else decoding.make(rows)
        cursors = [encode_cursor(sort_value(row), row.id) for row in decoded]
    for key in plan.total_keys:
        out[key] = _int(page.total_count)

    def nodes(node_plan: ObjectPlan) -> list[Out]:
        """The page's node dictionaries of ``node_plan`` (called in ``node_plans``
        order, as ``_queue`` queued their rows)."""
        copy = node_plan.template.copy
        items = [copy() for _ in rows]
        _level_of(node_plan, merged, decoding).outs.extend(items)
        return items

    for key, node_plan in plan.nodes:
        out[key] = nodes(node_plan)
    for key, edge_plan in plan.edges:
        if len(edge_plan.template) == 1 and len(edge_plan.nodes) == 1:  # { node { ... } }
            node_key, node_plan = edge_plan.nodes[0]
            out[key] = [{node_key: item} for item in nodes(node_plan)]
            continue
        copy = edge_plan.template.copy
        edges = [copy() for _ in rows]
        out[key] = edges
        for cursor_key in edge_plan.cursor_keys:
            for edge, cursor in zip(edges, cursors, strict=True):
                edge[cursor_key] = cursor
        for node_key, node_plan in edge_plan.nodes:
            for edge, item in zip(edges, nodes(node_plan), strict=True):
                edge[node_key] = item
    if plan.page_infos:
        values = {
            "hasNextPage": page.has_next_page,
            "hasPreviousPage": had_after,
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
        }
        for key, info_plan in plan.page_infos:
            info = info_plan.template.copy()
            for info_key, field_name in info_plan.entries:
                info[info_key] = values[field_name]
            out[key] = info
    return out


def _blanked(rows: Sequence[Any], blank: tuple[int, ...]) -> Sequence[Any]:
    """``rows`` with the columns at ``blank`` set to None (verify mode only)."""
    if not blank:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for index in blank:
            values[index] = None
        out.append(row_type(tuple(row._fields))(values))
    return out
