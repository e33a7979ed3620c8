"""A cheaper way for Strawberry to build the inputs that come in thousands.

Strawberry converts an input value field by field through its generic
``convert_argument`` (type resolution, optional/list/enum dispatch per value): about
13 µs per discrepancy, over half the server time of a 10,000-discrepancy
recordValidationResult. graphql-core has already coerced the value (scalars parsed,
enum names mapped to members) and filled in published defaults, so for a leaf field
(scalar or enum) Strawberry passes the value on unchanged. ``flat_input`` sets the
type definition's ``from_input`` hook (Strawberry's hook for types that build their
own value) to do exactly that with a prepared field table; any other field still
goes through Strawberry's conversion (``InputContext.convert``). The GraphQL schema
is unchanged.
"""

from collections.abc import Mapping
from dataclasses import MISSING
from datetime import datetime
from typing import Any, TypeVar

import strawberry
from strawberry.scalars import JSON
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    get_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition

T = TypeVar("T", bound=type)

# Scalars graphql-core hands over as the Python value Strawberry would pass on.
_LEAF_SCALARS: frozenset[object] = frozenset({str, int, float, bool, strawberry.ID, JSON, datetime})
# (python name, type to convert with or None for a leaf) per GraphQL field name.
_Fields = dict[str, tuple[str, Any]]


def flat_input(cls: T) -> T:
    """Build instances of the Strawberry input ``cls`` without per-field dispatch for
    its leaf fields (see the module docstring)."""
    definition = get_object_definition(cls, strict=True)
    # Fields without a Python default are None unless given, as Strawberry does.
    unset: dict[str, object] = {
        f.python_name: None
        for f in definition.fields
        if f.default_value is MISSING and f.default_factory is MISSING
    }
    fields: _Fields = {}

    def from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
        if not fields:  # GraphQL names depend on the schema's config: known only now
            fields.update(_field_table(definition, context))
        kwargs = dict(unset)
        for name, item in value.items():
            python_name, convert_type = fields[name]
            kwargs[python_name] = (
                item if convert_type is None else context.convert(item, convert_type, name)
            )
        return type_(**kwargs)

    definition.from_input = from_input
    return cls


def _field_table(definition: StrawberryObjectDefinition, context: InputContext) -> _Fields:
    table: _Fields = {}
    for field in definition.fields:
        type_ = field.resolve_type(type_definition=definition)
        table[context.config.name_converter.from_field(field)] = (
            field.python_name,
            None if _is_leaf(type_) else type_,
        )
    return table


def _is_leaf(type_: object) -> bool:
    if isinstance(type_, StrawberryMaybe):  # Some(...) wrapping: Strawberry's job
        return False
    if isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    return isinstance(type_, StrawberryEnumDefinition) or type_ in _LEAF_SCALARS
