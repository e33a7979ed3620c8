"""Input checks against the tables' own column definitions, so every rule (length,
required, enum values, ranges) has one source: the model. Errors name the field."""

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa

from persistence.errors import ValidationFailed
from persistence.sqltypes import StrEnumType, UTCDateTime

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
# One encoder for every JSON value (json.dumps with options builds one per call).
_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
# The same C encoder built once, without the circular-reference bookkeeping (half the
# cost of _JSON.encode on a bulk write's small values); what it fails on gets
# _JSON's own verdict. None where the C accelerator is missing.
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_FAST_JSON: Any = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(
        None, _JSON.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, False
    )
)
_TOO_DEEP = f"must be nested at most {MAX_JSON_DEPTH} levels deep"
_ABSENT = object()
# Checks a non-null value for one column: returns it coerced or raises _Invalid.
_Check = Callable[[Any], Any]


def check_row(table: sa.Table, values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validate ``values`` for an INSERT into ``table``; return them with enum values
    coerced. Unknown keys, missing required columns and bad values raise
    ValidationFailed naming ``prefix + column``."""
    allowed, checks = _row_checks(table)
    if not allowed.issuperset(values):
        key = next(key for key in values if key not in allowed)
        raise ValidationFailed(prefix + key, "unknown field")
    out: dict[str, Any] = {}
    for name, required, nullable, check in checks:
        value = values.get(name, _ABSENT)
        if value is None:
            if not nullable:
                raise ValidationFailed(prefix + name, "must not be null")
            out[name] = None
        elif value is not _ABSENT:
            try:
                out[name] = check(value)
            except _Invalid as error:
                raise ValidationFailed(prefix + name, error.message) from None
        elif required:
            raise ValidationFailed(prefix + name, "is required")
    return out


def check_value(column: sa.Column[Any], value: Any, field: str) -> Any:
    """``value`` checked (and coerced) for ``column``; ValidationFailed names ``field``."""
    if value is None:
        if not column.nullable:
            raise ValidationFailed(field, "must not be null")
        return None
    try:
        return _value_checker(column)(value)
    except _Invalid as error:
        raise ValidationFailed(field, error.message) from None


def coerce_enum(enum_cls: type[E], value: Any, field: str) -> E:
    try:
        return _check_enum(enum_cls, value)
    except _Invalid as error:
        raise ValidationFailed(field, error.message) from None


class _Invalid(Exception):
    """A column check failed; the caller names the field (built only on failure)."""

    def __init__(self, message: str) -> None:
        self.message = message


@functools.cache
def _row_checks(
    table: sa.Table,
) -> tuple[frozenset[str], tuple[tuple[str, bool, bool, _Check], ...]]:
    """The keys an INSERT may set, and (column, required, nullable, check of a non-null
    value) in table order: the dispatch on column types is done once per table, not
    once per value (bulk inserts check up to 10,000 rows)."""
    columns = [c for c in table.c if c.name not in SERVER_MANAGED]
    return (
        frozenset(c.name for c in columns),
        tuple((c.name, _required(c), bool(c.nullable), _value_checker(c)) for c in columns),
    )


@functools.cache
def _value_checker(column: sa.Column[Any]) -> _Check:  # noqa: PLR0911 - one dispatch on the type
    enum_cls = _enum_class(column.type)
    if enum_cls is not None:
        return functools.partial(_check_enum, enum_cls)
    if isinstance(column.type, sa.JSON):
        return _check_json
    if isinstance(column.type, UTCDateTime):
        return _check_datetime
    python_type = column.type.python_type
    if python_type is bool:
        return _check_bool
    if python_type is int:
        return functools.partial(_check_int, column.name in POSITIVE)
    if python_type is float:
        return functools.partial(_check_float, RANGES.get(column.name), column.name in NON_NEGATIVE)
    if python_type is str:
        return functools.partial(_check_str, getattr(column.type, "length", None))
    return _unchecked


def _unchecked(value: Any) -> Any:
    return value


def _check_enum(enum_cls: type[E], value: Any) -> E:
    if type(value) is enum_cls:  # a member already (GraphQL enums are these enums)
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise _Invalid(f"must be one of {allowed}; got {value!r}") from None


def _check_datetime(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise _Invalid("must be a date and time")
    if value.tzinfo is None:
        raise _Invalid("must include a timezone offset")
    return value


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be a boolean")
    return value


def _check_int(positive: bool, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid("must be an integer")
    if positive and value <= 0:
        raise _Invalid("must be greater than 0")
    if not -(2**31) <= value < 2**31:
        raise _Invalid("is out of range for a 32-bit integer")
    return value


def _check_str(length: int | None, value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be a string")
    if length is not None and len(value) > length:
        raise _Invalid(f"must be at most {length} characters")
    if "\x00" in value:
        raise _Invalid("must not contain NUL characters")
    if not value.isascii() and _SURROGATE.search(value):  # ASCII: no search needed
        raise _Invalid("must be valid Unicode (no unpaired surrogates)")
    return value


def _check_float(closed_range: tuple[float, float] | None, non_negative: bool, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise _Invalid("must be a finite number")
    if closed_range is not None:
        low, high = closed_range
        if not low <= number <= high:
            raise _Invalid(f"must be between {low:g} and {high:g}; got {number:g}")
    if non_negative and number < 0:
        raise _Invalid("must not be negative")
    return number


def _check_json(value: Any) -> Any:
    # One C-level encoding does most of the work: ensure_ascii=False keeps lone
    # surrogates (keys too) visible to one regex search, and NUL stays escaped.
    try:
        encoded = _encode_json(value)
    except RecursionError:
        raise _Invalid(_TOO_DEEP) from None
    except (TypeError, ValueError):
        _check_depth(value)  # a too deep value says so first
        raise _Invalid("must be JSON (no NaN or Infinity)") from None
    # Depth <= containers + 1: only a value with many brackets needs the walk.
    if encoded.count("[") + encoded.count("{") >= MAX_JSON_DEPTH:
        _check_depth(value)
    # The limit counts the ASCII-escaped text (the stdlib default), where DEL and
    # every non-ASCII character take an escape.
    plain = encoded.isascii() and "\x7f" not in encoded
    size = len(encoded) if plain else len(json.dumps(value))
    if size > MAX_JSON_BYTES:
        raise _Invalid(f"must be at most {MAX_JSON_BYTES} bytes of JSON")
    if _SURROGATE.search(encoded):
        raise _Invalid("must be valid Unicode (no unpaired surrogates)")
    if "\\u0000" in encoded:
        # PostgreSQL jsonb cannot store NUL in strings.
        raise _Invalid("must not contain NUL characters")
    return value


def _encode_json(value: Any) -> str:
    if _FAST_JSON is not None:
        try:
            return "".join(_FAST_JSON(value, 0))
        except (RecursionError, TypeError, ValueError):
            pass  # _JSON says why (a circular value included)
    return _JSON.encode(value)


def _check_depth(value: Any) -> None:
    """Raise when ``value`` nests deeper than MAX_JSON_DEPTH (iterative: no recursion
    limit; stops at the first level past it, so a circular value ends too)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > MAX_JSON_DEPTH:
            raise _Invalid(_TOO_DEEP)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)


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
