"""``migval db import DIR``: load an export (``persistence.maintenance.export``) into
an EMPTY database of either dialect, migrated to the export's schema revision.

Before anything is written: the manifest is read, every file's sha256 and row count
is verified, the revision must match, and every table must be empty. Then the whole
import runs as ONE transaction, tables in foreign-key order (parents first), ids
preserved: it succeeds completely or leaves the database empty. Afterwards PostgreSQL
sequences are set to max(id) so new rows continue after the imported ones (SQLite
needs nothing: an INTEGER PRIMARY KEY continues from max(rowid)).

Rows are inserted as exported: sealed columns stay ciphertext (bound to request_id/
id, both preserved). The audit_log is imported like any table; the import itself
writes no audit entry (the database is a copy of another one, not a change to it).
A JSON ``null`` is stored as SQL NULL.
"""

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.database import DatabaseManager
from persistence.maintenance import MaintenanceError
from persistence.maintenance.export import FORMAT, FORMAT_VERSION, MANIFEST
from persistence.maintenance.tables import TABLES, row_counts
from persistence.sqltypes import UTCDateTime

INSERT_ROWS = 500

Progress = Callable[[str, int, int], None]  # table, rows inserted, rows in the file


class ImportRefused(MaintenanceError):
    """The export or the target is not acceptable; nothing was written (exit code 1)."""


@dataclass(slots=True)
class ImportReport:
    directory: Path
    revision: str
    source_dialect: str
    tables: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rows = sum(self.tables.values())
        return (
            f"imported {rows} rows into {len(self.tables)} tables from {self.directory} "
            f"(schema revision {self.revision}, exported from {self.source_dialect})"
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    table: sa.Table
    path: Path
    rows: int


async def import_database(
    db: DatabaseManager, directory: Path, progress: Progress | None = None
) -> ImportReport:
    manifest = read_manifest(directory)
    entries = verify_files(directory, manifest)
    report = ImportReport(
        directory, str(manifest["schema_revision"]), str(manifest.get("source_dialect", "?"))
    )
    async with db.engine.begin() as conn:
        revision = await _revision(conn)
        if revision is None:
            raise ImportRefused(
                "the target database is not migrated: run `migval db init` "
                f"(or `migval db migrate {report.revision}`) first"
            )
        if revision != report.revision:
            raise ImportRefused(
                f"the export is at schema revision {report.revision} but the target database "
                f"is at {revision}: migrate both to the same revision first"
            )
        counts = await row_counts(conn)
        filled = {name: n for name, n in counts.items() if n}
        if filled:
            listed = ", ".join(f"{name} has {n} rows" for name, n in filled.items())
            raise ImportRefused(
                f"the target database is not empty ({listed}); import only "
                "into an empty, migrated database"
            )
        for entry in entries:
            report.tables[entry.table.name] = await _load_table(conn, entry, db.dialect, progress)
        if db.dialect == "postgresql":
            await _reset_sequences(conn)
    return report


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise ImportRefused(f"{path} not found: not a migval export directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ImportRefused(f"{path} is not readable JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ImportRefused(f"{path} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ImportRefused(
            f"{path}: format version {manifest.get('format_version')!r} is not supported "
            f"(this migval reads version {FORMAT_VERSION})"
        )
    if not isinstance(manifest.get("tables"), list) or not manifest.get("schema_revision"):
        raise ImportRefused(f"{path}: tables or schema_revision missing")
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any]) -> list[_Entry]:
    """Every table of the schema present, with matching columns, row count and sha256."""
    listed = {str(t.get("name")): t for t in manifest["tables"] if isinstance(t, dict)}
    known = {t.name for t in TABLES}
    unknown = sorted(set(listed) - known)
    if unknown:
        raise ImportRefused(f"the export has tables this schema does not: {', '.join(unknown)}")
    entries = []
    for table in TABLES:
        item = listed.get(table.name)
        if item is None:
            raise ImportRefused(f"the manifest does not list table {table.name}")
        columns = [c.name for c in table.c]
        if item.get("columns") != columns:
            raise ImportRefused(f"{table.name}: the export's columns differ from the schema's")
        file_name = str(item.get("file", ""))
        path = directory / file_name
        if Path(file_name).name != file_name or not path.is_file():
            raise ImportRefused(f"{table.name}: file {file_name!r} missing from {directory}")
        digest = hashlib.sha256()
        lines = 0
        with path.open("rb") as handle:
            for line in handle:
                digest.update(line)
                lines += 1
        if digest.hexdigest() != item.get("sha256"):
            raise ImportRefused(
                f"{path}: checksum mismatch (sha256 {digest.hexdigest()}, manifest says "
                f"{item.get('sha256')}): the file was changed or truncated after the export"
            )
        if lines != item.get("rows"):
            raise ImportRefused(f"{path}: {lines} rows, manifest says {item.get('rows')}")
        entries.append(_Entry(table, path, lines))
    return entries


async def _revision(conn: AsyncConnection) -> str | None:
    def has_table(sync_conn: sa.Connection) -> bool:
        return sa.inspect(sync_conn).has_table("alembic_version")

    if not await conn.run_sync(has_table):
        return None
    found = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    value = found.scalar_one_or_none()
    return None if value is None else str(value)


def _insert_target(table: sa.Table, dialect: str) -> sa.TableClause:
    """The table with JSON columns that store Python None as SQL NULL."""
    columns = []
    for column in table.c:
        type_: Any = column.type
        if isinstance(type_, sa.JSON):
            type_ = (
                postgresql.JSONB(none_as_null=True)
                if dialect == "postgresql"
                else sa.JSON(none_as_null=True)
            )
        columns.append(sa.column(column.name, type_))
    return sa.table(table.name, *columns)


def _decoders(table: sa.Table) -> dict[str, Callable[[Any], Any]]:
    out: dict[str, Callable[[Any], Any]] = {}
    for column in table.c:
        if isinstance(column.type, UTCDateTime):
            out[column.name] = _parse_datetime
        elif isinstance(column.type, sa.Enum) and column.type.enum_class is not None:
            out[column.name] = column.type.enum_class
    return out


def _parse_datetime(value: Any) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {value!r}")
    return moment


def _rows(entry: _Entry) -> Iterator[dict[str, Any]]:
    columns = {c.name for c in entry.table.c}
    decoders = _decoders(entry.table)
    with entry.path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or set(row) != columns:
                    raise ValueError("not an object with exactly the table's columns")
                for name, decode in decoders.items():
                    if row[name] is not None:
                        row[name] = decode(row[name])
            except (ValueError, TypeError) as error:
                raise ImportRefused(f"{entry.path}:{number}: {error}") from None
            yield row


async def _load_table(
    conn: AsyncConnection, entry: _Entry, dialect: str, progress: Progress | None
) -> int:
    target = _insert_target(entry.table, dialect)
    done = 0
    batch: list[dict[str, Any]] = []
    for row in _rows(entry):
        batch.append(row)
        if len(batch) == INSERT_ROWS:
            await conn.execute(sa.insert(target), batch)
            done += len(batch)
            batch = []
            if progress is not None:
                progress(entry.table.name, done, entry.rows)
    if batch:
        await conn.execute(sa.insert(target), batch)
        done += len(batch)
    if progress is not None:
        progress(entry.table.name, done, entry.rows)
    return done


async def _reset_sequences(conn: AsyncConnection) -> None:
    for table in TABLES:
        await conn.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608 - table names from the model
                f"COALESCE((SELECT MAX(id) FROM {table.name}), 1), "
                f"(SELECT MAX(id) IS NOT NULL FROM {table.name}))"
            )
        )
