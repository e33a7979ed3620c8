"""``migval db import-legacy FILE``: sessions from the old in-memory store (the sample
in data/legacy_sample.json, documented in docs/legacy-import.md) are imported once,
with their status, timestamps and nested children; importing again changes nothing;
a conflicting entry is reported while the others import; a malformed session fails
as a whole, leaving nothing behind."""

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from persistence.database import DatabaseManager
from persistence.maintenance.integrity import validate
from persistence.maintenance.legacy import import_legacy
from persistence.models import metadata
from tests.operations.test_cli_db import dump_all, explain, run_cli

SAMPLE = Path(__file__).parent / "data" / "legacy_sample.json"
SESSIONS = metadata.tables["validation_sessions"]


def sample() -> list[dict[str, Any]]:
    data = json.loads(SAMPLE.read_text())
    assert isinstance(data, list)
    return data


async def test_imports_sample_once_then_skips(db: DatabaseManager, database_url: str) -> None:
    first = run_cli("db", "import-legacy", str(SAMPLE), database_url=database_url)
    assert first.returncode == 0, explain(first)
    assert "3 imported, 0 skipped (already imported), 0 conflicts, 0 failed" in first.stdout
    rows = await dump_all(db)
    sessions = {s["request_id"]: s for s in rows["validation_sessions"]}
    assert set(sessions) == {"legacy-0001", "legacy-0002", "legacy-0003"}
    one, two, three = (sessions[f"legacy-000{i}"] for i in (1, 2, 3))
    assert (one["status"], two["status"], three["status"]) == ("completed", "failed", "pending")
    assert one["created_at"] == datetime(2025, 9, 22, 10, 15, tzinfo=UTC)
    assert one["updated_at"] == datetime(2025, 9, 22, 10, 16, 2, 250000, tzinfo=UTC)
    assert two["created_at"] == datetime(2025, 9, 23, 8, 0, tzinfo=UTC)  # naive read as UTC
    assert one["session_metadata"] == {"type": "nightly", "ticket": "MIG-12"}
    results = [r for r in rows["validation_results"] if r["session_id"] == one["id"]]
    assert [(r["overall_status"], r["fidelity_score"], r["result_type"]) for r in results] == [
        ("approved_with_warnings", 0.87, "static"),
        ("approved", 0.95, "behavioral"),
    ]
    assert results[0]["created_at"] == datetime(2025, 9, 22, 10, 15, 40, tzinfo=UTC)
    discrepancies = [d for d in rows["validation_discrepancies"] if d["session_id"] == one["id"]]
    assert [(d["severity"], d["confidence"], d["result_id"]) for d in discrepancies] == [
        ("WARNING", 0.9, results[0]["id"]),
        ("INFO", 0.6, results[0]["id"]),
    ]
    assert all(d["created_at"] == results[0]["created_at"] for d in discrepancies)
    (test,) = rows["behavioral_test_results"]
    assert (test["session_id"], test["scenario_name"], test["execution_status"]) == (
        one["id"],
        "login",
        "passed",
    )
    assert test["created_at"] == datetime(2025, 9, 22, 10, 15, 55, tzinfo=UTC)
    operations = [e["operation"] for e in rows["audit_log"]]
    assert operations.count("createValidationSession") == 3  # written by the services
    assert operations.count("importLegacySession") == 3
    assert {e["actor_name"] for e in rows["audit_log"]} == {"legacy-import"}

    again = run_cli("db", "import-legacy", str(SAMPLE), database_url=database_url)
    assert again.returncode == 0, explain(again)
    assert "0 imported, 3 skipped (already imported), 0 conflicts, 0 failed" in again.stdout
    assert await dump_all(db) == rows  # nothing changed, not even the audit log


async def test_conflict_reported_malformed_fails_whole_others_import(
    db: DatabaseManager, database_url: str, tmp_path: Path
) -> None:
    await import_legacy(db, sample())  # seed: the sample is already imported
    before = await dump_all(db)

    conflicting = copy.deepcopy(sample()[0])
    conflicting["results"][0]["fidelity_score"] = 0.5
    good = {**copy.deepcopy(sample()[2]), "request_id": "legacy-0100", "status": "processing"}
    half = copy.deepcopy(sample()[0])
    half["request_id"] = "legacy-0101"
    half["results"][1]["fidelity_score"] = 1.5  # result 0 is valid: would be half-imported
    bad_status = {**copy.deepcopy(sample()[2]), "request_id": "legacy-0102", "status": "done"}
    bad_test = copy.deepcopy(sample()[0])
    bad_test["request_id"] = "legacy-0103"
    bad_test["behavioral_results"][0]["execution_status"] = "sort of"
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([conflicting, good, half, 42, bad_status, bad_test]))

    result = run_cli("db", "import-legacy", str(path), database_url=database_url)
    assert result.returncode == 1, explain(result)
    out = result.stdout
    assert "1 imported, 0 skipped (already imported), 1 conflicts, 4 failed" in out
    assert (
        "conflict  [0] legacy-0001: already imported with different content: "
        "results[0].fidelity_score differs" in out
    )
    assert "imported  [1] legacy-0100" in out
    assert "failed    [2] legacy-0101: results[1].fidelity_score: must be between 0 and 1" in out
    assert "failed    [3] (no request_id): must be a JSON object" in out
    assert "failed    [4] legacy-0102: status: must be one of" in out
    assert "failed    [5] legacy-0103: behavioral_results[0].execution_status" in out

    after = await dump_all(db)
    stored = {s["request_id"]: s for s in after["validation_sessions"]}
    assert set(stored) == {"legacy-0001", "legacy-0002", "legacy-0003", "legacy-0100"}
    assert stored["legacy-0100"]["status"] == "processing"
    # The conflicting session is untouched; the failed ones left no row anywhere.
    assert (
        stored["legacy-0001"]
        == {s["request_id"]: s for s in before["validation_sessions"]}["legacy-0001"]
    )
    for name in ("validation_results", "validation_discrepancies", "behavioral_test_results"):
        assert after[name] == before[name], name
    new_audit = after["audit_log"][len(before["audit_log"]) :]
    assert [e["operation"] for e in new_audit] == ["createValidationSession", "importLegacySession"]
    assert (await validate(db)).ok
    async with db.read_session() as s:
        failed_ids = ["legacy-0101", "legacy-0102", "legacy-0103"]
        assert not await s.scalar(
            sa.select(sa.func.count()).where(SESSIONS.c.request_id.in_(failed_ids))
        )
