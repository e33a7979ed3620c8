"""Variable values coerced by code built once per input type.

graphql-core coerces a variable value by walking it against its type, dispatching on
the kind of type at every value, after a second walk that only checks the nesting
depth: about 19 µs per discrepancy, a third of the server time of a
10,000-discrepancy recordValidationResult. ``install`` puts a coercer in front of
graphql-core's: for each variable type it builds (once per schema and type) a
function that does the same coercion with the dispatch done in advance, calling
the same leaf coercions (scalars' and enums' own ``coerce_input_value``), the same
input-field defaults and ``out_type``. Anything it does not take on (a recursive
or @oneOf input type, an invalid value, a variable signature error) goes to
graphql-core unchanged, which then also reports the errors: the fast path only
ever answers valid values, with the value graphql-core would have produced
(tests/graph/test_variables.py compares both).
"""

import weakref
from collections.abc import Callable, Collection
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    Undefined,
    VariableDefinitionNode,
    is_required_input_field,
)
from graphql.execution import executor, values
from graphql.execution.get_variable_signature import get_variable_signature
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.pyutils import is_iterable
from graphql.utilities.coerce_input_value import coerce_default_value

# Coerces one non-undefined value; returns Undefined when it is not valid.
Coerce = Callable[[Any], Any]

_STANDARD = values.get_variable_values
# Per schema: the type's printed form ("[DiscrepancyInput!]!") -> its coercer, or
# None when graphql-core keeps it. Variable types are rebuilt per request, names not.
_COERCERS: "weakref.WeakKeyDictionary[GraphQLSchema, dict[str, Coerce | None]]" = (
    weakref.WeakKeyDictionary()
)


class _Unsupported(Exception):
    """The type is left to graphql-core."""


def get_variable_values(
    schema: GraphQLSchema,
    var_def_nodes: Collection[VariableDefinitionNode],
    inputs: dict[str, Any],
    max_errors: int | None = None,
    hide_suggestions: bool = False,
) -> values.VariableValues | list[GraphQLError]:
    """graphql-core's ``get_variable_values``, valid values taking the built path."""
    fast = _coerce_all(schema, var_def_nodes, inputs)
    if fast is not None:
        return fast
    return _STANDARD(
        schema, var_def_nodes, inputs, max_errors=max_errors, hide_suggestions=hide_suggestions
    )


def install() -> None:
    """Route graphql-core's executor through ``get_variable_values`` (idempotent).
    The executor looks the function up in its module at each build, and offers no
    other seam short of copying ``Executor.build``."""
    executor.get_variable_values = get_variable_values  # type: ignore[attr-defined]


def _coerce_all(
    schema: GraphQLSchema,
    var_def_nodes: Collection[VariableDefinitionNode],
    inputs: dict[str, Any],
) -> values.VariableValues | None:
    """What ``values.coerce_variable_values`` returns, or None for graphql-core."""
    sources: dict[str, values.VariableValueSource] = {}
    coerced: dict[str, Any] = {}
    failed: list[object] = []
    for node in var_def_nodes:
        signature = get_variable_signature(schema, node)
        if isinstance(signature, GraphQLError):
            return None
        name = signature.name
        value = inputs.get(name, Undefined)
        if value is Undefined:
            if isinstance(signature.type, GraphQLNonNull) and not node.default_value:
                return None  # a missing value: graphql-core says so
            sources[name] = values.VariableValueSource(signature)
            if node.default_value:
                values.maybe_use_default_value(
                    coerced, name, signature, lambda error, path: failed.append(error)
                )
                if failed:
                    return None
            continue
        sources[name] = values.VariableValueSource(signature, value)
        coerce = _coercer(schema, signature.type)
        if coerce is None:
            return None
        result = coerce(value)
        if result is Undefined:
            return None
        coerced[name] = result
    return values.VariableValues(sources, coerced)


def _coercer(schema: GraphQLSchema, type_: GraphQLInputType) -> Coerce | None:
    built = _COERCERS.get(schema)
    if built is None:
        built = _COERCERS[schema] = {}
    key = str(type_)
    if key not in built:
        try:
            built[key] = _build(type_, frozenset(), 0)
        except Exception:  # unsupported, or a default that fails: graphql-core's job
            built[key] = None
    return built[key]


def _build(type_: GraphQLInputType, open_types: frozenset[str], depth: int) -> Coerce:
    """The coercer of ``type_`` (as ``coerce_input_value``); ``open_types`` are the
    input objects being built around it (a recursive type is left to graphql-core,
    whose depth check it needs)."""
    if depth > MAX_NESTING_DEPTH:
        raise _Unsupported
    if isinstance(type_, GraphQLNonNull):
        return _non_null(_build(type_.of_type, open_types, depth))
    if isinstance(type_, GraphQLList):
        return _list(_build(type_.of_type, open_types, depth + 1))
    if isinstance(type_, GraphQLInputObjectType):
        return _input_object(type_, open_types, depth)
    if isinstance(type_, GraphQLEnumType):
        return _enum(type_)
    if isinstance(type_, GraphQLScalarType):
        return _scalar(type_)
    raise _Unsupported


def _non_null(inner: Coerce) -> Coerce:
    def coerce(value: Any) -> Any:
        return Undefined if value is None or value is Undefined else inner(value)

    return coerce


def _list(item: Coerce) -> Coerce:
    def coerce(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if not is_iterable(value):  # a single value is a list of one
            single = item(value)
            return Undefined if single is Undefined else [single]
        if not isinstance(value, list | tuple):
            return Undefined  # a one-shot iterator must reach graphql-core unconsumed
        out: list[Any] = []
        append = out.append
        for entry in value:
            coerced = item(entry)
            if coerced is Undefined:
                return Undefined
            append(coerced)
        return out

    return coerce


def _input_object(type_: GraphQLInputObjectType, open_types: frozenset[str], depth: int) -> Coerce:
    """A generated function per input type (thousands of values per request: one
    straight-line block per field, the String and enum fast paths written inline);
    field names enter the source only as ``repr`` literals."""
    if type_.is_one_of or type_.name in open_types:
        raise _Unsupported
    inside = open_types | {type_.name}
    namespace: dict[str, Any] = {
        "U": Undefined,
        "names": frozenset(type_.fields),
        "out_type": type_.out_type,
    }
    body = [
        "def coerce(value):",
        "    if value is None or value is U:",
        "        return None",
        "    if not isinstance(value, dict) or not names.issuperset(value):",
        "        return U  # unknown fields: graphql-core decides and reports",
        "    out = {}",
    ]
    for i, (name, field) in enumerate(type_.fields.items()):
        out_name = field.out_name or name
        namespace[f"f{i}"] = _build(field.type, inside, depth + 1)
        body.append(f"    v = value.get({name!r}, U)")
        body.append("    if v is U:")
        if is_required_input_field(field):
            body.append("        return U")
        else:
            default = coerce_default_value(field)  # memoized on the field by graphql-core
            if default is not Undefined:
                namespace[f"d{i}"] = default
                body.append(f"        out[{out_name!r}] = d{i}")
            else:
                body.append("        pass")
        body += _field_source(i, field.type, out_name, namespace)
    body.append("    return out_type(out)")
    exec("\n".join(body), namespace)  # noqa: S102 - names only as repr literals
    coerce: Coerce = namespace["coerce"]
    return coerce


def _field_source(
    i: int, type_: GraphQLInputType, out_name: str, namespace: dict[str, Any]
) -> list[str]:
    """The ``else`` branch coercing a given value ``v`` of field ``i``: what ``f{i}``
    returns, with the value itself for a str of a String field and the member for a
    known name of an enum field (the built coercers' own fast paths)."""
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    general = [
        "    else:",
        f"        c = f{i}(v)",
        "        if c is U:",
        "            return U",
        f"        out[{out_name!r}] = c",
    ]
    if inner is GraphQLString:
        return ["    elif v.__class__ is str:", f"        out[{out_name!r}] = v", *general]
    if isinstance(inner, GraphQLEnumType):
        namespace[f"m{i}"] = _members(inner)
        return [
            f"    elif v.__class__ is str and v in m{i}:",
            f"        out[{out_name!r}] = m{i}[v]",
            *general,
        ]
    return general


def _members(type_: GraphQLEnumType) -> dict[str, Any]:
    """Each name's value, computed once by the type itself (Strawberry's enum types
    wrap it in the Python enum)."""
    return {name: type_.coerce_input_value(name) for name in type_.values}


def _enum(type_: GraphQLEnumType) -> Coerce:
    members = _members(type_)

    def coerce(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if type(value) is str and value in members:
            return members[value]
        return _leaf(type_.coerce_input_value, value)

    return coerce


def _scalar(type_: GraphQLScalarType) -> Coerce:
    parse = type_.coerce_input_value
    plain_string = type_ is GraphQLString  # returns a str unchanged

    def coerce(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if plain_string and type(value) is str:
            return value
        return _leaf(parse, value)

    return coerce


def _leaf(parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except Exception:
        return Undefined
