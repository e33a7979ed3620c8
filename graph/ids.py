"""Relay global IDs: base64("TypeName:databaseId")."""

import base64
import binascii

from persistence.errors import ValidationFailed

NODE_TYPES = frozenset(
    {
        "ValidationSession",
        "ValidationResult",
        "Discrepancy",
        "BehavioralTestResult",
        "ValidationMetric",
    }
)


# base64.urlsafe_b64encode in one C call and one translate (a large page writes
# thousands of ids).
URL_SAFE = bytes.maketrans(b"+/", b"-_")


def to_global_id(type_name: str, db_id: int) -> str:
    encoded = binascii.b2a_base64(f"{type_name}:{db_id}".encode(), newline=False)
    return encoded.translate(URL_SAFE).decode()


class GlobalIdOf:
    """``to_global_id`` for one type as a one-argument function. Execution plans'
    leaf writers recognise it and write its body inline (for an int id of a type named
    by a word, formatted as bytes and not translated: graph.plan.serialize says why)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __call__(self, db_id: int) -> str:
        return to_global_id(self.type_name, db_id)


def from_global_id(global_id: str, field: str = "id") -> tuple[str, int]:
    """(type name, database id); anything malformed is a ValidationFailed on ``field``."""
    try:
        decoded = base64.urlsafe_b64decode(global_id.encode()).decode()
        type_name, raw_id = decoded.split(":", 1)
        db_id = int(raw_id)
    except (binascii.Error, UnicodeError, ValueError):
        raise ValidationFailed(field, "is not a valid ID") from None
    # 0 is the id of computed-on-the-fly rows (live metrics): valid, never found.
    if type_name not in NODE_TYPES or not 0 <= db_id < 2**31:
        raise ValidationFailed(field, "is not a valid ID")
    return type_name, db_id


def expect_global_id(global_id: str, type_name: str, field: str = "id") -> int:
    """The database id of a global ID that must be of ``type_name``."""
    actual, db_id = from_global_id(global_id, field)
    if actual != type_name:
        raise ValidationFailed(field, f"is a {actual} ID, expected a {type_name} ID")
    return db_id
