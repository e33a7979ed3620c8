"""A cheaper way for Strawberry to build the inputs that come in thousands.

Strawberry converts an input value field by field through its generic
``convert_argument`` (type resolution, optional/list/enum dispatch per value): about
13 µs per discrepancy, over half the server time of a 10,000-discrepancy
recordValidationResult. graphql-core has already coerced the value (scalars parsed,
enum names mapped to members) and filled in published defaults, so for a leaf field
(scalar or enum) Strawberry passes the value on unchanged. ``flat_input`` sets the
type definition's ``from_input`` hook (Strawberry's hook for types that build their
own value) to do exactly that with a function generated per type, which sets the
fields of a new instance as the dataclass ``__init__`` would (plain dataclasses
only). A list of all-leaf flat inputs (the discrepancies of a result) is built item
by item with the item's hook, skipping Strawberry's dispatch per item too. Any other
field still goes through Strawberry's conversion (``InputContext.convert``). The
GraphQL schema is unchanged.
"""

from collections.abc import Callable, Mapping
from dataclasses import MISSING
from datetime import datetime
from typing import Any, TypeVar

import strawberry
from strawberry.scalars import JSON
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    get_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition

T = TypeVar("T", bound=type)
_Hook = Callable[[type, Mapping[str, Any], InputContext], Any]
# How one field's value is built (None: a leaf, passed on as graphql-core coerced it).
_Build = Callable[[Any, str, InputContext], Any] | None

# Scalars graphql-core hands over as the Python value Strawberry would pass on.
_LEAF_SCALARS: frozenset[object] = frozenset({str, int, float, bool, strawberry.ID, JSON, datetime})
# The hook of every class decorated with flat_input.
_HOOKS: dict[type, _Hook] = {}


def flat_input(cls: T) -> T:
    """Build instances of the Strawberry input ``cls`` without per-field dispatch for
    its leaf fields, and the items of its lists of all-leaf flat inputs without
    Strawberry's per-item dispatch (see the module docstring)."""
    definition = get_object_definition(cls, strict=True)
    if any(isinstance(f.type, StrawberryMaybe) for f in definition.fields):
        # Strawberry checks explicit nulls of Maybe fields in validation only for
        # types without a from_input hook.
        raise TypeError(f"flat_input: {cls.__name__} has a Maybe field")
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or params.frozen or "__slots__" in vars(cls) or hasattr(cls, "__post_init__"):
        # Instances are made by setting the fields, as the dataclass __init__ does.
        raise TypeError(f"flat_input: {cls.__name__} is not a plain dataclass")

    made: list[_Hook] = []

    def from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
        # The field names depend on the schema's config: known at the first call,
        # which puts the generated function in this one's place.
        if not made:
            made.append(_maker(definition, context))
            definition.from_input = _HOOKS[cls] = made[0]
        return made[0](type_, value, context)

    definition.from_input = from_input
    _HOOKS[cls] = from_input
    return cls


def _maker(definition: StrawberryObjectDefinition, context: InputContext) -> _Hook:
    """A function generated for the type: each field set from the coerced value (its
    GraphQL name given) or its default (None for a field without one, as Strawberry
    passes it); fields that are not leaves built by ``_builder``'s function. Names
    enter the source only as ``repr`` literals, attribute names as checked
    identifiers."""
    namespace: dict[str, Any] = {"new": object.__new__, "absent": _ABSENT}
    body = ["def make(type_, value, context):", "    o = new(type_)", "    get = value.get"]
    for i, field in enumerate(definition.fields):
        name = context.config.name_converter.from_field(field)
        attribute = field.python_name
        if not attribute.isidentifier():  # pragma: no cover - Python names always are
            raise TypeError(f"flat_input: field {attribute!r}")
        if field.default_factory is not MISSING:
            namespace[f"f{i}"] = field.default_factory
            default = f"f{i}()"
        elif field.default_value is not MISSING:
            namespace[f"d{i}"] = field.default_value
            default = f"d{i}"
        else:
            default = "None"
        build = _builder(field.resolve_type(type_definition=definition))
        if build is None:
            if default == "None":
                body.append(f"    o.{attribute} = get({name!r})")
            elif default.endswith("()"):
                body.append(
                    f"    o.{attribute} = value[{name!r}] if {name!r} in value else {default}"
                )
            else:
                body.append(f"    o.{attribute} = get({name!r}, {default})")
            continue
        namespace[f"b{i}"] = build
        body += [
            f"    v = get({name!r}, absent)",
            f"    o.{attribute} = {default} if v is absent else b{i}(v, {name!r}, context)",
        ]
    body.append("    return o")
    exec("\n".join(body), namespace)  # noqa: S102 - names only as literals
    make: _Hook = namespace["make"]
    return make


_ABSENT = object()


def _builder(type_: Any) -> _Build:
    if _is_leaf(type_):
        return None
    list_type = type_.of_type if _plain_optional(type_) else type_
    item = list_type.of_type if isinstance(list_type, StrawberryList) else None
    if isinstance(item, type) and item in _HOOKS and _all_leaves(item):
        # Items need no context of their own: all their fields are leaves.
        cls = item

        def build_items(value: Any, name: str, context: InputContext) -> Any:
            if value is None:
                return None
            hook = _HOOKS[cls]  # per list: the generated one after the first item
            return [None if entry is None else hook(cls, entry, context) for entry in value]

        return build_items

    def build(value: Any, name: str, context: InputContext) -> Any:
        return context.convert(value, type_, name)

    return build


def _all_leaves(cls: type) -> bool:
    definition = get_object_definition(cls, strict=True)
    return all(_is_leaf(f.resolve_type(type_definition=definition)) for f in definition.fields)


def _plain_optional(type_: object) -> bool:
    # Maybe (Some(...) wrapping) is an Optional too, and Strawberry's job.
    return isinstance(type_, StrawberryOptional) and not isinstance(type_, StrawberryMaybe)


def _is_leaf(type_: object) -> bool:
    if isinstance(type_, StrawberryMaybe):
        return False
    if isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    return isinstance(type_, StrawberryEnumDefinition) or type_ in _LEAF_SCALARS
