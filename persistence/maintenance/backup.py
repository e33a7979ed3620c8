"""``migval db backup PATH`` / ``migval db restore PATH``: physical backups.

SQLite: the online backup API (``sqlite3.Connection.backup``), never a file copy (a
copy of a live WAL database can miss committed pages or catch a torn write). A backup
is written to ``PATH.partial`` and renamed into place only when complete and checked,
so PATH is either absent or a whole database. Restore runs the backup API the other
way, into the configured database file: it replaces the content page by page under
SQLite's own write lock (so it waits for, and never corrupts, another connection);
still, stop the server first, since its open transactions and caches would straddle
the switch.

PostgreSQL: ``pg_dump --format=custom`` and ``pg_restore --clean --if-exists
--no-owner --single-transaction`` (all or nothing), run with the connection details
of DATABASE_URL passed through libpq environment variables (the password never
appears on a command line). The client tools must be installed, ideally of the
server's major version.
"""

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from glob import glob
from pathlib import Path

from sqlalchemy.engine import make_url

from persistence.maintenance import MaintenanceError
from persistence.maintenance.tables import describe_url, sqlite_file
from persistence.settings import DatabaseSettings, SSLMode

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"
PAGES_PER_STEP = 1024
ENV_PG_BINDIR = "MIGVAL_PG_BINDIR"

Progress = Callable[[str], None]


class BackupError(MaintenanceError):
    """An expected failure with a message for the operator (exit code 1)."""


@dataclass(frozen=True, slots=True)
class BackupOutcome:
    path: Path
    size_bytes: int
    seconds: float
    revision: str | None


def backup(settings: DatabaseSettings, dest: Path, progress: Progress) -> BackupOutcome:
    started = time.perf_counter()
    if settings.dialect == "sqlite":
        with _sqlite_errors():
            revision = _sqlite_backup(sqlite_file(settings.url), dest, progress)
    else:
        revision = None
        _pg_dump(settings, dest, progress)
    return BackupOutcome(dest, dest.stat().st_size, time.perf_counter() - started, revision)


def restore(settings: DatabaseSettings, source: Path, progress: Progress) -> BackupOutcome:
    kind = backup_kind(source)
    if settings.dialect == "sqlite":
        if kind != "sqlite":
            raise BackupError(_wrong_kind(source, kind, "SQLite"))
        target = sqlite_file(settings.url)
        started = time.perf_counter()
        with _sqlite_errors():
            revision = _sqlite_restore(source, target, progress)
        return BackupOutcome(target, target.stat().st_size, time.perf_counter() - started, revision)
    if kind != "pg_dump":
        raise BackupError(_wrong_kind(source, kind, "PostgreSQL"))
    started = time.perf_counter()
    _pg_restore(settings, source, progress)
    return BackupOutcome(source, source.stat().st_size, time.perf_counter() - started, None)


def backup_kind(path: Path) -> str:
    """``sqlite``, ``pg_dump`` or ``unknown``, from the file's first bytes."""
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return "sqlite"
    if head.startswith(PGDUMP_MAGIC):
        return "pg_dump"
    return "unknown"


def _wrong_kind(source: Path, kind: str, dialect: str) -> str:
    what = {
        "sqlite": "a SQLite backup",
        "pg_dump": "a pg_dump archive",
    }.get(kind, "neither a SQLite backup nor a pg_dump custom-format archive")
    return (
        f"{source} is {what}, but DATABASE_URL is {dialect}; to move data between "
        "dialects use `migval db export` and `migval db import`"
    )


# ------------------------------------------------------------------------- SQLite


@contextmanager
def _sqlite_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:
        hint = (
            " (another process holds the database: stop the server and retry)"
            if ("locked" in str(error) or "busy" in str(error))
            else ""
        )
        raise BackupError(f"SQLite: {error}{hint}") from None


def _sqlite_backup(source: Path, dest: Path, progress: Progress) -> str | None:
    if not source.is_file():
        raise BackupError(f"database file {source} does not exist")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with (
            closing(sqlite3.connect(source, timeout=30)) as src,
            closing(sqlite3.connect(partial)) as dst,
        ):
            src.backup(dst, pages=PAGES_PER_STEP, progress=_page_progress(progress))
            # A self-contained single file (no -wal beside it) whatever the source mode.
            dst.execute("PRAGMA journal_mode=DELETE")
            _check_copy(dst, partial)
            revision = _sqlite_revision(dst)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return revision


def _sqlite_restore(source: Path, target: Path, progress: Progress) -> str | None:
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src:
        _check_copy(src, source)
        revision = _sqlite_revision(src)
        if revision is None:
            raise BackupError(
                f"{source} is a SQLite database without alembic_version: not a migval backup"
            )
        progress(f"restoring {source} (revision {revision}) into {target}")
        with closing(sqlite3.connect(target, timeout=30)) as dst:
            src.backup(dst, pages=PAGES_PER_STEP, progress=_page_progress(progress))
            _check_copy(dst, target)
    return revision


def _page_progress(progress: Progress) -> Callable[[int, int, int], None]:
    def report(_status: int, remaining: int, total: int) -> None:
        done = total - remaining
        progress(f"{done}/{total} pages copied ({100 * done // max(total, 1)}%)")

    return report


def _check_copy(conn: sqlite3.Connection, path: Path) -> None:
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as error:
        raise BackupError(f"{path}: not a usable SQLite database ({error})") from None
    if rows != ["ok"]:
        raise BackupError(f"{path}: integrity check failed: {'; '.join(rows[:5])}")


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


# --------------------------------------------------------------------- PostgreSQL


def pg_tool(name: str) -> str:
    """Path of pg_dump/pg_restore: MIGVAL_PG_BINDIR, PATH, then the newest
    /usr/lib/postgresql/*/bin; BackupError naming the fix when there is none."""
    bindir = os.environ.get(ENV_PG_BINDIR)
    candidates = [str(Path(bindir) / name)] if bindir else []
    found = shutil.which(name)
    if found:
        candidates.append(found)
    candidates += [f"{d}/{name}" for d in sorted(glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise BackupError(
        f"{name} not found (looked in {ENV_PG_BINDIR}, PATH and /usr/lib/postgresql/*/bin): "
        "install the PostgreSQL client tools of the server's major version (Debian: "
        "apt-get install postgresql-client), or move data with `migval db export`/`import`"
    )


def _libpq_env(settings: DatabaseSettings) -> dict[str, str]:
    url = make_url(settings.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    host = url.host or url.query.get("host")
    values = {
        "PGHOST": host if isinstance(host, str) else None,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password if isinstance(url.password, str) else None,
        "PGDATABASE": url.database,
        "PGSSLMODE": "verify-full"
        if settings.ssl_mode is SSLMode.VERIFY_FULL
        else settings.ssl_mode.value,
        "PGSSLROOTCERT": settings.ssl_root_cert,
        "PGCONNECT_TIMEOUT": "10",
        "PGAPPNAME": "migval",
    }
    env.update({k: v for k, v in values.items() if v})
    return env


def _run_pg(argv: list[str], settings: DatabaseSettings, what: str) -> None:
    completed = subprocess.run(  # noqa: S603 - argv built from fixed options and paths
        argv, env=_libpq_env(settings), capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        lines = [ln for ln in completed.stderr.strip().splitlines() if ln.strip()]
        detail = " | ".join(lines[-5:]) or f"exit code {completed.returncode}"
        raise BackupError(f"{what} failed: {detail}")


def _pg_dump(settings: DatabaseSettings, dest: Path, progress: Progress) -> None:
    tool = pg_tool("pg_dump")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    progress(f"pg_dump of {describe_url(settings.url)} to {dest} ({tool})")
    try:
        _run_pg([tool, "--format=custom", "--file", str(partial)], settings, "pg_dump")
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _pg_restore(settings: DatabaseSettings, source: Path, progress: Progress) -> None:
    tool = pg_tool("pg_restore")
    database = make_url(settings.url).database or ""
    progress(f"pg_restore of {source} into {describe_url(settings.url)} ({tool})")
    _run_pg(
        [
            tool,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--dbname",
            database,
            str(source),
        ],
        settings,
        "pg_restore",
    )
