"""Hypothesis strategies for GraphQL input values as clients send them, and the
comparison of two conversions' results (shared by the tests of graph.types.flat_input
and graph.variables)."""

import dataclasses
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    get_nullable_type,
)
from hypothesis import strategies as st

from graph.schema import schema

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
# What a client may send for each kind of GraphQL input field.
BY_KIND: dict[str, st.SearchStrategy[Any]] = {
    "String": st.text(),
    "ID": st.text(),
    "Float": st.floats(allow_nan=False, allow_infinity=False),
    "Int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "Boolean": st.booleans(),
    "DateTime": st.datetimes().map(lambda d: d.isoformat() + "Z"),
    "JSON": JSON_VALUES,
}


def client_values(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Input objects of ``type_name`` as a client sends them: required fields always,
    optional ones omitted, null or set."""
    graphql_type = schema._schema.get_type(type_name)
    assert isinstance(graphql_type, GraphQLInputObjectType)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in graphql_type.fields.items():
        nullable = not isinstance(field.type, GraphQLNonNull)
        strategy = values_of(get_nullable_type(field.type))
        (optional if nullable else required)[name] = st.none() | strategy if nullable else strategy
    return st.fixed_dictionaries(required, optional=optional)


def values_of(graphql_type: Any) -> st.SearchStrategy[Any]:
    """Valid values of a nullable GraphQL input type."""
    if isinstance(graphql_type, GraphQLList):  # lists of input objects: a few items
        return st.lists(values_of(get_nullable_type(graphql_type.of_type)), max_size=3)
    if isinstance(graphql_type, GraphQLInputObjectType):
        return client_values(graphql_type.name)
    if isinstance(graphql_type, GraphQLEnumType):
        return st.sampled_from(sorted(graphql_type.values))
    return BY_KIND[graphql_type.name]


def assert_same(a: Any, b: Any) -> None:
    """Equal values of the same Python types (an enum member stays a member, a float a
    float, an input object its class), all the way down; NaN equals NaN."""
    assert type(a) is type(b), (a, b)
    if dataclasses.is_dataclass(a):
        if hasattr(a, "__dict__"):  # no attribute beyond the fields, none missing
            assert vars(a).keys() == vars(b).keys(), (a, b)
        for field in dataclasses.fields(a):
            assert_same(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, float) and a != a:  # noqa: PLR0124 - NaN
        assert b != b  # noqa: PLR0124
    else:
        assert a == b
