"""Same answer check: every server must serve the same JSON as migval.

"JSON-identical" here is stricter than ``json.loads(a) == json.loads(b)``: objects
compare as ordered key lists (key order matters) and numbers keep their kind (1 and
1.0 differ). Byte-identical answers are reported as such. migval's top-level
``extensions`` (e.g. the query cost) are metadata the floors do not compute: they are
left out of the comparison and printed.
"""

import json
from typing import Any

from bench.servers import BenchError


def _tagged_number(kind: str) -> Any:
    def parse(text: str) -> tuple[str, float | int]:
        return (kind, float(text) if kind == "float" else int(text))

    return parse


def strict(body: bytes) -> Any:
    """Parsed JSON with ordered objects and tagged numbers."""
    return json.loads(
        body,
        object_pairs_hook=lambda pairs: ("object", tuple(pairs)),
        parse_float=_tagged_number("float"),
        parse_int=_tagged_number("int"),
    )


def check_reference(body: bytes, sessions_expected: int, discrepancies_per_session: int) -> int:
    """migval's own answer must be data without errors, with the rows the dataset holds;
    returns the number of objects in it."""
    answer = json.loads(body)
    if answer.get("errors") or "data" not in answer:
        raise BenchError(f"migval answered with errors: {body[:1000]!r}")
    edges = answer["data"]["sessions"]["edges"]
    if len(edges) != sessions_expected:
        raise BenchError(f"migval returned {len(edges)} sessions, expected {sessions_expected}")
    for edge in edges:
        page = edge["node"]["discrepancies"]["edges"]
        if len(page) != discrepancies_per_session:
            raise BenchError(f"a session has {len(page)} discrepancies on its page")
    return _objects(answer)


def _objects(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_objects(v) for v in value.values())
    if isinstance(value, list):
        return sum(_objects(v) for v in value)
    return 0


def compare(name: str, reference: bytes, body: bytes) -> str:
    """How identical ``body`` is to migval's ``reference``; raises BenchError with the
    first difference. migval's top-level ``extensions`` (metadata such as the query
    cost, not part of the data) are left out of the comparison and said so."""
    if body == reference:
        return "byte-identical"
    expected, actual = _without_extensions(strict(reference)), strict(body)
    if expected != actual:
        raise BenchError(
            f"{name} does not serve the same JSON as migval: {_first_difference(expected, actual)}"
        )
    if expected == strict(reference):
        return "JSON-identical"
    # migval's bytes are the floor's with ',"extensions":{...}' before the last brace.
    head = body[:-1]
    if reference.startswith(head) and reference[len(head) :].startswith(b',"extensions":'):
        return "byte-identical apart from migval's top-level extensions"
    return "JSON-identical apart from migval's top-level extensions"


def extensions(reference: bytes) -> Any:
    """migval's top-level extensions (None if it sends none)."""
    return json.loads(reference).get("extensions")


def _without_extensions(document: Any) -> Any:
    kind, pairs = document
    return (kind, tuple((k, v) for k, v in pairs if k != "extensions"))


def _first_difference(a: Any, b: Any, path: str = "$") -> str:
    if isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] == ("object",):
        keys_a, keys_b = [k for k, _ in a[1]], [k for k, _ in b[1]]
        if keys_a != keys_b:
            return f"at {path}: keys {keys_a} != {keys_b}"
        for (key, va), (_, vb) in zip(a[1], b[1], strict=True):
            if va != vb:
                return _first_difference(va, vb, f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"at {path}: {len(a)} items != {len(b)}"
        for i, (va, vb) in enumerate(zip(a, b, strict=True)):
            if va != vb:
                return _first_difference(va, vb, f"{path}[{i}]")
    return f"at {path}: migval {a!r} != {b!r}"
