"""Keyset pagination: opaque cursors over (sort value, id) and page results."""

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from persistence.errors import ValidationFailed

if TYPE_CHECKING:
    from persistence.driver_reads import Decoding

T = TypeVar("T")

MAX_PAGE_SIZE = 100
# Cursors we make are well under this; longer input is refused before decoding.
MAX_CURSOR_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    total_count: int
    has_next_page: bool
    # Set when ``items`` are the driver's raw records (``FixedRead.fetch_raw``): their
    # values by position, decoded by it (``raw`` reads only).
    decoding: "Decoding | None" = None


@dataclass(frozen=True, slots=True)
class Keyset:
    """Position after which a page starts: the last row's sort value and id."""

    value: Any
    id: int


def encode_cursor(value: Any, row_id: int) -> str:
    if isinstance(value, datetime):
        payload: list[Any] = ["t", value.isoformat(), row_id]
    else:
        payload = ["v", value, row_id]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "after") -> Keyset:
    """Parse a cursor made by encode_cursor; anything else is a ValidationFailed."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise ValidationFailed(field, "is not a valid cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, value, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(row_id, int) or isinstance(row_id, bool):
            raise TypeError
        if kind == "t":
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise TypeError
            return Keyset(parsed, row_id)
        if kind == "v" and (value is None or isinstance(value, int | float | str)):
            return Keyset(value, row_id)
        raise TypeError
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        raise ValidationFailed(field, "is not a valid cursor") from None


def check_page_size(first: int, field: str = "first") -> int:
    if first < 0:
        raise ValidationFailed(field, "must not be negative")
    if first > MAX_PAGE_SIZE:
        raise ValidationFailed(field, f"must be at most {MAX_PAGE_SIZE}; got {first}")
    return first
