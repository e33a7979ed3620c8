"""``migval db export DIR`` / ``migval db import DIR``: SQLite -> PostgreSQL -> SQLite
with every row of every table equal at each hop (encrypted values included), table
files byte-identical whatever the dialect, sequences continuing after the imported
ids, and refusals (non-empty target, tampered file) that write nothing.

Needs both dialects in one test: it runs once, on the PostgreSQL backend (its
``empty_database_url`` is the PostgreSQL target), with scratch SQLite files migrated
here."""

import json
import shutil
from pathlib import Path

import pytest

from persistence.crypto import SESSIONS as SEALED_SESSIONS
from persistence.crypto import KeyRing, generate_key, is_envelope
from persistence.services import SessionService
from tests.conftest import AlembicRun, DbFactory
from tests.operations.test_cli_db import (
    counts,
    dump_all,
    explain,
    run_cli,
    run_cli_many,
    seed,
)
from tests.persistence.factories import session_input

LEGACY_SAMPLE = Path(__file__).parent / "data" / "legacy_sample.json"


@pytest.mark.postgres_only
async def test_sqlite_to_postgresql_to_sqlite_round_trip(
    empty_database_url: str,
    db_factory: DbFactory,
    alembic_run: AlembicRun,
    tmp_path: Path,
) -> None:
    first_url = f"sqlite+aiosqlite:///{tmp_path / 'first.db'}"
    last_url = f"sqlite+aiosqlite:///{tmp_path / 'last.db'}"
    pg_url = empty_database_url
    for url in (first_url, last_url, pg_url):
        await alembic_run("upgrade", url, "head")

    # Source: SQLite with service-written data (audit log, a token, a metric row) and,
    # through the CLI with a key, sessions whose secret fields are encrypted.
    key = generate_key()
    first = db_factory(url=first_url)
    await seed(first)
    legacy = run_cli(
        "db",
        "import-legacy",
        str(LEGACY_SAMPLE),
        database_url=first_url,
        env={"MIGVAL_ENCRYPTION_KEYS": key},
    )
    assert legacy.returncode == 0, explain(legacy)
    original = await dump_all(first)
    assert all(original.values()), "every table has rows"
    sealed = [s for s in original["validation_sessions"] if is_envelope(s["source_metadata"])]
    assert sealed, "the legacy sessions carry encrypted metadata"

    exported = tmp_path / "from-sqlite"
    out = run_cli("db", "export", str(exported), database_url=first_url)
    assert out.returncode == 0, explain(out)
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["format"] == "migval-export"
    assert manifest["source_dialect"] == "sqlite"
    assert {t["name"]: t["rows"] for t in manifest["tables"]} == {
        name: len(rows) for name, rows in original.items()
    }
    first_line = json.loads((exported / "validation_sessions.jsonl").read_text().splitlines()[0])
    assert first_line["created_at"].endswith("Z")
    assert first_line["source_technology"] == "PYTHON_FLASK"  # enums as values

    # SQLite -> PostgreSQL
    loaded = run_cli("db", "import", str(exported), database_url=pg_url)
    assert loaded.returncode == 0, explain(loaded)
    assert "import: validation_discrepancies" in loaded.stderr  # progress
    pg = db_factory(url=pg_url)
    assert await dump_all(pg) == original
    # Ciphertext moved verbatim and still opens: it is bound to the kept request_id.
    ring = KeyRing.parse(key)
    row = sealed[0]
    plain = SEALED_SESSIONS.open("source_metadata", row["request_id"], row["source_metadata"], ring)
    assert plain == {"repository": "git@example.com:shop/legacy.git"}
    # Sequences continue after the imported ids.
    created = await SessionService(pg).create(session_input("after-import"))
    assert created.session.id is not None
    assert created.session.id > max(s["id"] for s in original["validation_sessions"])

    # Independent, run together: a second import into the now non-empty PostgreSQL
    # database (refused), the PostgreSQL export, a tampered export into an empty SQLite.
    after = await dump_all(pg)
    again = tmp_path / "from-postgresql"
    tampered = tmp_path / "tampered"
    shutil.copytree(exported, tampered)
    path = tampered / "validation_results.jsonl"
    path.write_text(path.read_text().replace("0.875", "0.975", 1))
    scratch_url = f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
    await alembic_run("upgrade", scratch_url, "head")
    refused, out, tamper_refused = run_cli_many(
        (["db", "import", str(exported)], pg_url),
        (["db", "export", str(again)], pg_url),
        (["db", "import", str(tampered)], scratch_url),
    )
    assert refused.returncode == 1, explain(refused)
    assert "not empty" in refused.stderr
    assert "validation_sessions has" in refused.stderr
    assert tamper_refused.returncode == 1, explain(tamper_refused)
    assert "checksum mismatch" in tamper_refused.stderr
    assert "validation_results.jsonl" in tamper_refused.stderr
    assert set((await counts(db_factory(url=scratch_url))).values()) == {0}

    # PostgreSQL -> SQLite: the table files are byte-identical to the SQLite export's.
    assert out.returncode == 0, explain(out)
    pg_manifest = json.loads((again / "manifest.json").read_text())
    assert pg_manifest["source_dialect"] == "postgresql"
    # (validation_sessions and audit_log gained the "after-import" session.)
    shared = {t["name"] for t in manifest["tables"]} - {"validation_sessions", "audit_log"}
    for name in shared:
        assert (exported / f"{name}.jsonl").read_bytes() == (again / f"{name}.jsonl").read_bytes()
    loaded = run_cli("db", "import", str(again), database_url=last_url)
    assert loaded.returncode == 0, explain(loaded)
    assert await dump_all(db_factory(url=last_url)) == after
