"""Rows with explicit created_at values (Core inserts in one write session), an HTTP
GraphQL client, and a Python reference of the metric figures.

- ``Rows``: ``session(when, ...)``, ``result(session, when, ...)``,
  ``discrepancy(session, when, ...)``, ``test(session, when, ...)`` queue rows (a
  child names its session by index); ``await rows.write(db)`` inserts them (sessions
  first) and returns the session ids.
- ``expected_figures(data, period)``: what validation_metrics must hold, computed in
  Python from the same rows (the oracle of the rollup tests).
- ``gql`` fixture: POST a query to ``build_graphql_app(db)`` and return the JSON body.
"""

from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from graph.schema import build_graphql_app
from persistence.database import DatabaseManager
from persistence.enums import MetricPeriod
from persistence.models import (
    BehavioralTestResult,
    ValidationDiscrepancy,
    ValidationResult,
    ValidationSession,
)
from persistence.services.metrics import period_floor

Gql = Callable[..., Awaitable[dict[str, Any]]]

SESSIONS = ValidationSession.__table__  # type: ignore[attr-defined]
RESULTS = ValidationResult.__table__  # type: ignore[attr-defined]
DISCREPANCIES = ValidationDiscrepancy.__table__  # type: ignore[attr-defined]
TESTS = BehavioralTestResult.__table__  # type: ignore[attr-defined]


@dataclass
class Rows:
    """Rows to insert; children name their session by its index in ``sessions``."""

    sessions: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    discrepancies: list[dict[str, Any]] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)

    def session(
        self,
        when: datetime,
        status: str = "pending",
        source: str = "PYTHON_FLASK",
        target: str = "JAVA_SPRING",
        scope: str = "FULL_SYSTEM",
        execution_time: float | None = None,
    ) -> int:
        self.sessions.append(
            {
                "request_id": f"req-{len(self.sessions)}",
                "status": status,
                "source_technology": source,
                "target_technology": target,
                "validation_scope": scope,
                "source_input_type": "CODE_FILES",
                "target_input_type": "CODE_FILES",
                "execution_time": execution_time,
                "created_at": when,
            }
        )
        return len(self.sessions) - 1

    def result(
        self, session: int, when: datetime, status: str = "approved", score: float = 0.9
    ) -> None:
        self.results.append(
            {
                "session": session,
                "overall_status": status,
                "fidelity_score": score,
                "summary": "s",
                "created_at": when,
            }
        )

    def discrepancy(
        self,
        session: int,
        when: datetime,
        severity: str = "WARNING",
        kind: str = "layout",
        component: str | None = None,
        resolved: bool = False,
    ) -> None:
        self.discrepancies.append(
            {
                "session": session,
                "discrepancy_type": kind,
                "severity": severity,
                "description": "d",
                "component_type": component,
                "is_resolved": resolved,
                "created_at": when,
            }
        )

    def test(self, session: int, when: datetime, status: str = "passed") -> None:
        self.tests.append(
            {
                "session": session,
                "scenario_name": "sc",
                "source_url": "http://s",
                "target_url": "http://t",
                "execution_status": status,
                "created_at": when,
            }
        )

    async def write(
        self, db: DatabaseManager, offset: int = 0, existing: Sequence[int] = ()
    ) -> list[int]:
        """Insert every queued row and return the session ids, ``existing`` first (a
        child's session index counts them); ``offset`` keeps request ids unique."""
        async with db.write_session() as s:
            ids: list[int] = list(existing)
            for session in self.sessions:
                values = {**session, "request_id": f"{session['request_id']}-{offset}"}
                insert = sa.insert(SESSIONS).values(values).returning(SESSIONS.c.id)
                ids.append((await s.execute(insert)).scalar_one())
            for table, children in (
                (RESULTS, self.results),
                (DISCREPANCIES, self.discrepancies),
                (TESTS, self.tests),
            ):
                if children:
                    await s.execute(
                        sa.insert(table),
                        [
                            {
                                **{k: v for k, v in c.items() if k != "session"},
                                "session_id": ids[c["session"]],
                            }
                            for c in children
                        ],
                    )
        return ids


def expected_figures(rows: Rows, period: MetricPeriod) -> dict[datetime, dict[str, Any]]:
    """The figures validation_metrics must hold for ``rows``, per period start."""
    out: dict[datetime, dict[str, Any]] = defaultdict(_empty)

    def at(when: datetime) -> dict[str, Any]:
        return out[period_floor(when, period)]

    times: dict[datetime, list[float]] = defaultdict(list)
    scores: dict[datetime, list[float]] = defaultdict(list)
    for s in rows.sessions:
        f = at(s["created_at"])
        f["total_sessions"] += 1
        f["completed_sessions"] += s["status"] == "completed"
        f["failed_sessions"] += s["status"] == "failed"
        f["additional_metrics"]["cancelled_sessions"] += s["status"] == "cancelled"
        f["technology_breakdown"][f"{s['source_technology']}->{s['target_technology']}"] += 1
        f["scope_breakdown"][s["validation_scope"]] += 1
        if s["execution_time"] is not None:
            times[period_floor(s["created_at"], period)].append(s["execution_time"])
    for r in rows.results:
        f = at(r["created_at"])
        f["additional_metrics"]["total_results"] += 1
        status = r["overall_status"]
        f["approved_count"] += status == "approved"
        f["approved_with_warnings_count"] += status == "approved_with_warnings"
        f["rejected_count"] += status == "rejected"
        f["additional_metrics"]["error_results"] += status == "error"
        scores[period_floor(r["created_at"], period)].append(r["fidelity_score"])
    for d in rows.discrepancies:
        f = at(d["created_at"])
        f["total_discrepancies"] += 1
        f[f"{d['severity'].lower()}_discrepancies"] += 1
        f["additional_metrics"]["resolved_discrepancies"] += d["is_resolved"]
    for t in rows.tests:
        f = at(t["created_at"])
        f["additional_metrics"]["behavioral_tests"] += 1
        f["additional_metrics"]["behavioral_passed"] += t["execution_status"] == "passed"
    for key, values in times.items():
        out[key].update(_stats(values, "execution_time"))
    for key, values in scores.items():
        out[key].update(_stats(values, "fidelity_score"))
    for f in out.values():
        for name in ("technology_breakdown", "scope_breakdown", "additional_metrics"):
            f[name] = dict(f[name])
    return dict(out)


def _empty() -> dict[str, Any]:
    additional = Counter(
        dict.fromkeys(
            (
                "total_results",
                "error_results",
                "cancelled_sessions",
                "resolved_discrepancies",
                "behavioral_tests",
                "behavioral_passed",
            ),
            0,
        )
    )
    return {
        **dict.fromkeys(
            (
                "total_sessions",
                "completed_sessions",
                "failed_sessions",
                "approved_count",
                "approved_with_warnings_count",
                "rejected_count",
                "total_discrepancies",
                "critical_discrepancies",
                "warning_discrepancies",
                "info_discrepancies",
            ),
            0,
        ),
        **dict.fromkeys(
            (
                "avg_execution_time",
                "max_execution_time",
                "min_execution_time",
                "avg_fidelity_score",
                "max_fidelity_score",
                "min_fidelity_score",
            ),
            None,
        ),
        "technology_breakdown": Counter(),
        "scope_breakdown": Counter(),
        "additional_metrics": additional,
    }


def _stats(values: list[float], name: str) -> dict[str, float]:
    return {
        f"avg_{name}": sum(values) / len(values),
        f"max_{name}": max(values),
        f"min_{name}": min(values),
    }


def figures_of(row: Any) -> dict[str, Any]:
    """The figure columns of a stored row, a live row or a PeriodFigures."""
    return {name: getattr(row, name) for name in _empty()}


def assert_figures_equal(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        if isinstance(value, float):
            assert actual[name] == pytest.approx(value, rel=1e-9), name
        else:
            assert actual[name] == value, name


@pytest.fixture
async def gql(db: DatabaseManager) -> AsyncIterator[Gql]:
    transport = httpx.ASGITransport(app=build_graphql_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://migval.test") as client:

        async def run(query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {"query": query}
            if variables is not None:
                body["variables"] = dict(variables)
            response = await client.post("/", json=body)
            assert response.status_code < 500, response.text
            result = response.json()
            assert isinstance(result, dict)
            return result

        yield run
