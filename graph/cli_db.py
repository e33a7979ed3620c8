"""``migval db init|stats|cleanup|optimize|validate|backup|restore|export|import|
import-legacy`` and ``migval maintenance``: database operations for operators
(docs/operations.md).

Wired into the ``migval`` parser by ``graph.cli`` through ``add_db_commands(db_commands)``
(the ``db`` group's subparsers) and ``add_maintenance_command(commands)`` (the top
level). The work lives in ``persistence.maintenance``; this module parses arguments,
prints results (stdout) and progress (stderr) and picks the exit code: 0 success,
1 failure or problems found, 2 usage or configuration error (bad arguments, a
malformed environment variable, a missing input path).
"""

import argparse
import asyncio
import functools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from graph.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError, MigvalError
from persistence.maintenance import MaintenanceError
from persistence.maintenance.cleanup import (
    DEFAULT_BATCH_SIZE,
    ENV_RETENTION_DAYS,
    MAX_RETENTION_DAYS,
)
from persistence.maintenance.routine import STEPS
from persistence.settings import DatabaseSettings

PROG = "migval"

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], int]


def add_db_commands(db_subparsers: Any) -> None:
    """Register the operations commands on the ``migval db`` subparsers."""
    init = db_subparsers.add_parser(
        "init",
        help="create the database if missing, then migrate it to the head",
        description="Create the database DATABASE_URL names if it does not exist (SQLite: "
        "the file; PostgreSQL: CREATE DATABASE through the server's 'postgres' database, "
        "which needs the CREATEDB privilege), then migrate it to the head. Safe to run "
        "again.",
    )
    init.set_defaults(handler=_init)

    stats = db_subparsers.add_parser(
        "stats",
        help="row counts, table sizes, pool figures, oldest/newest session",
        description="Show row counts and sizes per table (PostgreSQL: pg_total_relation_size; "
        "SQLite: dbstat), the database size, the connection pool of this process (and, on "
        "PostgreSQL, the server's connections to the database) and the oldest and newest "
        "session.",
    )
    stats.add_argument("--json", action="store_true", help="one JSON object instead of text")
    stats.set_defaults(handler=_stats)

    cleanup = db_subparsers.add_parser(
        "cleanup",
        help="retention: delete sessions older than N days (children cascade)",
        description="Delete the sessions created more than DAYS days ago, with their "
        "results, discrepancies and behavioral tests; validation_metrics and audit_log "
        f"are kept. Batches of --batch-size sessions, one transaction each (an interrupted "
        f"run keeps its batches; run it again to continue). DAYS defaults to "
        f"{ENV_RETENTION_DAYS} or 30.",
    )
    cleanup.add_argument(
        "--days", type=_days, help=f"retention in days (default: {ENV_RETENTION_DAYS} or 30)"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    cleanup.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        help="sessions per transaction (default: %(default)s)",
    )
    cleanup.add_argument("--json", action="store_true", help="one JSON object instead of text")
    cleanup.set_defaults(handler=_cleanup)

    optimize = db_subparsers.add_parser(
        "optimize",
        help="VACUUM and ANALYZE (SQLite: also PRAGMA optimize, WAL checkpoint)",
        description="Reclaim space and refresh planner statistics. PostgreSQL: VACUUM "
        "(ANALYZE) of every table (outside a transaction). SQLite: VACUUM, ANALYZE, PRAGMA "
        "optimize, PRAGMA wal_checkpoint(TRUNCATE). Safe while the server runs.",
    )
    optimize.set_defaults(handler=_optimize)

    validate = db_subparsers.add_parser(
        "validate",
        help="integrity checks; exit 1 with a report when anything is wrong",
        description="Check the schema is at the migration head, SQLite's integrity_check "
        "and foreign_key_check (PostgreSQL: no NOT VALID constraint, no disabled trigger), "
        "orphan rows for every foreign key, discrepancies linked to a result of another "
        "session, value ranges (fidelity_score, confidence in [0, 1], ...), enum values "
        "and (SQLite) JSON validity. Exit 1 when a problem is found.",
    )
    validate.add_argument("--json", action="store_true", help="one JSON object instead of text")
    validate.set_defaults(handler=_validate)

    backup = db_subparsers.add_parser(
        "backup",
        help="physical backup to PATH (SQLite backup API / pg_dump -Fc)",
        description="Write a backup of the database to PATH. SQLite: the online backup "
        "API (consistent while the server runs), written to PATH.partial and renamed when "
        "complete. PostgreSQL: pg_dump --format=custom (the client tools must be "
        "installed). Restore it with `migval db restore PATH`.",
    )
    backup.add_argument("path", type=Path, metavar="PATH")
    backup.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    backup.set_defaults(handler=_backup)

    restore = db_subparsers.add_parser(
        "restore",
        help="replace the database with a backup made by `migval db backup`",
        description="Replace the whole content of the database with the backup at PATH. "
        "SQLite: the backup API copies it into the database file under SQLite's lock; stop "
        "the server first. PostgreSQL: pg_restore --clean --if-exists --no-owner "
        "--single-transaction (all or nothing). Backups are per dialect: use export/import "
        "to move between SQLite and PostgreSQL.",
    )
    restore.add_argument("path", type=Path, metavar="PATH")
    restore.set_defaults(handler=_restore)

    export = db_subparsers.add_parser(
        "export",
        help="portable logical export to DIR (JSON lines + manifest.json)",
        description="Write every table as DIR/<table>.jsonl (rows ordered by id) and "
        "DIR/manifest.json (format version, schema revision, row counts, sha256 per file), "
        "from one consistent snapshot. DIR must not exist or be empty. Load it into an "
        "empty database of either dialect with `migval db import DIR`.",
    )
    export.add_argument("directory", type=Path, metavar="DIR")
    export.set_defaults(handler=_export)

    importer = db_subparsers.add_parser(
        "import",
        help="load an export into an EMPTY migrated database (either dialect)",
        description="Load DIR (from `migval db export`) into the database, which must be "
        "empty and migrated to the export's revision (`migval db init`). Checksums and "
        "row counts are verified first; the import is one transaction (all or nothing), "
        "ids are preserved and PostgreSQL sequences are reset afterwards.",
    )
    importer.add_argument("directory", type=Path, metavar="DIR")
    importer.set_defaults(handler=_import)

    legacy = db_subparsers.add_parser(
        "import-legacy",
        help="import sessions exported from the old in-memory store (JSON list)",
        description="Import FILE, a JSON list of sessions exported from the old in-memory "
        "store (format: docs/legacy-import.md), through the persistence services, one "
        "transaction per session. Idempotent by request_id: sessions already imported "
        "with the same content are skipped; different content is reported as a conflict. "
        "Exit 1 when a session conflicted or failed.",
    )
    legacy.add_argument("file", type=Path, metavar="FILE")
    legacy.add_argument("--json", action="store_true", help="one JSON report instead of text")
    legacy.set_defaults(handler=_import_legacy)

    rollup = db_subparsers.add_parser(
        "rollup",
        help="materialize daily/weekly/monthly metrics of closed periods",
        description="Compute validation_metrics for every closed day, ISO week and month "
        "(UTC) overlapping the last DAYS days (or all history with --full) and store the "
        "rows that are new or changed. Idempotent: a second run writes nothing. The "
        "current period is computed live by the metrics query, never stored.",
    )
    rollup.add_argument("--days", type=_days, default=35, help="recompute window (default 35)")
    rollup.add_argument("--full", action="store_true", help="recompute every closed period")
    rollup.add_argument("--json", action="store_true", help="one JSON report instead of text")
    rollup.set_defaults(handler=_rollup)


def add_maintenance_command(top_level_subparsers: Any) -> None:
    """Register ``migval maintenance`` on the top-level subparsers."""
    maintenance = top_level_subparsers.add_parser(
        "maintenance",
        help="periodic routine for cron: rollup, cleanup, optimize, validate",
        description="Run, in order: the metrics rollup of the last --rollup-days days, "
        f"retention cleanup (--days, default {ENV_RETENTION_DAYS} or 30), optimize and "
        "validate. Prints one line per step; every step runs even if an earlier one "
        "failed; exit 1 when any step failed (including problems found by validate).",
    )
    maintenance.add_argument("--days", type=_days, help="retention in days for cleanup")
    maintenance.add_argument(
        "--rollup-days",
        type=_days,
        help="days of metrics to roll up again (default: the rollup's own window)",
    )
    maintenance.add_argument(
        "--skip",
        action="append",
        choices=STEPS,
        default=[],
        help="skip a step (repeatable)",
    )
    maintenance.set_defaults(handler=_maintenance)


# --- argument types ----------------------------------------------------------------


def _int_between(raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
    return value


def _days(raw: str) -> int:
    return _int_between(raw, 1, MAX_RETENTION_DAYS)


def _batch_size(raw: str) -> int:
    return _int_between(raw, 1, 10_000)


# --- plumbing ----------------------------------------------------------------------


def _guarded(handler: Handler) -> Handler:
    """Expected failures become one stderr line and exit 1. Configuration errors
    propagate (``graph.cli.main`` turns them into exit 2), as do database errors
    (``graph.cli.main`` reports them and exits with 1)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ConfigurationError:
            raise
        except (MaintenanceError, MigvalError) as error:  # MigvalError: db unavailable, ...
            _error(error.message if isinstance(error, MigvalError) else str(error))
            return EXIT_FAILURE

    return run


def _run(work: Callable[[DatabaseManager], Awaitable[T]]) -> T:
    """Run ``work`` on the database DATABASE_URL names, in a fresh event loop."""

    async def main() -> T:
        db = DatabaseManager.from_env()
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _missing(path: Path, what: str) -> int | None:
    if path.exists():
        return None
    _error(f"{what} {path} does not exist")
    return EXIT_USAGE


# --- handlers ----------------------------------------------------------------------


@_guarded
def _init(_args: argparse.Namespace) -> int:
    from persistence.database import current_revision  # noqa: PLC0415
    from persistence.maintenance import init  # noqa: PLC0415

    settings = DatabaseSettings.from_env()
    if settings.dialect == "sqlite":
        created = init.create_sqlite_if_missing(settings)
    else:
        created = asyncio.run(init.create_postgres_if_missing(settings))
    print(f"database {created.where}: {'created' if created.created else 'exists'}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    init.migrate_to_head(settings.url)

    async def revision(db: DatabaseManager) -> str | None:
        async with db.read_session() as session:
            return await current_revision(session)

    print(f"schema at revision {_run(revision)} (head)")
    return EXIT_OK


@_guarded
def _stats(args: argparse.Namespace) -> int:
    from persistence.maintenance.stats import collect_stats  # noqa: PLC0415

    report = _run(collect_stats)
    if args.json:
        _print_json(report.to_dict())
    else:
        print("\n".join(report.lines()))
    return EXIT_OK


@_guarded
def _cleanup(args: argparse.Namespace) -> int:
    from persistence.maintenance.cleanup import (  # noqa: PLC0415
        CleanupCounts,
        cleanup,
        retention_days,
    )

    days = args.days if args.days is not None else retention_days()

    def progress(batch: int, counts: CleanupCounts, total: int) -> None:
        _progress(
            f"cleanup: batch {batch}: deleted {counts.describe()} (of {total} expired sessions)"
        )

    report = _run(
        lambda db: cleanup(
            db, days, dry_run=args.dry_run, batch_size=args.batch_size, progress=progress
        )
    )
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return EXIT_OK


@_guarded
def _rollup(args: argparse.Namespace) -> int:
    from persistence.services.metrics import run_rollup  # noqa: PLC0415

    report = _run(lambda db: run_rollup(db, full=args.full, days=args.days))
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK
    for period in report.periods:
        frozen = period.frozen_until
        print(
            f"{period.period.value}: {period.computed} periods computed, "
            f"{period.inserted} inserted, {period.updated} updated, {period.unchanged} unchanged"
            + ("" if frozen is None else f" (kept as stored before {frozen.date().isoformat()})")
        )
    print(f"rollup: {report.written} rows written")
    return EXIT_OK


@_guarded
def _optimize(_args: argparse.Namespace) -> int:
    from persistence.maintenance.optimize import OptimizeStep, optimize  # noqa: PLC0415

    def progress(step: OptimizeStep) -> None:
        _progress(f"optimize: {step.statement} ({step.seconds:.2f}s)")

    report = _run(lambda db: optimize(db, progress))
    for step in report.steps:
        if step.note:
            print(f"warning: {step.note}")
    print(f"optimized ({report.dialect}): {report.summary()}")
    return EXIT_OK


@_guarded
def _validate(args: argparse.Namespace) -> int:
    from persistence.maintenance.integrity import validate  # noqa: PLC0415

    report = _run(validate)
    if args.json:
        _print_json(report.to_dict())
    else:
        print("\n".join(report.lines()))
    return EXIT_OK if report.ok else EXIT_FAILURE


@_guarded
def _backup(args: argparse.Namespace) -> int:
    from persistence.maintenance.backup import backup  # noqa: PLC0415
    from persistence.maintenance.tables import human_bytes  # noqa: PLC0415

    settings = DatabaseSettings.from_env()
    path: Path = args.path
    if path.is_dir() or not path.parent.is_dir():
        _error(f"{path} must be a file path in an existing directory")
        return EXIT_USAGE
    if path.exists() and not args.force:
        _error(f"{path} exists; use --force to overwrite it")
        return EXIT_FAILURE
    outcome = backup(settings, path, _progress)
    revision = f", schema revision {outcome.revision}" if outcome.revision else ""
    print(
        f"backup written to {outcome.path} ({human_bytes(outcome.size_bytes)} in "
        f"{outcome.seconds:.2f}s{revision})"
    )
    return EXIT_OK


@_guarded
def _restore(args: argparse.Namespace) -> int:
    from persistence.maintenance.backup import restore  # noqa: PLC0415
    from persistence.maintenance.tables import describe_url  # noqa: PLC0415

    settings = DatabaseSettings.from_env()
    missing = _missing(args.path, "backup file")
    if missing is not None:
        return missing
    outcome = restore(settings, args.path, _progress)
    revision = f" (schema revision {outcome.revision})" if outcome.revision else ""
    print(
        f"restored {args.path}{revision} into {describe_url(settings.url)} in "
        f"{outcome.seconds:.2f}s; check it with `migval db validate`"
    )
    return EXIT_OK


@_guarded
def _export(args: argparse.Namespace) -> int:
    from persistence.maintenance.export import export_database  # noqa: PLC0415

    def progress(table: str, rows: int) -> None:
        _progress(f"export: {table}: {rows} rows")

    report = _run(lambda db: export_database(db, args.directory, progress))
    print(report.summary())
    return EXIT_OK


@_guarded
def _import(args: argparse.Namespace) -> int:
    from persistence.maintenance.importer import import_database  # noqa: PLC0415

    missing = _missing(args.directory, "export directory")
    if missing is not None:
        return missing

    def progress(table: str, done: int, total: int) -> None:
        _progress(f"import: {table}: {done}/{total} rows")

    report = _run(lambda db: import_database(db, args.directory, progress))
    print(report.summary())
    return EXIT_OK


@_guarded
def _import_legacy(args: argparse.Namespace) -> int:
    from persistence.maintenance.legacy import (  # noqa: PLC0415
        SessionOutcome,
        import_legacy,
        read_legacy_file,
    )

    missing = _missing(args.file, "file")
    if missing is not None:
        return missing
    items = read_legacy_file(args.file)
    _progress(f"import-legacy: {len(items)} sessions in {args.file}")
    done = 0

    def on_outcome(outcome: SessionOutcome) -> None:
        nonlocal done
        done += 1
        if not args.json:
            print(outcome.line(), flush=True)
        if done % 100 == 0:
            _progress(f"import-legacy: {done}/{len(items)} sessions processed")

    report = _run(lambda db: import_legacy(db, items, on_outcome))
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILURE


@_guarded
def _maintenance(args: argparse.Namespace) -> int:
    from persistence.maintenance.cleanup import retention_days  # noqa: PLC0415
    from persistence.maintenance.routine import (  # noqa: PLC0415
        StepResult,
        StepStatus,
        run_routine,
    )

    days = args.days if args.days is not None else retention_days()

    def on_step(step: StepResult) -> None:
        print(step.line(), flush=True)

    steps = _run(
        lambda db: run_routine(
            db,
            retention_days=days,
            rollup_days=args.rollup_days,
            skip=frozenset(args.skip),
            on_step=on_step,
        )
    )
    failed = [s.name for s in steps if s.status is StepStatus.FAILED]
    if failed:
        print(f"maintenance: FAILED steps: {', '.join(failed)}")
        return EXIT_FAILURE
    print("maintenance: done")
    return EXIT_OK


__all__ = ["add_db_commands", "add_maintenance_command"]
