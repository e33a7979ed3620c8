"""Leaf values as graphql-core serializes them: the schema's own scalar and enum
serializers, with identity fast paths where graphql-core returns the value itself
(a str for String, an in-range int for Int, ...) and enum names memoized."""

import binascii
import math
import re
from collections.abc import Callable, Sequence
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

from graph.ids import URL_SAFE, GlobalIdOf
from persistence.driver_reads import MEMO_SIZE, Decode, Memo

Serialize = Callable[[Any], Any]
_WORD = re.compile(r"[A-Za-z0-9_]+")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def serializer(type_: GraphQLScalarType | GraphQLEnumType) -> Serialize:
    """The function graphql-core would apply to a non-null leaf value (raising where
    it raises); identity fast paths where its result is the value itself."""
    fast = _FAST.get(type_.name) if type_ in _BUILT_IN else None
    if fast is not None:
        return fast
    if isinstance(type_, GraphQLEnumType):
        return _EnumNames(type_.serialize)
    return type_.serialize


_BUILT_IN = (GraphQLString, GraphQLInt, GraphQLFloat, GraphQLBoolean, GraphQLID)
_FAST: dict[str, Serialize] = {
    "String": lambda v: v if type(v) is str else GraphQLString.serialize(v),
    "Int": lambda v: v if type(v) is int and _INT_MIN <= v <= _INT_MAX else GraphQLInt.serialize(v),
    "Float": lambda v: v if type(v) is float and math.isfinite(v) else GraphQLFloat.serialize(v),
    "Boolean": lambda v: v if type(v) is bool else GraphQLBoolean.serialize(v),
    "ID": lambda v: v if type(v) is str else GraphQLID.serialize(v),
}


class _EnumNames:
    """An enum serializer memoized per value (``names``: value -> name, never empty;
    generated writers look names up inline and call this only on a miss)."""

    __slots__ = ("names", "serialize")

    def __init__(self, serialize: Serialize) -> None:
        self.serialize = serialize
        self.names: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        try:
            return self.names[value]
        except KeyError:
            name = self.names[value] = self.serialize(value)
            return name
        except TypeError:  # unhashable: not an enum member; let graphql-core judge
            return self.serialize(value)


# (response key, row column position, serializer, non-null) of one leaf
LeafSpec = tuple[str, int, Serialize, bool]
Writer = Callable[[Sequence[Any], Sequence[dict[str, Any]]], None]

# The fast paths above, written inline in generated writers (no call per value).
_INLINE = {
    "String": "v if v.__class__ is str else {s}(v)",
    "ID": "v if v.__class__ is str else {s}(v)",
    "Boolean": "v if v.__class__ is bool else {s}(v)",
    "Int": f"v if v.__class__ is int and {_INT_MIN} <= v <= {_INT_MAX} else {{s}}(v)",
    "Float": "v if v.__class__ is float and isfinite(v) else {s}(v)",
}


def leaf_writer(
    leaves: Sequence[LeafSpec],
    on_null: type[Exception],
    decoders: Sequence[Decode | None] | None = None,
) -> Writer:
    """A function writing the leaves of every row into its response dictionary,
    generated for this selection (one straight-line block per leaf instead of an
    interpreted loop). A null in a non-null leaf raises ``on_null``. Keys and column
    positions enter the source only as literals. With ``decoders`` (per position, see
    ``driver_reads.Decoding``) the rows are raw driver records, decoded here: an enum
    column's database value maps straight to its GraphQL name through one memo."""
    namespace: dict[str, Any] = {
        "isfinite": math.isfinite,
        "on_null": on_null,
        "b64": binascii.b2a_base64,
        "url_safe": URL_SAFE,
    }
    body = ["def write(rows, outs):", "    for row, out in zip(rows, outs):"]
    inline = {fast: name for name, fast in _FAST.items()}
    for i, (key, position, serialize, non_null) in enumerate(leaves):
        name = f"s{i}"
        namespace[name] = serialize
        decode = decoders[position] if decoders else None
        body.append(f"        v = row[{int(position)}]")  # rows: the table's columns first
        if isinstance(decode, Memo) and isinstance(serialize, _EnumNames):
            # An enum processor maps None to None and a value to a member: the null
            # check holds on the database value, and the name is never empty.
            names = namespace[f"s{i}"] = _DecodedNames(decode, serialize)
            namespace[f"n{i}"] = names.names
            expression = f"n{i}.get(v) or {name}(v)"
        else:
            if isinstance(decode, Memo):  # a hit is the processor's result, never falsy
                namespace[f"d{i}"], namespace[f"m{i}"] = decode, decode.values
                body.append(f"        v = m{i}.get(v) or d{i}(v)")
            elif decode is not None:
                namespace[f"d{i}"] = decode
                body.append(f"        v = d{i}(v)")
            expression = _expression(i, serialize, inline, namespace)
        if non_null:
            body += ["        if v is None:", "            raise on_null"]
            body.append(f"        out[{key!r}] = {expression}")
        else:
            body += ["        if v is not None:", f"            out[{key!r}] = {expression}"]
    if not leaves:
        body.append("        pass")
    exec("\n".join(body), namespace)  # noqa: S102 - source built from literals above
    writer: Writer = namespace["write"]
    return writer


def _expression(
    i: int, serialize: Serialize, inline: dict[Serialize, str], namespace: dict[str, Any]
) -> str:
    """The source serializing ``v`` (a decoded, non-null value) for leaf ``i``."""
    name = f"s{i}"
    if isinstance(serialize, GlobalIdOf):  # to_global_id's body, without two calls
        namespace[f"t{i}"] = f"{serialize.type_name}:"
        general = f'b64(f"{{t{i}}}{{v}}".encode(), newline=False).translate(url_safe).decode()'
        if not _WORD.fullmatch(serialize.type_name):
            return general
        # "Type:<int>" is formatted as bytes directly, and its base64 has no "+" or "/"
        # to translate: those encode 6-bit groups 62 and 63, which ASCII bytes only
        # reach as a byte's low six bits in ">?~" and DEL, none of them in a word,
        # ":", "-" or a digit.
        namespace[f"p{i}"] = f"{serialize.type_name}:%d".encode()
        return f"b64(p{i} % v, newline=False).decode() if v.__class__ is int else {general}"
    if isinstance(serialize, _EnumNames):
        # An enum name is never empty; unhashable values fail the lookup with a
        # TypeError, which makes the plan give up (standard execution answers).
        namespace[f"n{i}"] = serialize.names
        return f"n{i}.get(v) or {name}(v)"
    return _INLINE.get(inline.get(serialize, ""), "{s}(v)").format(s=name)


class _DecodedNames:
    """An enum column's GraphQL name per database value: decoded, then serialized;
    memoized per value (``names``, bounded like the decoder's own memo)."""

    __slots__ = ("decode", "names", "serialize")

    def __init__(self, decode: Memo, serialize: _EnumNames) -> None:
        self.decode, self.serialize = decode, serialize
        self.names: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        name = self.serialize(self.decode(value))
        if len(self.names) < MEMO_SIZE:
            self.names[value] = name  # a database value (str): hashable
        return name
