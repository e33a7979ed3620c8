"""Fuzzing the GraphQL API over HTTP (issue "[reliability] 3 fuzzing").

Over a thousand generated operations per backend go to ``build_graphql_app(db)``, and a
sample of every kind to ``create_app()`` (middleware and lifespan included). Every
response must keep four promises:

1. no HTTP 5xx;
2. every GraphQL error carries ``extensions.code``;
3. no error text looks like a Python exception, a stack trace or SQL;
4. no ``INTERNAL_SERVER_ERROR``: bad input is a typed error, never a (masked) crash.

The operations (deterministic: Hypothesis with ``derandomize=True`` draws them up front,
then they are sent in order, so a failure names the exact request):

- ``queries`` / ``mutations``: hypothesis-graphql documents valid for the schema, with
  IDs and request ids of the seeded rows;
- ``invalid documents``: hypothesis-graphql's negative mode;
- ``hostile variables``: every root field with all of its arguments as variables:
  well-typed values, or hostile ones anywhere (wrong types, huge and negative numbers,
  NaN, unknown enum values, oversized strings, NUL, lone surrogates, random bytes);
- ``ids and cursors``: malformed global IDs and keyset cursors;
- ``bodies``: malformed requests (JSON, shapes, content types, methods);
- ``deep documents``: deep nesting, many aliases and tokens, fragment cycles and fans.

Known bugs are in ``KNOWN_BUGS``: each has a strict-xfail test reproducing it, and the
fuzz tests count it instead of failing. When one is fixed its xfail test fails (XPASS,
strict): delete that test and the ``KNOWN_BUGS`` entry.
"""

import base64
import binascii
import json
import re
import string
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import graphql
import httpx
import hypothesis_graphql as hg
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_required_argument,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import nodes

import persistence.crypto
from graph.app import create_app
from graph.ids import to_global_id
from graph.schema import build_graphql_app
from graph.schema import schema as strawberry_schema
from persistence.database import DatabaseManager
from persistence.pagination import encode_cursor
from tests.graph.conftest import Seeder

BASE_URL = "http://migval.test"
SCHEMA = graphql.build_schema(strawberry_schema.as_str())

# Operations each category sends per backend. Hypothesis may draw a few less than asked
# (duplicates); each test checks it sent at least 90%.
PLAN: Mapping[str, int] = {
    "queries": 250,
    "mutations": 150,
    "invalid documents": 120,
    "hostile variables": 300,
    "ids and cursors": 120,
    "bodies": 100,
    "deep documents": 55,
    "full app": 120,
}


def minimum(category: str) -> int:
    return PLAN[category] * 9 // 10


# ------------------------------------------------------------------- the promises

LEAK_MARKERS = (
    "Traceback",
    'File "',
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "sqlite3",
    "psycopg",
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "DELETE FROM",
    " WHERE ",
    "validation_sessions",
    "validation_discrepancies",
    "[SQL:",
    "(Background on this error",
)
PYTHON_EXCEPTION = re.compile(
    r"\b(?!UserError\b)[A-Z][A-Za-z]*(?:Error|Exception)\b|"
    r"object has no attribute|is not subscriptable|unexpected keyword argument|"
    r"positional argument|invalid literal for|unhashable type|NoneType|"
    r"codec can't (?:en|de)code|not supported between instances|"
    r"maximum recursion depth|object is not (?:callable|iterable)"
)
INTERNAL = "INTERNAL_SERVER_ERROR"


@dataclass(frozen=True)
class Exchange:
    """One request and its response, as the checks see them."""

    method: str
    path: str
    content_type: str | None
    body: bytes
    status: int
    response_text: str

    def describe(self) -> str:
        body = self.body if len(self.body) <= 600 else self.body[:600] + b"...(truncated)"
        text = self.response_text
        text = text if len(text) <= 600 else text[:600] + "...(truncated)"
        return (
            f"{self.method} {self.path} content-type={self.content_type!r}\n"
            f"    request body: {body!r}\n    response: {self.status} {text}"
        )


def leaks(text: str) -> str | None:
    for marker in LEAK_MARKERS:
        if marker.lower() in text.lower():
            return f"contains {marker!r}"
    match = PYTHON_EXCEPTION.search(text)
    return f"looks like a Python exception ({match.group(0)!r})" if match else None


def violations(exchange: Exchange) -> list[str]:
    """The promises a response breaks (empty: none)."""
    found = [f"HTTP {exchange.status}"] if exchange.status >= 500 else []
    try:
        body = json.loads(exchange.response_text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if exchange.response_text.lstrip().lower().startswith("<!doctype html"):
            return found  # GraphiQL (development mode): its JavaScript is no leak
        problem = leaks(exchange.response_text)  # Strawberry's plain-text 400/405s
        return [*found, f"non-JSON response {problem}"] if problem else found
    errors = body.get("errors") or []
    if not isinstance(errors, list):
        return [*found, "`errors` is not a list"]
    for error in errors:
        message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        if not code:
            found.append(f"error without extensions.code: {message[:300]}")
        elif code == INTERNAL:
            found.append(f"{INTERNAL} (a masked crash) at {error.get('path')}")
        for where, text in (("message", message), ("extensions", json.dumps(extensions))):
            problem = leaks(text)
            if problem:
                found.append(f"error {where} {problem}: {text[:300]!r}")
    return found


def answered(text: str) -> bool:
    """Whether a response carries data and no top-level error."""
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("data") is not None and not body.get("errors")


def reached_rows(text: str) -> bool:
    """Whether a response's data holds a stored object (database id > 0)."""
    if any(int(n) > 0 for n in re.findall(r'"databaseId":"?(\d+)', text)):
        return True
    for global_id in re.findall(r'"id":"([A-Za-z0-9_-]+=*)"', text):
        try:
            decoded = base64.urlsafe_b64decode(global_id).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
        if re.fullmatch(r"[A-Za-z]+:[1-9]\d*", decoded):
            return True
    return False


# ------------------------------------------------------------------ known bugs


def unparsable_body(content: bytes) -> bool:
    """Whether Strawberry's parse_json lets something other than JSONDecodeError
    escape for ``content``, or returns a value without ``.get``."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return False
    except (ValueError, RecursionError):  # bad UTF-8, over 4300 digits, deep nesting
        return True
    return not isinstance(value, dict | list)


def _masked_crash_and(pattern: bytes, path: str | None = None) -> Callable[..., bool]:
    def matches(exchange: Exchange, violation: str) -> bool:
        at = f"{INTERNAL} (a masked crash) at {path}" if path else INTERNAL
        return violation.startswith(at) and re.search(pattern, exchange.body) is not None

    return matches


def _lone_surrogate(exchange: Exchange, violation: str) -> bool:
    """A masked crash of a request with an unpaired surrogate in a string (pairs, as
    json.dumps writes non-BMP characters, decode to one character)."""

    def strings(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [*value, *(s for v in value.values() for s in strings(v))]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    try:
        decoded = json.loads(exchange.body)
    except (ValueError, RecursionError):
        return False
    lone = any(re.search("[\ud800-\udfff]", s) for s in strings(decoded))
    return violation.startswith(INTERNAL) and lone


# Bugs found by fuzzing are fixed and pinned by the regression tests at the end; add an
# entry (a narrow matcher) here only while a new finding waits for its fix.
KNOWN_BUGS: Mapping[str, Callable[[Exchange, str], bool]] = {}


# -------------------------------------------------------------------- sending


@dataclass
class Fuzzer:
    """Sends requests, counts them and collects the broken promises."""

    client: httpx.AsyncClient
    backend: str
    category: str
    path: str = "/"
    sent: int = 0
    answered: int = 0  # responses with data and no error
    hits: int = 0  # responses with data from stored rows
    known: Counter[str] = field(default_factory=Counter)
    # kind of violation -> (how many, the first exchange showing it)
    problems: dict[str, tuple[int, Exchange]] = field(default_factory=dict)

    async def operation(self, query: str, variables: Mapping[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = dict(variables)
        # ensure_ascii (default) keeps lone surrogates as \ud800 escapes; allow_nan sends
        # the NaN/Infinity tokens that Python's json, and so Strawberry, accepts.
        await self.send("POST", json.dumps(body, allow_nan=True).encode(), "application/json")

    async def send(
        self,
        method: str,
        content: bytes,
        content_type: str | None,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["content-type"] = content_type
        target = self.path if path is None else path
        response = await self.client.request(
            method, target, content=content or None, headers=all_headers
        )
        self.sent += 1
        self.answered += answered(response.text)
        self.hits += reached_rows(response.text)
        exchange = Exchange(
            method, target, content_type, content, response.status_code, response.text
        )
        for violation in violations(exchange):
            bug = next(
                (name for name, is_it in KNOWN_BUGS.items() if is_it(exchange, violation)), None
            )
            if bug is not None:
                self.known[bug] += 1
                continue
            kind = re.sub(r"\d+", "N", violation[:80])
            count, first = self.problems.get(kind, (0, exchange))
            self.problems[kind] = (count + 1, first)

    def verify(self, min_answered: int = 0, min_hits: int = 0) -> None:
        known = ", ".join(f"{name}: {n}" for name, n in self.known.items()) or "none"
        print(  # -rP or -s shows the figures
            f"fuzz[{self.backend}] {self.category}: {self.sent} operations, "
            f"{self.answered} answered without error, {self.hits} with stored rows, "
            f"{sum(n for n, _ in self.problems.values())} broken promises; known bugs: {known}"
        )
        assert not self.problems, f"{self.category}: broken promises\n" + "\n".join(
            f"- {kind} (x{n}), first:\n  {first.describe()}"
            for kind, (n, first) in self.problems.items()
        )
        assert self.sent >= minimum(self.category), (self.sent, self.category)
        assert self.answered >= min_answered, "too few operations are answered"
        assert self.hits >= min_hits, "too few operations reach the seeded rows"


@asynccontextmanager
async def fuzzer(app: Any, backend: str, category: str, path: str = "/") -> AsyncIterator[Fuzzer]:
    # raise_app_exceptions=False: an exception escaping the app becomes the 500 a
    # server would send, checked like any other response.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as client:
        yield Fuzzer(client, backend, category, path)


def examples(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` examples of ``strategy`` (fewer if it runs dry), the same on every run."""
    drawn: list[Any] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


# ------------------------------------------------------------------ seeded data

SEEDED_REQUEST_IDS = tuple(f"fuzz-{i}" for i in range(1, 7))
NODE_TYPES = (
    "ValidationSession",
    "ValidationResult",
    "Discrepancy",
    "BehavioralTestResult",
    "ValidationMetric",
)
# The db fixture restarts ids, so the seeded rows have ids 1..n (999: valid, unknown).
SEEDED_IDS = tuple(to_global_id(t, i) for t in NODE_TYPES for i in (*range(1, 13), 999))


async def seed(db: DatabaseManager) -> None:
    """6 sessions with a result, 3 discrepancies and 2 tests; 3 more with a bare result."""
    seeder = Seeder(db)
    for i, request_id in enumerate(SEEDED_REQUEST_IDS):
        await seeder.full(request_id, n_discrepancies=3, n_tests=2)
        if i % 2:
            await seeder.result(await seeder.session(f"{request_id}-bare"), [])


# ------------------------------------------------------------------- values


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _cursor(payload: Any) -> str:
    return _b64(json.dumps(payload, allow_nan=True).encode()).rstrip("=")


TEXT = st.text(st.characters(codec="utf-8"), max_size=40)  # control characters, NUL
HUGE_INTS = (2**31, -(2**31) - 1, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400)
MALFORMED_IDS = st.one_of(
    TEXT,
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),  # random bytes
    st.binary(max_size=40).map(_b64),
    st.sampled_from(
        [
            "",
            "=",
            "!!!",
            "VmFsaWRhdGlvblNlc3Npb246MQ",  # unpadded
            _b64(b"ValidationSession:1")[:-2],
            *(
                _b64(raw)
                for raw in (
                    b"ValidationSession:",
                    b"ValidationSession:abc",
                    b"ValidationSession:-1",
                    b"ValidationSession:0",
                    b"ValidationSession:2147483648",
                    b"ValidationSession:99999999999999999999999999",
                    b"ValidationSession:1e3",
                    b"ValidationSession: 1 ",
                    b"ValidationSession:1_0",
                    "ValidationSession:\u0661".encode(),  # Arabic-Indic digit one
                    b"ValidationSession:1:2",
                    b"validationsession:1",
                    b"Nope:1",
                    b":1",
                    b"\xff\xfe:1",
                    b"Discrepancy:" + b"9" * 5000,
                )
            ),
        ]
    ),
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    TEXT,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
GOOD_DATETIMES = st.datetimes(
    min_value=datetime(2000, 1, 1),  # hypothesis takes naive bounds
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
).map(datetime.isoformat)
DATETIMES = st.one_of(
    GOOD_DATETIMES,
    st.datetimes(timezones=st.sampled_from([UTC, None])).map(datetime.isoformat),
    st.sampled_from(
        [
            "2024-13-45T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59",
            "2024-01-01T00:00:00+99:00",
            "1970-01-01T00:00:00.0000000001Z",
            "2024-01-01",
            "now",
        ]
    ),
    TEXT,
)
MALFORMED_CURSORS = st.one_of(
    MALFORMED_IDS,
    st.builds(
        lambda kind, value, row_id: _cursor([kind, value, row_id]),
        st.sampled_from(["t", "v", "x", ""]),
        st.one_of(JSON_LEAVES, DATETIMES),
        st.one_of(st.integers(), st.sampled_from(HUGE_INTS), JSON_LEAVES),
    ),
    JSON_VALUES.map(_cursor),
    st.integers(min_value=1, max_value=3000).map(lambda n: _b64(b"[" * n + b"]" * n)),
)
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(),  # NaN and infinities included
    st.sampled_from(["NaN", "Infinity", "1e309", "0x10", "1_000", "", " ", "-0", "\u0661"]),
    st.sampled_from(["ARCHIVED", "pending", "PENDING ", "__proto__", "null"]),  # enums
    st.sampled_from(["A" * 70_000, "é" * 40_000, "\x00" * 5_000, "💥" * 20_000]),
    st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00\ud800"]),  # lone surrogates
    MALFORMED_IDS,
    MALFORMED_CURSORS,
    DATETIMES,
    JSON_VALUES,
)
# Cursors of the seeded lists: (id, id) for lists by id, (created_at, id) for sessions.
VALID_CURSORS = (
    *(encode_cursor(i, i) for i in range(1, 6)),
    encode_cursor(datetime(2000, 1, 1, tzinfo=UTC), 1),
    encode_cursor(datetime(2100, 1, 1, tzinfo=UTC), 99),
)
# Values the schema accepts, aimed at the seeded rows.
GOOD: Mapping[str, st.SearchStrategy[Any]] = {
    "Int": st.integers(min_value=0, max_value=10) | st.integers(min_value=0, max_value=100),
    "Float": st.floats(min_value=0, max_value=1),
    "String": st.one_of(  # request ids, cursors: either fits about half the arguments
        *[st.sampled_from(SEEDED_REQUEST_IDS), st.sampled_from(VALID_CURSORS)] * 2, TEXT
    ),
    "ID": st.sampled_from(SEEDED_IDS),
    "Boolean": st.booleans(),
    "DateTime": GOOD_DATETIMES,
    "JSON": JSON_VALUES.filter(lambda v: "NaN" not in json.dumps(v, allow_nan=True)),
}


def variable_values(type_: GraphQLInputType, hostile: bool) -> st.SearchStrategy[Any]:
    """JSON values for a variable of ``type_``; ``hostile``: one in four values, at
    any level, is a hostile one."""
    inner = get_nullable_type(type_)
    good: st.SearchStrategy[Any]
    if is_list_type(inner):
        good = st.lists(variable_values(inner.of_type, hostile), max_size=4)
    elif isinstance(inner, GraphQLInputObjectType):
        fields = {n: (variable_values(f.type, hostile), f.type) for n, f in inner.fields.items()}
        good = st.fixed_dictionaries(
            {n: v for n, (v, t) in fields.items() if is_non_null_type(t)},
            optional={n: v for n, (v, t) in fields.items() if not is_non_null_type(t)},
        )
    elif isinstance(inner, GraphQLEnumType):
        good = st.sampled_from(sorted(inner.values))
    else:
        good = GOOD[inner.name]
    return st.one_of(good, good, good, HOSTILE) if hostile else good


# ---------------------------------------------------- operations: documents


def _literal(value: Any) -> graphql.ValueNode:
    """A GraphQL literal of a JSON value."""
    if isinstance(value, dict):
        return nodes.Object(
            [
                graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=_literal(v))
                for k, v in value.items()
            ]
        )
    if isinstance(value, list):
        return nodes.List([_literal(v) for v in value])
    if value is None or isinstance(value, bool):
        return graphql.NullValueNode() if value is None else nodes.Boolean(value)
    if isinstance(value, int | float):
        return nodes.Int(value) if isinstance(value, int) else nodes.Float(value)
    return nodes.String(value)


_NAMES = st.text(string.ascii_letters + "_", min_size=1, max_size=8)
CUSTOM_SCALARS: Mapping[str, st.SearchStrategy[graphql.ValueNode]] = {
    "ID": GOOD["ID"].map(nodes.String),
    "String": GOOD["String"].map(nodes.String),
    "Int": GOOD["Int"].map(nodes.Int),
    "Float": GOOD["Float"].map(nodes.Float),
    "DateTime": GOOD_DATETIMES.map(nodes.String),
    "JSON": st.recursive(
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(0, 1) | TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
        max_leaves=8,
    ).map(_literal),
}


@cache
def generated_documents(kind: str, mode: str, n: int) -> tuple[str, ...]:
    make = hg.queries if kind == "query" else hg.mutations
    return tuple(examples(make(SCHEMA, custom_scalars=dict(CUSTOM_SCALARS), mode=hg.Mode[mode]), n))


# ---------------------------------------------------- operations: variables


def selection(type_: Any, depth: int) -> str:
    """``__typename`` and the leaf fields (without required arguments) of ``type_``,
    following object fields ``depth`` levels down."""
    named = get_named_type(type_)
    if not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
        return ""
    parts = ["__typename"]
    for name, field_def in named.fields.items():
        if any(is_required_argument(a) for a in field_def.args.values()):
            continue
        if is_leaf_type(get_named_type(field_def.type)):
            parts.append(name)
        elif depth > 0:
            parts.append(f"{name} {{ {selection(field_def.type, depth - 1)} }}")
    return " ".join(parts)


def root_operations() -> list[tuple[str, Mapping[str, GraphQLInputType]]]:
    """Each root field with arguments, called with all of them as variables."""
    found = []
    for keyword, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type)):
        assert root is not None
        for name, field_def in root.fields.items():
            if not field_def.args:
                continue
            declared = ", ".join(f"${a}: {arg.type}" for a, arg in field_def.args.items())
            passed = ", ".join(f"{a}: ${a}" for a in field_def.args)
            body = selection(field_def.type, 2)
            document = f"{keyword} Fuzz({declared}) {{ {name}({passed}) {{ {body} }} }}"
            found.append((document, {a: arg.type for a, arg in field_def.args.items()}))
    return found


def _variables(arguments: Mapping[str, GraphQLInputType]) -> st.SearchStrategy[dict[str, Any]]:
    def values(hostile: bool) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {a: variable_values(t, hostile) for a, t in arguments.items() if is_non_null_type(t)},
            optional={
                a: variable_values(t, hostile)
                for a, t in arguments.items()
                if not is_non_null_type(t)
            },
        )

    # Half well typed (the resolvers run), half hostile; sometimes variables are
    # missing or undeclared.
    anything = st.dictionaries(st.sampled_from([*arguments, "undeclared"]), HOSTILE)
    return st.one_of(values(False), values(False), values(True), anything)


@cache
def hostile_variable_operations(n: int) -> tuple[tuple[str, dict[str, Any]], ...]:
    strategy = st.sampled_from(root_operations()).flatmap(
        lambda op: st.tuples(st.just(op[0]), _variables(op[1]))
    )
    return tuple(examples(strategy, n))


ID_OPERATIONS = (
    "query($v: ID!) { node(id: $v) { id __typename } }",
    "query($v: ID) { discrepancies(filter: {sessionId: $v}) { totalCount } }",
    "query($v: ID) { auditLog(filter: {entity: $v}) { totalCount } }",
    'mutation($v: ID!) { resolveDiscrepancy(input: {id: $v, resolvedBy: "fuzz"})'
    " { discrepancy { id } errors { field code message } } }",
    'mutation($v: ID!) { resolveDiscrepancies(input: {ids: [$v], resolvedBy: "fuzz"})'
    " { errors { field code } } }",
    "mutation($v: ID) { updateSessionStatus(input: {sessionId: $v, status: PROCESSING})"
    " { errors { field code } } }",
)
CURSOR_OPERATIONS = (
    "query($v: String) { sessions(first: 3, after: $v) { totalCount nodes { id } } }",
    "query($v: String) { sessions(first: 3, after: $v,"
    " orderBy: {field: UPDATED_AT, direction: ASC}) { nodes { id } } }",
    "query($v: String) { discrepancies(first: 3, after: $v) { nodes { id } } }",
    "query($v: String) { behavioralTests(first: 3, after: $v) { nodes { id } } }",
    "query($v: String) { auditLog(first: 3, after: $v) { nodes { databaseId } } }",
    'query($v: String) { session(requestId: "fuzz-1")'
    " { discrepancies(first: 2, after: $v) { nodes { id } } } }",
)


@cache
def id_and_cursor_operations(n: int) -> tuple[tuple[str, dict[str, Any]], ...]:
    ids = st.tuples(
        st.sampled_from(ID_OPERATIONS),
        st.fixed_dictionaries({"v": MALFORMED_IDS | st.sampled_from(SEEDED_IDS)}),
    )
    cursors = st.tuples(
        st.sampled_from(CURSOR_OPERATIONS), st.fixed_dictionaries({"v": MALFORMED_CURSORS})
    )
    return tuple(examples(ids | cursors, n))


# ------------------------------------------------------- operations: bodies

COUNT = b'{"query": "{ sessions { totalCount } }"}'
FIXED_BODIES: tuple[tuple[str, bytes, str | None], ...] = (
    ("POST", b"", "application/json"),
    ("POST", b"{not json", "application/json"),
    ("POST", COUNT[:-1], "application/json"),
    ("POST", b"\xff\xfe\x00garbage", "application/json"),
    ("POST", COUNT + b"\x00", "application/json"),
    ("POST", b"\xef\xbb\xbf" + COUNT, "application/json"),  # UTF-8 BOM
    ("POST", COUNT.decode().encode("utf-16"), "application/json"),
    ("POST", b'{"query": "{ __typename }", "query": 5}', "application/json"),
    ("POST", COUNT, "application/json; charset=latin-1"),
    ("POST", COUNT, "text/plain"),
    ("POST", COUNT, None),
    ("POST", b"{ sessions { totalCount } }", "application/graphql"),
    ("POST", b"query=%7B__typename%7D", "application/x-www-form-urlencoded"),
    ("POST", b"--x\r\nContent-Disposition: form-data\r\n\r\n--x--", "multipart/form-data"),
    ("POST", b"garbage", "multipart/form-data; boundary=x"),
    ("POST", b"[]", "application/json"),
    ("POST", b"[" + COUNT + b"]", "application/json"),
    ("POST", b"[1, 2]", "application/json"),
    ("POST", b'{"query": null}', "application/json"),
    ("POST", b"{}", "application/json"),
    ("POST", b'{"query": ""}', "application/json"),
    ("POST", b'{"query": "# only a comment"}', "application/json"),
    ("POST", b'{"query": "{ __typename }", "variables": NaN}', "application/json"),
    ("POST", b'{"query": "{ __typename }", "operationName": "nope"}', "application/json"),
    ("POST", b'{"query": "query A { __typename } query B { __typename }"}', "application/json"),
    ("POST", b'{"query": "subscription { x }"}', "application/json"),
    ("GET", b"", None),
    ("PUT", COUNT, "application/json"),
    ("DELETE", b"", None),
    ("PATCH", COUNT, "application/json"),
    ("OPTIONS", b"", None),
    ("HEAD", b"", None),
)
REQUEST_KEYS = st.sampled_from(["query", "variables", "operationName", "extensions", "x"])
BODIES = st.one_of(
    st.dictionaries(REQUEST_KEYS, JSON_VALUES).map(lambda v: json.dumps(v, allow_nan=True)),
    st.fixed_dictionaries(
        {"query": st.just("{ sessions { totalCount } }")},
        optional={"variables": JSON_VALUES, "operationName": JSON_VALUES, "extensions": TEXT},
    ).map(json.dumps),
    st.lists(JSON_VALUES, max_size=3).map(lambda v: json.dumps(v, allow_nan=True)),
    JSON_LEAVES.map(lambda v: json.dumps(v, allow_nan=True)),
    TEXT.map(lambda t: '{"query": "' + t + '"}'),
).map(str.encode) | st.binary(max_size=200)


@cache
def generated_bodies(n: int) -> tuple[bytes, ...]:
    return tuple(examples(BODIES, n))


# ----------------------------------------------- operations: deep documents

CREATE_INPUT = (
    "sourceTechnology: PYTHON_FLASK, targetTechnology: JAVA_SPRING, validationScope: "
    "FULL_SYSTEM, sourceInputType: CODE_FILES, targetInputType: CODE_FILES"
)


def nested(depth: int) -> str:
    """session > latestResult > session > ...: ``depth`` fields, all single objects."""
    fields = ['session(requestId: "fuzz-1")'] + [
        "latestResult" if i % 2 else "session" for i in range(1, depth - 1)
    ]
    return "{ " + " { ".join([*fields, "databaseId"]) + " }" * depth


def fragment_fan(levels: int) -> str:
    """Each fragment spreads the one before twice: 2**levels fields on paper."""
    fragments = ["fragment F0 on ValidationSession { databaseId requestId }"] + [
        f"fragment F{i} on ValidationSession {{ ...F{i - 1} ...F{i - 1} }}"
        for i in range(1, levels + 1)
    ]
    return f'{{ session(requestId: "fuzz-1") {{ ...F{levels} }} }} ' + " ".join(fragments)


def fragment_cycle(n: int) -> str:
    spreads = [f"fragment F{i} on ValidationSession {{ id ...F{(i + 1) % n} }}" for i in range(n)]
    return '{ session(requestId: "fuzz-1") { ...F0 } } ' + " ".join(spreads)


def deep_documents() -> list[tuple[str, dict[str, Any] | None]]:
    create = (
        'mutation($m: JSON) {{ createValidationSession(input: {{requestId: "{}", {}, '
        "sessionMetadata: {}}}) {{ errors {{ code }} }} }}"
    )
    docs: list[tuple[str, dict[str, Any] | None]] = [
        *((nested(d), None) for d in (2, 5, 8, 10, 11, 12, 15, 20, 40, 80)),
        *(
            (
                "{ "
                + " ".join(f"a{i}: sessions(first: 1) {{ totalCount }}" for i in range(n))
                + " }",
                None,
            )
            for n in (1, 5, 15, 16, 30, 50, 200)
        ),
        *((fragment_fan(n), None) for n in (2, 4, 8, 12, 16, 20, 30)),
        *((fragment_cycle(n), None) for n in (1, 2, 3, 5)),
        *(("{" * n + "}" * n, None) for n in (10, 100, 500, 1000, 5000, 20000)),
        *(("{ __typename " + "@skip(if: false) " * n + "}", None) for n in (1, 50, 500)),
        *(
            (create.format(f"deep-{d}", CREATE_INPUT, "[" * d + "1" + "]" * d), None)
            for d in (5, 50, 200, 500, 1000)
        ),
        *(
            (
                create.format(f"deep-var-{d}", CREATE_INPUT, "$m"),
                {"m": json.loads('{"a": [' * d + "1" + "]}" * d)},
            )
            for d in (5, 50, 100, 200, 300)
        ),
        (
            "{ sessions(first: 1) { nodes { results { discrepancies { session { results "
            "{ discrepancies { id } } } } } } } }",
            None,
        ),
        ("{ " + "__typename " * 1900 + "}", None),
        ("{ " + "__typename " * 3000 + "}", None),
        ("# " + "x" * 100_000 + "\n{ __typename }", None),
        ("{ __typename }" + " " * 200_000, None),
        ("query($a: Int = 1, $b: Int = $a) { __typename }", None),
        ("{ __schema { types { fields { type { ofType { ofType { name } } } } } } }", None),
        ('{ __type(name: "ValidationSession") { fields { name args { name } } } }', None),
        ("query { ...on Query { ...on Query { ...on Query { __typename } } } }", None),
        ('{ node(id: "' + "A" * 100_000 + '") { id } }', None),
        ('{ session(requestId: "' + "\\u0000" * 1000 + '") { id } }', None),
    ]
    return docs


# ---------------------------------------------------------------------- tests


def test_the_plan_is_at_least_1000_operations_per_backend() -> None:
    assert sum(minimum(category) for category in PLAN) >= 1000


@pytest.fixture
async def seeded_app(db: DatabaseManager) -> Any:
    await seed(db)
    return build_graphql_app(db)


async def test_generated_queries(seeded_app: Any, backend: str) -> None:
    async with fuzzer(seeded_app, backend, "queries") as fuzz:
        for document in generated_documents("query", "POSITIVE", PLAN["queries"]):
            await fuzz.operation(document)
    # Which rows a sample reaches depends on the sample (hypothesis derives it from the
    # schema and the code); the bound only proves the fuzzer gets past the empty answers.
    fuzz.verify(min_answered=PLAN["queries"] // 2, min_hits=PLAN["queries"] // 15)


async def test_generated_mutations(seeded_app: Any, backend: str) -> None:
    async with fuzzer(seeded_app, backend, "mutations") as fuzz:
        for document in generated_documents("mutation", "POSITIVE", PLAN["mutations"]):
            await fuzz.operation(document)
    fuzz.verify(min_answered=PLAN["mutations"] // 2)


async def test_invalid_documents(seeded_app: Any, backend: str) -> None:
    async with fuzzer(seeded_app, backend, "invalid documents") as fuzz:
        for kind in ("query", "mutation"):
            for document in generated_documents(kind, "NEGATIVE", PLAN["invalid documents"] // 2):
                await fuzz.operation(document)
    fuzz.verify()


async def test_hostile_variables(seeded_app: Any, backend: str) -> None:
    async with fuzzer(seeded_app, backend, "hostile variables") as fuzz:
        for document, variables in hostile_variable_operations(PLAN["hostile variables"]):
            await fuzz.operation(document, variables)
    fuzz.verify(min_answered=PLAN["hostile variables"] // 5, min_hits=15)


async def test_malformed_ids_and_cursors(seeded_app: Any, backend: str) -> None:
    async with fuzzer(seeded_app, backend, "ids and cursors") as fuzz:
        for document, variables in id_and_cursor_operations(PLAN["ids and cursors"]):
            await fuzz.operation(document, variables)
    fuzz.verify()


async def test_malformed_bodies(seeded_app: Any, backend: str) -> None:
    async with fuzzer(seeded_app, backend, "bodies") as fuzz:
        for method, content, content_type in FIXED_BODIES:
            await fuzz.send(method, content, content_type)
        for content in generated_bodies(PLAN["bodies"] - len(FIXED_BODIES)):
            await fuzz.send("POST", content, "application/json")
    fuzz.verify()


async def test_deep_and_aliased_documents(seeded_app: Any, backend: str) -> None:
    async with fuzzer(seeded_app, backend, "deep documents") as fuzz:
        for document, variables in deep_documents():
            await fuzz.operation(document, variables)
    fuzz.verify(min_hits=5)


async def test_full_app_with_middleware(
    db: DatabaseManager, database_url: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sample of every category through create_app(): RequestLimits, routing, and the
    lifespan's own DatabaseManager on the test database; plus what only the middleware
    sees (oversized bodies, batches, other routes)."""
    await seed(db)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGVAL_MAX_BODY_BYTES", str(1024 * 1024))
    # create_app() installs the key ring process-wide: put the test's back afterwards.
    monkeypatch.setattr(persistence.crypto, "_active", persistence.crypto._active)
    app = create_app()
    n = PLAN["full app"] // 8
    operations: list[tuple[str, dict[str, Any] | None]] = [
        *((d, None) for d in generated_documents("query", "POSITIVE", PLAN["queries"])[:n]),
        *((d, None) for d in generated_documents("mutation", "POSITIVE", PLAN["mutations"])[:n]),
        *(
            (d, None)
            for d in generated_documents("query", "NEGATIVE", PLAN["invalid documents"] // 2)[:n]
        ),
        *hostile_variable_operations(PLAN["hostile variables"])[:n],
        *id_and_cursor_operations(PLAN["ids and cursors"])[:n],
        *deep_documents()[:n],
    ]
    async with (
        app.router.lifespan_context(app),
        fuzzer(app, backend, "full app", "/graphql") as fuzz,
    ):
        for document, variables in operations:
            await fuzz.operation(document, variables)
        for method, content, content_type in FIXED_BODIES[:n]:
            await fuzz.send(method, content, content_type)
        for content in generated_bodies(PLAN["bodies"] - len(FIXED_BODIES))[:n]:
            await fuzz.send("POST", content, "application/json")
        big = b'{"query": "' + b" " * (2 * 1024 * 1024) + b'{ __typename }"}'
        await fuzz.send("POST", big, "application/json")
        await fuzz.send("POST", COUNT, "application/json", headers={"content-length": "9" * 12})
        await fuzz.send("POST", b"[" * 10 + b"]" * 10, "application/json")
        for path in ("/healthz", "/readyz", "/nope", "/graphql/", "/graphql?query={__typename}"):
            await fuzz.send("GET", b"", None, path=path)
    fuzz.verify(min_answered=PLAN["full app"] // 4, min_hits=1)


# ---------------------------------------------------------- known bugs, pinned


async def _exchange(db: DatabaseManager, content: bytes) -> Exchange:
    transport = httpx.ASGITransport(app=build_graphql_app(db), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        response = await client.post(
            "/", content=content, headers={"content-type": "application/json"}
        )
    return Exchange("POST", "/", "application/json", content, response.status_code, response.text)


async def _broken_promises(db: DatabaseManager, query: str, **variables: Any) -> list[str]:
    return violations(
        await _exchange(db, json.dumps({"query": query, "variables": variables}).encode())
    )


async def test_fixed_variable_coercion_error_has_a_code(db: DatabaseManager) -> None:
    query = "query($x: Int!) { sessions(first: $x) { totalCount } }"
    assert await _broken_promises(db, query, x="ten") == []


@pytest.mark.parametrize(
    "content",
    [
        b"null",
        b"5",
        b'"x"',
        b"NaN",
        b'{"query": "\xff\xfe"}',
        b'{"query": "{ __typename }", "variables": {"a": 1' + b"0" * 5000 + b"}}",
        b'{"query": "{ __typename }", "variables": {"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
    ],
    ids=["null", "number", "string", "NaN", "not-utf8", "5001-digits", "deep-nesting"],
)
async def test_fixed_unparsable_json_body(db: DatabaseManager, content: bytes) -> None:
    assert unparsable_body(content)
    assert violations(await _exchange(db, content)) == []


@pytest.mark.parametrize(
    "query",
    [
        "query($x: String!) { session(requestId: $x) { id } }",
        "mutation($x: String!) { deleteSession(input: {requestId: $x}) { errors { code } } }",
        "mutation($x: String!) { createValidationSession(input: {requestId: $x, "
        f"{CREATE_INPUT}}}) {{ errors {{ code }} }} }}",
    ],
    ids=["session", "deleteSession", "createValidationSession"],
)
async def test_fixed_lone_surrogate_is_bad_input(db: DatabaseManager, query: str) -> None:
    assert await _broken_promises(db, query, x="a\ud800") == []


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "query",
    [
        "query($x: String!) { session(requestId: $x) { id } }",
        "query($x: String!) { discrepancies(filter: {discrepancyType: [$x]}) { totalCount } }",
        "query($x: String!) { auditLog(filter: {actorName: $x}) { totalCount } }",
        "mutation($x: String!) { deleteSession(input: {requestId: $x}) { errors { code } } }",
    ],
    ids=["session", "discrepancies", "auditLog", "deleteSession"],
)
async def test_fixed_nul_in_a_lookup(db: DatabaseManager, query: str) -> None:
    assert await _broken_promises(db, query, x="a\x00b") == []


async def test_fixed_deeply_nested_cursor(db: DatabaseManager) -> None:
    query = "query($x: String) { discrepancies(after: $x) { totalCount } }"
    assert await _broken_promises(db, query, x=_b64(b"[" * 5000 + b"]" * 5000)) == []


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59+00:00"])
async def test_fixed_metrics_at_the_edge_of_time(db: DatabaseManager, moment: str) -> None:
    query = "query($x: DateTime) { metrics(period: DAILY, from: $x) { databaseId } }"
    assert await _broken_promises(db, query, x=moment) == []
