"""``migval db export DIR``: a portable, dialect-neutral logical export.

Layout of DIR:

- ``<table>.jsonl`` for every table (``TABLES``, parents first): one JSON object per
  row, ordered by id, keys sorted; datetimes ISO-8601 UTC (``2026-01-31T12:00:00.123456Z``),
  JSON columns as JSON values, enums as their values, booleans as true/false; SQL NULL
  (and a JSON ``null``) as ``null``.
- ``manifest.json``: format name and version, schema revision, source dialect,
  created_at, and per table its file, columns, row count and sha256.

Values are exported as stored: sealed (encrypted) columns stay ciphertext and are
bound to the row's request_id/id, which the import keeps, so reading them needs the
same MIGVAL_ENCRYPTION_KEYS, and the export needs no key at all. The export also
holds API token hashes and the audit log: keep it as safe as the database.

All tables are read in one read-only snapshot (REPEATABLE READ on PostgreSQL, one
read transaction on SQLite), so the files are consistent with each other while the
server keeps writing. The same data gives byte-identical table files whatever the
dialect it was exported from.
"""

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.database import DatabaseManager
from persistence.maintenance import MaintenanceError
from persistence.maintenance.tables import TABLES, iso_utc

FORMAT = "migval-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PAGE_ROWS = 1000

Progress = Callable[[str, int], None]  # table, rows written so far


class ExportError(MaintenanceError):
    """An expected failure with a message for the operator (exit code 1)."""


@dataclass(slots=True)
class ExportReport:
    directory: Path
    revision: str
    tables: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rows = sum(self.tables.values())
        return (
            f"exported {rows} rows of {len(self.tables)} tables (schema revision "
            f"{self.revision}) to {self.directory}"
        )


def encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Enum):
        return value.value
    return value


def encode_row(row: dict[str, Any]) -> str:
    data = {key: encode_value(value) for key, value in row.items()}
    return json.dumps(
        data, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )


async def export_database(
    db: DatabaseManager, directory: Path, progress: Progress | None = None
) -> ExportReport:
    prepare_directory(directory)
    async with _snapshot(db) as conn:
        revision = (
            await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
        ).scalar_one_or_none()
        if revision is None:
            raise ExportError("the database is not migrated (no alembic_version)")
        report = ExportReport(directory, str(revision))
        entries = []
        for table in TABLES:
            file_name = f"{table.name}.jsonl"
            rows, digest = await _export_table(conn, table, directory / file_name, progress)
            report.tables[table.name] = rows
            entries.append(
                {
                    "name": table.name,
                    "file": file_name,
                    "columns": [c.name for c in table.c],
                    "rows": rows,
                    "sha256": digest,
                }
            )
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_revision": report.revision,
        "source_dialect": db.dialect,
        "created_at": iso_utc(datetime.now(UTC)),
        "tables": entries,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return report


def prepare_directory(directory: Path) -> None:
    """Create DIR, or accept it empty: an export never mixes with other files."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} exists and is not an empty directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create {directory}: {error.strerror}") from None


async def _export_table(
    conn: AsyncConnection, table: sa.Table, path: Path, progress: Progress | None
) -> tuple[int, str]:
    digest = hashlib.sha256()
    rows = 0
    last_id: Any = None
    with path.open("wb") as handle:
        while True:
            stmt = sa.select(table).order_by(table.c.id).limit(PAGE_ROWS)
            if last_id is not None:
                stmt = stmt.where(table.c.id > last_id)
            page = (await conn.execute(stmt)).mappings().all()
            if not page:
                break
            for row in page:
                line = (encode_row(dict(row)) + "\n").encode("utf-8")
                handle.write(line)
                digest.update(line)
            rows += len(page)
            last_id = page[-1]["id"]
            if progress is not None:
                progress(table.name, rows)
    return rows, digest.hexdigest()


@asynccontextmanager
async def _snapshot(db: DatabaseManager) -> AsyncIterator[AsyncConnection]:
    """One read-only transaction: every table read from the same snapshot."""
    if db.dialect == "postgresql":
        async with db.engine.connect() as raw:
            conn = await raw.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                yield conn
        return
    # SQLite: the read session starts no transaction; a deferred BEGIN gives a WAL
    # snapshot without taking the write lock (writers are not blocked).
    async with db.read_session() as session:
        conn = await session.connection()
        await conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            await conn.exec_driver_sql("ROLLBACK")
