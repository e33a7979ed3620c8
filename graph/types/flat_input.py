"""A cheaper way for Strawberry to build the inputs that come in thousands.

Strawberry converts an input value field by field through its generic
``convert_argument`` (type resolution, optional/list/enum dispatch per value): about
13 µs per discrepancy, over half the server time of a 10,000-discrepancy
recordValidationResult. graphql-core has already coerced the value (scalars parsed,
enum names mapped to members) and filled in published defaults, so for a leaf field
(scalar or enum) Strawberry passes the value on unchanged. ``flat_input`` sets the
type definition's ``from_input`` hook (Strawberry's hook for types that build their
own value) to do exactly that with a prepared field table. A list of all-leaf flat
inputs (the discrepancies of a result) is built item by item with the item's hook,
skipping Strawberry's dispatch per item too. Any other field still goes through
Strawberry's conversion (``InputContext.convert``). The GraphQL schema is unchanged.
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
    # Fields without a Python default are None unless given, as Strawberry does.
    unset: dict[str, object] = {
        f.python_name: None
        for f in definition.fields
        if f.default_value is MISSING and f.default_factory is MISSING
    }
    # GraphQL name -> (python name, how to build its value), known at the first call:
    # the names depend on the schema's config.
    fields: dict[str, tuple[str, _Build]] = {}

    def from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
        if not fields:
            fields.update(_field_table(definition, context))
        kwargs = dict(unset)
        for name, item in value.items():
            python_name, build = fields[name]
            kwargs[python_name] = item if build is None else build(item, name, context)
        return type_(**kwargs)

    definition.from_input = from_input
    _HOOKS[cls] = from_input
    return cls


def _field_table(
    definition: StrawberryObjectDefinition, context: InputContext
) -> dict[str, tuple[str, _Build]]:
    return {
        context.config.name_converter.from_field(field): (
            field.python_name,
            _builder(field.resolve_type(type_definition=definition)),
        )
        for field in definition.fields
    }


def _builder(type_: Any) -> _Build:
    if _is_leaf(type_):
        return None
    list_type = type_.of_type if _plain_optional(type_) else type_
    item = list_type.of_type if isinstance(list_type, StrawberryList) else None
    if isinstance(item, type) and item in _HOOKS and _all_leaves(item):
        # Items need no context of their own: all their fields are leaves.
        hook, cls = _HOOKS[item], item

        def build_items(value: Any, name: str, context: InputContext) -> Any:
            if value is None:
                return None
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
