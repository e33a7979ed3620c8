"""persistence.validation: each column kind's rule, the field named in the error, and
the per-table checks compiled once (bulk writes check up to 10,000 rows with them)."""

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from persistence.enums import SeverityLevel
from persistence.errors import ValidationFailed
from persistence.models import ValidationDiscrepancy, ValidationSession
from persistence.validation import MAX_JSON_BYTES, MAX_JSON_DEPTH, check_row, check_value

DISCREPANCIES: sa.Table = ValidationDiscrepancy.__table__  # type: ignore[attr-defined]
SESSIONS: sa.Table = ValidationSession.__table__  # type: ignore[attr-defined]
GOOD = {
    "session_id": 1,
    "result_id": 2,
    "discrepancy_type": "layout",
    "severity": "CRITICAL",
    "description": "differs",
}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        pytest.param("severity", "MEH", "must be one of CRITICAL, WARNING, INFO", id="enum"),
        pytest.param("description", None, "must not be null", id="not-null"),
        pytest.param("discrepancy_type", 7, "must be a string", id="str-type"),
        pytest.param("discrepancy_type", "x" * 101, "at most 100 characters", id="str-length"),
        pytest.param("description", "a\x00b", "must not contain NUL", id="str-nul"),
        pytest.param("description", "a\ud800", "unpaired surrogates", id="str-surrogate"),
        pytest.param("confidence", 1.5, "between 0 and 1; got 1.5", id="float-range"),
        pytest.param("confidence", True, "must be a number", id="float-bool"),
        pytest.param("confidence", float("inf"), "finite", id="float-inf"),
        pytest.param("is_resolved", 1, "must be a boolean", id="bool"),
        pytest.param("result_id", 2**31, "32-bit", id="int-range"),
        pytest.param("result_id", "2", "must be an integer", id="int-type"),
        pytest.param(
            "validation_context", _nested(MAX_JSON_DEPTH + 1), "nested at most", id="json-depth"
        ),
        pytest.param("validation_context", {"a": float("nan")}, "no NaN", id="json-nan"),
        pytest.param("validation_context", {"\ud800": 1}, "unpaired surrogates", id="json-key"),
        pytest.param("validation_context", ["\x00"], "must not contain NUL", id="json-nul"),
        pytest.param("resolved_at", "2026-01-01", "must be a date and time", id="datetime"),
        pytest.param("resolved_at", datetime(2026, 1, 1), "timezone offset", id="naive"),
    ],
)
def test_bad_value_names_the_field(column: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_value(DISCREPANCIES.c[column], value, f"items[3].{column}")
    assert info.value.field == f"items[3].{column}"
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("severity", "WARNING", SeverityLevel.WARNING),
        ("confidence", 1, 1.0),
        ("validation_context", {"a": [1, None]}, {"a": [1, None]}),
        ("resolved_at", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
        ("recommendation", None, None),
    ],
)
def test_good_value_is_coerced(column: str, value: Any, expected: Any) -> None:
    checked = check_value(DISCREPANCIES.c[column], value, column)
    assert checked == expected
    assert type(checked) is type(expected)


def test_check_row_coerces_and_keeps_only_given_columns() -> None:
    row = check_row(DISCREPANCIES, {**GOOD, "confidence": 0})
    assert row == {**GOOD, "severity": SeverityLevel.CRITICAL, "confidence": 0.0}
    assert isinstance(row["confidence"], float)


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        pytest.param({**GOOD, "bogus": 1}, "d.bogus", "unknown field", id="unknown"),
        pytest.param({**GOOD, "id": 1}, "d.id", "unknown field", id="server-managed"),
        pytest.param({**GOOD, "version": 1}, "d.version", "unknown field", id="version"),
        pytest.param(
            {k: v for k, v in GOOD.items() if k != "description"},
            "d.description",
            "is required",
            id="required",
        ),
        pytest.param({**GOOD, "severity": None}, "d.severity", "must not be null", id="null"),
    ],
)
def test_check_row_rejects(values: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_row(DISCREPANCIES, values, "d.")
    assert info.value.field == field
    assert message in str(info.value)


def test_tables_do_not_share_checks() -> None:
    # The compiled checks are per table: a column name one table allows is still
    # unknown to another.
    with pytest.raises(ValidationFailed) as info:
        check_row(SESSIONS, {"discrepancy_type": "layout"})
    assert info.value.field == "discrepancy_type"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(_nested(MAX_JSON_DEPTH), None, id="depth-at-limit"),
        pytest.param(_nested(MAX_JSON_DEPTH + 1), "nested at most", id="depth-over"),
        pytest.param([_nested(MAX_JSON_DEPTH - 1), float("nan")], "no NaN", id="nan-at-limit"),
        pytest.param([_nested(MAX_JSON_DEPTH + 1), float("nan")], "nested", id="deep-and-nan"),
        pytest.param(_nested(2_000), "nested at most", id="beyond-recursion-limit"),
        pytest.param({"s": "[{" * 100}, None, id="brackets-in-strings"),
        pytest.param({"emoji \U0001f600": "\U0001f600"}, None, id="astral-pair-is-fine"),
        pytest.param({"k": "\udfff"}, "unpaired surrogates", id="lone-low-surrogate"),
        # 166,667 x "é" is 1,000,002 chars escaped (\u00e9) but 333,336 bytes raw.
        pytest.param("é" * 166_667, "at most 1000000 bytes", id="size-counts-escapes"),
        pytest.param("x" * (MAX_JSON_BYTES - 2), None, id="size-at-limit"),
        pytest.param("x" * (MAX_JSON_BYTES - 1), "at most 1000000 bytes", id="size-over"),
    ],
)
def test_json_rules(value: Any, message: str | None) -> None:
    column = DISCREPANCIES.c["validation_context"]
    if message is None:
        assert check_value(column, value, "ctx") == value
    else:
        with pytest.raises(ValidationFailed, match=message):
            check_value(column, value, "ctx")


def test_json_circular_value_is_refused_not_walked_forever() -> None:
    # Only Python callers can build one; the depth walk used to follow it endlessly.
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    loop: list[Any] = []
    loop.append(loop)
    column = DISCREPANCIES.c["validation_context"]
    for value in (cycle, loop):
        with pytest.raises(ValidationFailed, match="nested at most"):
            check_value(column, value, "ctx")


def test_json_size_counts_escaped_del() -> None:
    # DEL is ASCII but the stdlib escapes it (\u007f): 6 characters each.
    column = DISCREPANCIES.c["validation_context"]
    with pytest.raises(ValidationFailed, match="at most 1000000 bytes"):
        check_value(column, "\x7f" * 200_000, "ctx")
    assert check_value(column, "\x7f" * 1_000, "ctx") == "\x7f" * 1_000


def test_check_row_names_the_field_of_a_bad_value_and_keeps_precedence() -> None:
    # Unknown keys first, then columns in table order.
    with pytest.raises(ValidationFailed) as info:
        check_row(DISCREPANCIES, {**GOOD, "severity": "MEH", "confidence": 7}, "items[2].")
    assert (info.value.field, "must be one of" in str(info.value)) == ("items[2].severity", True)
    with pytest.raises(ValidationFailed) as info:
        check_row(DISCREPANCIES, {"bogus": 1, "severity": "MEH"}, "x.")
    assert info.value.field == "x.bogus"
