"""The response of floors B and C, built from flat rows in the query's key order."""

import base64
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def gid(type_name: str, db_id: int) -> str:
    """Relay global ID as graph/ids.py writes it."""
    return base64.urlsafe_b64encode(f"{type_name}:{db_id}".encode()).decode()


def iso(value: datetime | str) -> str:
    """datetime.isoformat() (asyncpg gives aware UTC datetimes); strings are already
    formatted by the SQL (SQLite)."""
    return value if isinstance(value, str) else value.isoformat()


def envelope(total: int, edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": {"sessions": {"totalCount": total, "edges": edges}}}


def assemble(
    sessions: Sequence[Sequence[Any]],
    latest: Sequence[Sequence[Any]],
    results: Sequence[Sequence[Any]],
    discrepancies: Sequence[Sequence[Any]],
    tests: Sequence[Sequence[Any]],
) -> dict[str, Any]:
    """Rows are in SELECT order (see floor_levels / floor_sqlite); ``sessions`` is
    non-empty and carries the total in its last column."""
    latest_by = {
        sid: {
            "id": gid("ValidationResult", rid),
            "fidelityScore": score,
            "overallStatus": status.upper(),
        }
        for sid, rid, score, status in latest
    }
    results_by: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for sid, rid, score, summary in results:
        results_by[sid].append(
            {"id": gid("ValidationResult", rid), "fidelityScore": score, "summary": summary}
        )
    pages: dict[int, list[dict[str, Any]]] = defaultdict(list)
    totals: dict[int, int] = {}
    for sid, did, severity, kind, description, resolved, version, total in discrepancies:
        totals[sid] = total
        node = {
            "id": gid("Discrepancy", did),
            "severity": severity,
            "discrepancyType": kind,
            "description": description,
            "isResolved": bool(resolved),
            "version": version,
        }
        pages[sid].append({"node": node})
    tests_by: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for sid, tid, name, status in tests:
        tests_by[sid].append(
            {
                "id": gid("BehavioralTestResult", tid),
                "scenarioName": name,
                "executionStatus": status.upper(),
            }
        )
    edges = []
    for sid, request_id, status, source, target, created, _total in sessions:
        node = {
            "id": gid("ValidationSession", sid),
            "requestId": request_id,
            "status": status.upper(),
            "sourceTechnology": source,
            "targetTechnology": target,
            "createdAt": iso(created),
            "latestResult": latest_by.get(sid),
            "results": results_by.get(sid, []),
            "discrepancies": {"totalCount": totals.get(sid, 0), "edges": pages.get(sid, [])},
            "behavioralTests": tests_by.get(sid, []),
        }
        edges.append({"node": node})
    return envelope(sessions[0][-1], edges)
