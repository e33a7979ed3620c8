"""Leaf values as graphql-core serializes them: the schema's own scalar and enum
serializers, with identity fast paths where graphql-core returns the value itself
(a str for String, an in-range int for Int, ...) and enum names memoized."""

import math
from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLScalarType,
    GraphQLString,
)

Serialize = Callable[[Any], Any]
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def serializer(type_: GraphQLScalarType | GraphQLEnumType) -> Serialize:
    """The function graphql-core would apply to a non-null leaf value (raising where
    it raises); identity fast paths where its result is the value itself."""
    fast = _FAST.get(type_.name) if type_ in _BUILT_IN else None
    if fast is not None:
        return fast
    if isinstance(type_, GraphQLEnumType):
        return _memoized(type_.serialize)
    return type_.serialize


_BUILT_IN = (GraphQLString, GraphQLInt, GraphQLFloat, GraphQLBoolean, GraphQLID)
_FAST: dict[str, Serialize] = {
    "String": lambda v: v if type(v) is str else GraphQLString.serialize(v),
    "Int": lambda v: v if type(v) is int and _INT_MIN <= v <= _INT_MAX else GraphQLInt.serialize(v),
    "Float": lambda v: v if type(v) is float and math.isfinite(v) else GraphQLFloat.serialize(v),
    "Boolean": lambda v: v if type(v) is bool else GraphQLBoolean.serialize(v),
    "ID": lambda v: v if type(v) is str else GraphQLID.serialize(v),
}


def _memoized(serialize: Serialize) -> Serialize:
    names: dict[Any, Any] = {}

    def enum_name(value: Any) -> Any:
        try:
            return names[value]
        except KeyError:
            name = names[value] = serialize(value)
            return name
        except TypeError:  # unhashable: not an enum member; let graphql-core judge
            return serialize(value)

    return enum_name
