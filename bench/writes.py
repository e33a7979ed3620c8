"""Writes: recordValidationResult with N discrepancies through GraphQL over HTTP
against the running migval server, versus the same rows written raw in one
transaction (asyncpg COPY on PostgreSQL, sqlite3 executemany on SQLite).

Every run writes to a fresh session (created beforehand through
createValidationSession, not timed); the rows written are checked after each run.
A GraphQL run is timed from sending the prebuilt request body to the full answer; a
raw run from building the driver's records to COMMIT.
"""

import json
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.servers import BenchError
from persistence.repositories.discrepancies import BULK_COLUMNS

CREATE_SESSION = """
mutation Create($input: CreateValidationSessionInput!) {
  createValidationSession(input: $input) {
    session { id databaseId }
    errors { field code message }
  }
}
"""
RECORD_RESULT = """
mutation Record($input: RecordValidationResultInput!) {
  recordValidationResult(input: $input) {
    result { id databaseId }
    errors { field code message }
  }
}
"""
RESULT_VALUES: dict[str, Any] = {
    "overall_status": "approved_with_warnings",
    "fidelity_score": 0.87,
    "summary": "benchmark write",
    "result_type": "static",
}
# The raw writer fills exactly the columns migval's bulk insert writes.
DISCREPANCY_COLUMNS = tuple(BULK_COLUMNS)


@dataclass(frozen=True, slots=True)
class WriteResult:
    backend: str  # "pg" or "sqlite"
    size: int  # discrepancies per result
    graphql_ms: float  # median
    raw_ms: float  # median
    runs: int

    @property
    def ratio(self) -> float:
        return self.graphql_ms / self.raw_ms if self.raw_ms else float("nan")


def discrepancies(size: int) -> list[dict[str, Any]]:
    """The rows written (snake_case column values)."""
    severities = ("CRITICAL", "WARNING", "INFO")
    return [
        {
            "discrepancy_type": "layout",
            "severity": severities[i % 3],
            "description": f"element {i} differs between source and target",
            "source_element": f"src/view_{i}.py",
            "target_element": f"web/View{i}.tsx",
            "recommendation": "align the target with the source",
            "confidence": 0.9,
            "component_type": "form",
            "validation_context": {"rule": "R12", "line": i},
        }
        for i in range(size)
    ]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def record_body(session_gid: str, rows: Sequence[dict[str, Any]]) -> bytes:
    enum_names = {"overall_status", "result_type"}  # GraphQL enums travel by name
    result = {_camel(k): (v.upper() if k in enum_names else v) for k, v in RESULT_VALUES.items()}
    items = [{_camel(k): v for k, v in row.items()} for row in rows]
    variables = {"input": {"sessionId": session_gid, **result, "discrepancies": items}}
    return json.dumps({"query": RECORD_RESULT, "variables": variables}).encode()


async def _graphql(client: httpx.AsyncClient, url: str, body: bytes) -> dict[str, Any]:
    response = await client.post(url, content=body, headers={"content-type": "application/json"})
    if response.status_code != 200:
        raise BenchError(f"GraphQL write: HTTP {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    if answer.get("errors"):
        raise BenchError(f"GraphQL write failed: {answer['errors']}")
    data: dict[str, Any] = answer["data"]
    return data


async def create_sessions(
    client: httpx.AsyncClient, url: str, prefix: str, count: int
) -> list[tuple[str, int]]:
    """(global id, database id) of ``count`` new sessions, through GraphQL."""
    out = []
    for i in range(count):
        variables = {
            "input": {
                "requestId": f"{prefix}-{i:03d}",
                "sourceTechnology": "PYTHON_FLASK",
                "targetTechnology": "JAVA_SPRING",
                "validationScope": "FULL_SYSTEM",
                "sourceInputType": "CODE_FILES",
                "targetInputType": "CODE_FILES",
            }
        }
        body = json.dumps({"query": CREATE_SESSION, "variables": variables}).encode()
        payload = (await _graphql(client, url, body))["createValidationSession"]
        if payload["errors"]:
            raise BenchError(f"createValidationSession: {payload['errors']}")
        out.append((payload["session"]["id"], int(payload["session"]["databaseId"])))
    return out


async def _timed_graphql(
    client: httpx.AsyncClient, url: str, session_gid: str, rows: Sequence[dict[str, Any]]
) -> tuple[float, int]:
    body = record_body(session_gid, rows)
    started = time.perf_counter()
    payload = (await _graphql(client, url, body))["recordValidationResult"]
    elapsed = (time.perf_counter() - started) * 1000
    if payload["errors"] or payload["result"] is None:
        raise BenchError(f"recordValidationResult: {payload['errors']}")
    return elapsed, int(payload["result"]["databaseId"])


# --- raw ----------------------------------------------------------------------------


async def pg_raw_write(
    dsn: str, session_id: int, rows: Sequence[dict[str, Any]]
) -> tuple[float, int]:
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        started = time.perf_counter()
        async with conn.transaction():
            result_id: int = await conn.fetchval(
                "INSERT INTO validation_results "
                "(session_id, overall_status, fidelity_score, summary, result_type) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                session_id,
                *RESULT_VALUES.values(),
            )
            records = [
                (session_id, result_id, *(_pg(k, v) for k, v in row.items())) for row in rows
            ]
            await conn.copy_records_to_table(
                "validation_discrepancies", records=records, columns=list(DISCREPANCY_COLUMNS)
            )
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        await conn.close()
    return elapsed, result_id


def _pg(column: str, value: Any) -> Any:
    return json.dumps(value) if column == "validation_context" else value


def sqlite_raw_write(
    path: Path, session_id: int, rows: Sequence[dict[str, Any]]
) -> tuple[float, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA synchronous=NORMAL")  # migval's default
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            "INSERT INTO validation_results "
            "(session_id, overall_status, fidelity_score, summary, result_type) "
            "VALUES (?, ?, ?, ?, ?)",
            (session_id, *RESULT_VALUES.values()),
        )
        result_id = int(cursor.lastrowid or 0)
        marks = ", ".join("?" * len(DISCREPANCY_COLUMNS))
        conn.executemany(
            f"INSERT INTO validation_discrepancies ({', '.join(DISCREPANCY_COLUMNS)}) "  # noqa: S608
            f"VALUES ({marks})",
            [(session_id, result_id, *(_pg(k, v) for k, v in row.items())) for row in rows],
        )
        conn.execute("COMMIT")
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        conn.close()
    return elapsed, result_id


# --- the comparison -----------------------------------------------------------------


async def compare(
    backend: str,
    graphql_url: str,
    sizes: Sequence[int],
    runs: int,
    raw_write: Callable[[int, Sequence[dict[str, Any]]], Awaitable[tuple[float, int]]],
    count_rows: Callable[[int], Awaitable[int]],
) -> list[WriteResult]:
    """For each size: ``runs`` GraphQL writes and ``runs`` raw writes (alternating),
    after one untimed warm-up of each; medians."""
    out = []
    async with httpx.AsyncClient(timeout=300.0) as client:
        stamp = time.strftime("%H%M%S")
        sessions = await create_sessions(
            client, graphql_url, f"bench-write-{backend}-{stamp}", 2 * (len(sizes) * runs + 1)
        )
        warm = discrepancies(100)
        await _timed_graphql(client, graphql_url, sessions.pop()[0], warm)
        await raw_write(sessions.pop()[1], warm)
        for size in sizes:
            rows = discrepancies(size)
            graphql_ms, raw_ms = [], []
            for _ in range(runs):
                elapsed, result_id = await _timed_graphql(
                    client, graphql_url, sessions.pop()[0], rows
                )
                await _check(count_rows, result_id, size, "GraphQL")
                graphql_ms.append(elapsed)
                elapsed, result_id = await raw_write(sessions.pop()[1], rows)
                await _check(count_rows, result_id, size, "raw")
                raw_ms.append(elapsed)
            out.append(
                WriteResult(
                    backend, size, statistics.median(graphql_ms), statistics.median(raw_ms), runs
                )
            )
    return out


async def _check(
    count_rows: Callable[[int], Awaitable[int]], result_id: int, size: int, how: str
) -> None:
    found = await count_rows(result_id)
    if found != size:
        raise BenchError(f"{how} write stored {found} discrepancies, expected {size}")


def pg_writer(
    dsn: str,
) -> tuple[
    Callable[[int, Sequence[dict[str, Any]]], Awaitable[tuple[float, int]]],
    Callable[[int], Awaitable[int]],
]:
    async def raw(session_id: int, rows: Sequence[dict[str, Any]]) -> tuple[float, int]:
        return await pg_raw_write(dsn, session_id, rows)

    async def count(result_id: int) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM validation_discrepancies WHERE result_id = $1", result_id
                )
            )
        finally:
            await conn.close()

    return raw, count


def sqlite_writer(
    path: Path,
) -> tuple[
    Callable[[int, Sequence[dict[str, Any]]], Awaitable[tuple[float, int]]],
    Callable[[int], Awaitable[int]],
]:
    async def raw(session_id: int, rows: Sequence[dict[str, Any]]) -> tuple[float, int]:
        return sqlite_raw_write(path, session_id, rows)

    async def count(result_id: int) -> int:
        conn = sqlite3.connect(path)
        try:
            return int(
                conn.execute(
                    "SELECT count(*) FROM validation_discrepancies WHERE result_id = ?",
                    (result_id,),
                ).fetchone()[0]
            )
        finally:
            conn.close()

    return raw, count
