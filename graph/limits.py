"""Query limits, checked before any resolver runs (issue "[security] 4").

- ``LimitSettings``: the limits, read from the environment (``MIGVAL_*``).
- ``query_limits(settings)``: the schema extension factory. It caps the document's
  tokens at parse time, then one validation rule measures every operation (depth,
  aliases and cost, with fragments expanded where they are spread) and checks each
  ``first`` argument (literal or variable) against the page-size cap. The cost of an
  accepted operation is reported in the response's ``extensions.cost``.
- ``RequestLimits``: ASGI middleware for the request body size, JSON batches and the
  per-request timeout.

Every refusal is a JSON GraphQL error with ``extensions.code``. The README section
"Query limits" documents the limits and how cost is estimated.
"""

import asyncio
import contextlib
import json
import logging
import os
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    OperationType,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    ValidationRule,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
    value_from_ast_untyped,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from graph import document_cache
from graph.errors import BadUserInput
from persistence.errors import ConfigurationError, ValidationFailed
from persistence.pagination import MAX_PAGE_SIZE, check_page_size
from persistence.settings import env_int

log = logging.getLogger("migval.limits")

MiB = 1024 * 1024

# Estimated length of list fields that have no `first` argument (cost only). The
# lists of a connection (`edges`, `nodes`) use the connection's `first` instead.
DEFAULT_LIST_ESTIMATE = 20
LIST_ESTIMATES: Mapping[str, int] = {
    "ValidationSession.results": 20,
    "ValidationSession.behavioralTests": 50,
    "ValidationResult.discrepancies": 100,
    "Query.metrics": 1000,  # the resolver's own cap
}
_INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2000
    max_cost: int = 50_000
    # A realistic 10,000-discrepancy recordValidationResult is ~8 MiB of JSON.
    max_body_bytes: int = 16 * MiB
    request_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LimitSettings":
        """Settings from ``env`` (default ``os.environ``); a bad value raises
        ConfigurationError naming the variable."""
        e = os.environ if env is None else env
        d = cls()
        return cls(
            max_depth=env_int(e, "MIGVAL_MAX_DEPTH", d.max_depth, minimum=1),
            max_aliases=env_int(e, "MIGVAL_MAX_ALIASES", d.max_aliases, minimum=0),
            max_tokens=env_int(e, "MIGVAL_MAX_TOKENS", d.max_tokens, minimum=1),
            max_cost=env_int(e, "MIGVAL_MAX_COST", d.max_cost, minimum=1),
            max_body_bytes=env_int(e, "MIGVAL_MAX_BODY_BYTES", d.max_body_bytes, minimum=1),
            request_timeout_s=_float(e, "MIGVAL_REQUEST_TIMEOUT_S", d.request_timeout_s),
        )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, f"must be a number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(name, f"must be a positive number of seconds, got {raw!r}")
    return value


# ------------------------------------------------------------------ schema extension


def query_limits(settings: LimitSettings | None = None) -> Callable[[], SchemaExtension]:
    """The extension factory for ``strawberry.Schema(extensions=[...])`` (one fresh
    extension per request). ``None`` reads the environment once, now."""
    resolved = settings or LimitSettings.from_env()
    return lambda: QueryLimits(resolved)


class QueryLimits(SchemaExtension):
    """Token cap at parse time, the limits rule at validation time, codes on parse and
    validation errors, and ``extensions.cost`` for accepted operations."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.cost: int | None = None  # of the operation to execute, set by the rule
        self.accepted = False

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        # graphql-core's max_tokens counts comments too, so they cannot pad a document.
        context.parse_options["max_tokens"] = self.settings.max_tokens
        context.validation_rules = (*context.validation_rules, _LimitsRule)
        # The rule reports back to this operation's extension, found by a weak
        # reference: graphql-core's validation rules sit in reference cycles (with
        # their validation context), and so did a class made per request; whatever
        # they hold strongly (the request, its variables, its response) lived until
        # the cyclic garbage collector ran. Tasks started meanwhile copy the variable.
        token = _OPERATION.set(weakref.ref(self))
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):  # closed from another context
                _OPERATION.reset(token)

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        key = None if context.query is None else (context.query, self.settings.max_tokens)
        cached = None if key is None else document_cache.PARSED.get(key)
        if cached is not None:
            context.graphql_document = cached  # Strawberry then skips parsing
        yield
        if key is not None and cached is None and context.graphql_document is not None:
            document_cache.PARSED.put(key, context.graphql_document)
        for error in self.execution_context.pre_execution_errors or ():
            if isinstance(error, GraphQLSyntaxError):
                message = error.message
                code = (
                    "TOO_MANY_TOKENS"
                    if "tokens. Parsing aborted" in message
                    else "QUERY_TOO_DEEP"
                    if "nested too deeply" in message
                    else "GRAPHQL_PARSE_FAILED"
                )
                extra = {"limit": self.settings.max_tokens} if code == "TOO_MANY_TOKENS" else {}
                _set_code(error, code, **extra)

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        query, document = context.query, context.graphql_document
        key = (
            None
            if query is None or document is None
            else document_cache.validation_key(
                context.schema,
                query,
                context.operation_name,
                context.variables,
                variables_read(query, document),
            )
        )
        cost = None if key is None else document_cache.ACCEPTED.get(key)
        if cost is not None:
            # Accepted before with these variables: Strawberry skips validation.
            context.pre_execution_errors = []
            self.cost = cost
        yield
        errors = self.execution_context.pre_execution_errors
        for error in errors or ():
            _set_code(error, "GRAPHQL_VALIDATION_FAILED")
        self.accepted = not errors
        if key is not None and cost is None and self.accepted and self.cost is not None:
            document_cache.ACCEPTED.put(key, self.cost)

    def get_results(self) -> dict[str, Any]:
        return {"cost": self.cost} if self.accepted and self.cost is not None else {}


def variables_read(query: str, document: DocumentNode) -> frozenset[str]:
    """The variables whose values validation reads: those inside a ``first`` argument
    (_LimitsRule reads no other; graphql-core's rules read none). Any argument named
    so counts, directives' too: reading more than needed costs only cache hits."""
    names = document_cache.READ_VARIABLES.get(query)
    if names is None:
        names = _first_variables(document)
        document_cache.READ_VARIABLES.put(query, names)
    return names


def _first_variables(document: DocumentNode) -> frozenset[str]:
    # A plain walk: a graphql-core Visitor refers to itself (bound methods it caches),
    # which would leave a cycle per new document.
    names: set[str] = set()
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, inside = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend((child, inside) for child in node)
        elif isinstance(node, VariableNode):
            if inside:
                names.add(node.name.value)
        elif isinstance(node, Node):
            inside = inside or (isinstance(node, ArgumentNode) and node.name.value == "first")
            stack.extend((getattr(node, key), inside) for key in node.keys if key != "loc")
    return frozenset(names)


# The QueryLimits extension of the operation being validated (set by on_operation).
_OPERATION: ContextVar[weakref.ref[QueryLimits]] = ContextVar("migval_query_limits")


def _set_code(error: GraphQLError, code: str, **extra: Any) -> None:
    if not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": code, **extra}


class _LimitsRule(ValidationRule):
    """Checks ``first`` on every field that takes it (visiting each node once), then
    measures each operation when the whole document has been seen."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._extension = _OPERATION.get()  # weak: this rule outlives the request
        self.crossed: list[bool] = []  # per enclosing field: a list on the way down?
        self.keys: list[str] = []
        self.in_operation = False
        self.operation_name = self.extension.execution_context.operation_name
        self.defaults = self._variable_defaults()

    @property
    def extension(self) -> QueryLimits:
        extension = self._extension()
        if extension is None:  # validation runs inside the operation that set it
            raise RuntimeError("query limits rule used after its operation")
        return extension

    @property
    def variables(self) -> Mapping[str, Any]:
        return self.extension.execution_context.variables or {}

    def enter_operation_definition(self, *_args: Any) -> None:
        self.in_operation = True

    def enter_fragment_definition(self, *_args: Any) -> None:
        self.in_operation = False

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        field_def = self.context.get_field_def()
        output = self.context.get_type()
        above = bool(self.crossed) and self.crossed[-1]
        self.crossed.append(above or (output is not None and _is_list(output)))
        self.keys.append((node.alias or node.name).value)
        if field_def is None or "first" not in field_def.args:
            return
        value = self._argument(node, "first")
        if not isinstance(value, int) or isinstance(value, bool):
            return  # absent (default applies) or mistyped (coercion reports it)
        try:
            check_page_size(value)
        except ValidationFailed as error:
            coded = BadUserInput(error)
            # A response path is exact only outside fragments and lists.
            path = list(self.keys) if self.in_operation and not above else None
            self.report_error(
                GraphQLError(coded.message, [node], path=path, extensions=coded.extensions)
            )

    def leave_field(self, *_args: Any) -> None:
        self.crossed.pop()
        self.keys.pop()

    def _argument(self, node: FieldNode, name: str) -> Any:
        """The value a field argument was given (literal, variable or the variable's
        default), or None when it was not given."""
        for argument in node.arguments or ():
            if argument.name.value == name:
                return _value(argument.value, self.variables, self.defaults)
        return None

    def _variable_defaults(self) -> dict[str, ValueNode]:
        defaults: dict[str, ValueNode] = {}
        for operation in _operations(self.context.document.definitions):
            executed = _name(operation) == self.operation_name
            for definition in operation.variable_definitions or ():
                name = definition.variable.name.value
                if definition.default_value is not None and (executed or name not in defaults):
                    defaults[name] = definition.default_value
        return defaults

    def leave_document(self, *_args: Any) -> None:
        limits = self.extension.settings
        definitions = self.context.document.definitions
        fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
        measure = _Measure(self.context.schema, fragments, self._argument)
        operations = _operations(definitions)
        for operation in operations:
            try:
                tally = measure.operation(operation)
            except RecursionError:
                self._refuse(operation, "QUERY_TOO_DEEP", "Operation nested too deeply to measure.")
                continue
            except Exception:  # a bug here must refuse the request, not leak or let it run
                log.exception("query limits could not measure an operation")
                self._refuse(operation, "INTERNAL_SERVER_ERROR", "Unexpected error (limits).")
                continue
            label = f"Operation {_name(operation)!r}" if operation.name else "The operation"
            checks = (
                ("QUERY_TOO_DEEP", "depth", tally.depth, limits.max_depth, "is {} fields deep"),
                ("TOO_MANY_ALIASES", "aliases", tally.aliases, limits.max_aliases,
                 "uses {} aliases (fragments expanded)"),
                ("QUERY_TOO_COSTLY", "cost", tally.cost, limits.max_cost,
                 "has an estimated cost of {} (ask for smaller pages or fewer nested lists)"),
            )  # fmt: skip
            for code, measured, value, limit, text in checks:
                if value > limit:
                    message = f"{label} {text.format(value)}; the limit is {limit}."
                    self._refuse(operation, code, message, **{measured: value, "limit": limit})
            if _name(operation) == self.operation_name:  # the one to execute
                self.extension.cost = tally.cost

    def _refuse(self, node: Any, code: str, message: str, **extra: int) -> None:
        self.report_error(GraphQLError(message, [node], extensions={"code": code, **extra}))


def _operations(definitions: Any) -> list[OperationDefinitionNode]:
    return [d for d in definitions if isinstance(d, OperationDefinitionNode)]


def _name(operation: OperationDefinitionNode) -> str | None:
    return operation.name.value if operation.name else None


def _is_list(type_: Any) -> bool:
    return is_list_type(get_nullable_type(type_))


def _value(node: ValueNode, variables: Mapping[str, Any], defaults: Mapping[str, ValueNode]) -> Any:
    if isinstance(node, VariableNode):
        name = node.name.value
        if name in variables:
            value = variables[name]
        elif name in defaults:
            value = value_from_ast_untyped(defaults[name])
        else:
            return None
    else:
        value = value_from_ast_untyped(node, dict(variables))
    if isinstance(value, float) and value.is_integer():
        return int(value)  # what Int coercion would accept
    return value


@dataclass(frozen=True, slots=True)
class _Tally:
    cost: int = 0
    depth: int = 0
    aliases: int = 0

    def __add__(self, other: "_Tally") -> "_Tally":
        return _Tally(
            self.cost + other.cost, max(self.depth, other.depth), self.aliases + other.aliases
        )


@dataclass
class _Measure:
    """Cost, depth and aliases of selections with fragments expanded where spread.
    Each fragment is measured once per (page size, introspection) and reused, so
    fragments spread many times cost linear time; a fragment spread inside itself
    counts as empty (graphql-core's NoFragmentCycles rule reports the cycle)."""

    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    argument: Callable[[FieldNode, str], Any]
    memo: dict[tuple[str, int | None, bool], _Tally] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)

    def operation(self, operation: OperationDefinitionNode) -> _Tally:
        root = {
            OperationType.QUERY: self.schema.query_type,
            OperationType.MUTATION: self.schema.mutation_type,
            OperationType.SUBSCRIPTION: self.schema.subscription_type,
        }[operation.operation]
        return self.selections(operation.selection_set, root, None, introspection=False)

    def selections(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType | None,
        page: int | None,
        introspection: bool,
    ) -> _Tally:
        total = _Tally()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, page, introspection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, target, page, introspection)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.spread(selection.name.value, page, introspection)
        return total

    def spread(self, name: str, page: int | None, introspection: bool) -> _Tally:
        key = (name, page, introspection)
        if key in self.memo:
            return self.memo[key]
        fragment = self.fragments.get(name)
        if fragment is None or name in self.active:
            return _Tally()  # unknown or cyclic: other rules report it
        self.active.add(name)
        try:
            target = self.schema.get_type(fragment.type_condition.name.value)
            tally = self.selections(fragment.selection_set, target, page, introspection)
        finally:
            self.active.discard(name)
        self.memo[key] = tally
        return tally

    def field(
        self, node: FieldNode, parent: GraphQLNamedType | None, page: int | None, intro: bool
    ) -> _Tally:
        name = node.name.value
        aliases = 1 if node.alias else 0
        if node.selection_set is None:
            return _Tally(1, 1, aliases)
        field_def = self.field_def(parent, name)
        intro = intro or name in _INTROSPECTION_ROOTS
        child_page = None
        if field_def is not None and "first" in field_def.args:
            child_page = self.page_size(node, field_def)
        child_type = get_named_type(field_def.type) if field_def is not None else None
        sub = self.selections(node.selection_set, child_type, child_page, intro)
        multiplier = 1
        if field_def is not None and not intro and _is_list(field_def.type):
            coordinate = f"{parent.name if parent else ''}.{name}"
            multiplier = (
                page if page is not None else LIST_ESTIMATES.get(coordinate, DEFAULT_LIST_ESTIMATE)
            )
        # `ofType` chains (type wrappers) cannot amplify: they do not add depth.
        depth = sub.depth if intro and name == "ofType" else 1 + sub.depth
        return _Tally(1 + multiplier * sub.cost, depth, aliases + sub.aliases)

    def field_def(self, parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
        if name == "__typename":
            return TypeNameMetaFieldDef
        if name in _INTROSPECTION_ROOTS and parent is self.schema.query_type:
            return SchemaMetaFieldDef if name == "__schema" else TypeMetaFieldDef
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return None
        found: GraphQLField | None = parent.fields.get(name)
        return found

    def page_size(self, node: FieldNode, field_def: GraphQLField) -> int:
        value = self.argument(node, "first")
        if not isinstance(value, int) or isinstance(value, bool):
            default = field_def.args["first"].default_value
            value = default if isinstance(default, int) else DEFAULT_LIST_ESTIMATE
        return max(0, min(value, MAX_PAGE_SIZE))  # beyond the cap: BAD_USER_INPUT


# ------------------------------------------------------------------- ASGI middleware


class RequestLimits:
    """Body size, JSON batches and the per-request timeout, for HTTP requests.

    The body is read (up to ``max_body_bytes``) before the app sees it: a larger
    ``Content-Length`` is refused at once, a larger streamed body as soon as it passes
    the limit (413). A JSON POST whose body is an array (a batch) is refused (400).
    The whole request runs under ``request_timeout_s``; when it expires the request's
    task is cancelled, so an open write transaction rolls back (its session's
    ``except BaseException`` does), and the client gets 504. Other scopes (lifespan,
    websocket) pass through untouched.
    """

    def __init__(self, app: ASGIApp, settings: LimitSettings | None = None) -> None:
        self.app = app
        self.settings = settings or LimitSettings.from_env()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        timeout_s = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                body = await self._read_body(scope, receive)
                if body is None:
                    await _send_error(
                        send,
                        413,
                        "PAYLOAD_TOO_LARGE",
                        f"Request body is larger than {self.settings.max_body_bytes} bytes.",
                        limit=self.settings.max_body_bytes,
                    )
                    return
                if _is_json_batch(scope, body):
                    await _send_error(
                        send,
                        400,
                        "BATCHING_NOT_SUPPORTED",
                        "Batched requests (a JSON array) are not supported: "
                        "send one operation per request.",
                    )
                    return
                await self.app(scope, _replay(body, receive), tracked_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # raised by the app itself, not by our deadline
            log.warning(
                "request cancelled after %.3f s: %s %s", timeout_s, scope["method"], scope["path"]
            )
            if started:
                return  # too late for a status: the response is cut short
            await _send_error(
                send,
                504,
                "TIMEOUT",
                f"Request cancelled after {timeout_s:g} s. A write it had not committed "
                "was rolled back; a write can have committed just before the deadline, "
                "so read it back (e.g. by requestId) before retrying.",
                timeoutSeconds=timeout_s,
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is larger than the limit."""
        limit = self.settings.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # client gone: the app sees an empty body, its answer is lost
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _is_json_batch(scope: Scope, body: bytes) -> bool:
    content_type = dict(scope["headers"]).get(b"content-type", b"").lower()
    return (
        scope["method"] == "POST"
        and b"json" in content_type
        and body.lstrip(b" \t\r\n").startswith(b"[")
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, when it comes

    return replayed


async def _send_error(send: Send, status: int, code: str, message: str, **extra: Any) -> None:
    body = json.dumps(
        {"errors": [{"message": message, "extensions": {"code": code, **extra}}]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "DEFAULT_LIST_ESTIMATE",
    "LIST_ESTIMATES",
    "LimitSettings",
    "QueryLimits",
    "RequestLimits",
    "query_limits",
]
