"""Input checks against the tables' own column definitions, so every rule (length,
required, enum values, ranges) has one source: the model. Errors name the field."""

import json
import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa

from persistence.errors import ValidationFailed
from persistence.sqltypes import StrEnumType

E = TypeVar("E", bound=StrEnum)

# Closed ranges the CHECK constraints enforce; checked here first for a clear message.
RANGES: dict[str, tuple[float, float]] = {
    "fidelity_score": (0.0, 1.0),
    "confidence": (0.0, 1.0),
}
NON_NEGATIVE = frozenset(
    {"execution_time", "source_load_time", "target_load_time", "execution_duration"}
)
POSITIVE = frozenset({"behavioral_timeout"})
MAX_JSON_BYTES = 1_000_000
MAX_JSON_DEPTH = 64
# UTF-16 halves without their pair: valid in JSON text, not storable by either driver.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Columns the database owns; callers never set them on insert.
SERVER_MANAGED = frozenset({"id", "created_at", "updated_at", "version"})


def check_row(table: sa.Table, values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validate ``values`` for an INSERT into ``table``; return them with enum values
    coerced. Unknown keys, missing required columns and bad values raise
    ValidationFailed naming ``prefix + column``."""
    out: dict[str, Any] = {}
    for key in values:
        if key not in table.c or key in SERVER_MANAGED:
            raise ValidationFailed(prefix + key, "unknown field")
    for column in table.c:
        name = column.name
        if name in SERVER_MANAGED:
            continue
        if name not in values:
            if _required(column):
                raise ValidationFailed(prefix + name, "is required")
            continue
        out[name] = check_value(column, values[name], prefix + name)
    return out


def check_value(  # noqa: PLR0911, PLR0912 - one flat dispatch on the column type
    column: sa.Column[Any], value: Any, field: str
) -> Any:
    if value is None:
        if not column.nullable:
            raise ValidationFailed(field, "must not be null")
        return None
    enum_cls = _enum_class(column.type)
    if enum_cls is not None:
        return coerce_enum(enum_cls, value, field)
    if isinstance(column.type, sa.JSON):
        return _check_json(value, field)
    python_type = column.type.python_type
    if python_type is bool:
        if not isinstance(value, bool):
            raise ValidationFailed(field, "must be a boolean")
        return value
    if python_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationFailed(field, "must be an integer")
        if column.name in POSITIVE and value <= 0:
            raise ValidationFailed(field, "must be greater than 0")
        if not -(2**31) <= value < 2**31:
            raise ValidationFailed(field, "is out of range for a 32-bit integer")
        return value
    if python_type is float:
        return _check_float(column.name, value, field)
    if python_type is str:
        if not isinstance(value, str):
            raise ValidationFailed(field, "must be a string")
        length = getattr(column.type, "length", None)
        if length is not None and len(value) > length:
            raise ValidationFailed(field, f"must be at most {length} characters")
        if "\x00" in value:
            raise ValidationFailed(field, "must not contain NUL characters")
        if _SURROGATE.search(value):
            raise ValidationFailed(field, "must be valid Unicode (no unpaired surrogates)")
        return value
    return value


def coerce_enum(enum_cls: type[E], value: Any, field: str) -> E:
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ValidationFailed(field, f"must be one of {allowed}; got {value!r}") from None


def _check_float(name: str, value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(field, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValidationFailed(field, "must be a finite number")
    if name in RANGES:
        low, high = RANGES[name]
        if not low <= number <= high:
            raise ValidationFailed(field, f"must be between {low:g} and {high:g}; got {number:g}")
    if name in NON_NEGATIVE and number < 0:
        raise ValidationFailed(field, "must not be negative")
    return number


def _check_json(value: Any, field: str) -> Any:
    # Depth first: deeper documents would hit the recursion limit of what follows.
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValidationFailed(field, f"must be nested at most {MAX_JSON_DEPTH} levels deep")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationFailed(field, "must be JSON (no NaN or Infinity)") from None
    if len(encoded) > MAX_JSON_BYTES:
        raise ValidationFailed(field, f"must be at most {MAX_JSON_BYTES} bytes of JSON")
    if _has_surrogate(value):
        raise ValidationFailed(field, "must be valid Unicode (no unpaired surrogates)")
    if "\\u0000" in encoded:
        # PostgreSQL jsonb cannot store NUL in strings.
        raise ValidationFailed(field, "must not contain NUL characters")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _has_surrogate(value: Any) -> bool:
    """Whether any string (key or value) of a decoded JSON value has a lone surrogate."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(item) for item in value)
    return False


def _enum_class(type_: sa.types.TypeEngine[Any]) -> type[StrEnum] | None:
    enum_cls = getattr(type_, "enum_cls" if isinstance(type_, StrEnumType) else "enum_class", None)
    if isinstance(enum_cls, type) and issubclass(enum_cls, StrEnum):
        return enum_cls
    return None


def _required(column: sa.Column[Any]) -> bool:
    return (
        not column.nullable
        and column.server_default is None
        and column.default is None
        and not column.primary_key
    )
