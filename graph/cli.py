"""The ``migval`` command: run the server and manage the database schema.

Exit codes: 0 success, 1 failure (database unreachable, migration error, drift found,
server failed to start), 2 usage or configuration error (bad arguments, a malformed
environment variable). Errors are printed as one line on stderr, without a traceback.
"""

import argparse
import importlib.util
import io
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import exc

from persistence.errors import ConfigurationError
from persistence.schema_version import alembic_config
from persistence.settings import DatabaseSettings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PROG = "migval"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


# asyncpg raises its own exceptions, unwrapped by SQLAlchemy, when a connection cannot
# be opened (unknown database, authentication failed).
_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    exc.SQLAlchemyError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class CLIFailure(Exception):
    """An expected failure: its message is printed and the command exits with 1."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``migval`` console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 on --help
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:  # a command group given without its subcommand
        usage_parser: argparse.ArgumentParser = getattr(args, "group_parser", parser)
        usage_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except ConfigurationError as error:
        _error(f"configuration error: {error}")
        return EXIT_USAGE
    except (CLIFailure, CommandError) as error:  # alembic: bad revision, drift, not at head
        _error(str(error))
        return EXIT_FAILURE
    except exc.DBAPIError as error:
        _error(f"database error: {_describe_dbapi_error(error)}")
        return EXIT_FAILURE
    except _DATABASE_ERRORS as error:
        _error(f"database error: {type(error).__name__}: {_first_line(error)}")
        return EXIT_FAILURE


# --- parser -----------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="migval: system of record for migration validation (GraphQL server).",
        epilog="The database is chosen by DATABASE_URL (default: SQLite file "
        "./migration_validator.db). See README.md for every setting.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the GraphQL server (uvicorn)",
        description="Run the GraphQL server. GraphiQL is served at /graphql, liveness at "
        "/healthz and readiness at /readyz. Migrate the database first (migval db migrate).",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default: %(default)s)")
    serve.add_argument(
        "--workers", type=_positive_int, default=1, help="worker processes (default: %(default)s)"
    )
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="log level (default: %(default)s)"
    )
    serve.set_defaults(handler=_serve)

    db = commands.add_parser(
        "db",
        help="manage the database schema (Alembic migrations)",
        description="Manage the database schema. Migrations are the only way the schema "
        "is created; the database is the one DATABASE_URL names.",
    )
    db.set_defaults(group_parser=db)
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")

    migrate = db_commands.add_parser(
        "migrate",
        help="create the schema or upgrade it to a revision (default: head)",
        description="Create the schema or upgrade it to REVISION (default: head).",
    )
    migrate.add_argument("revision", nargs="?", default="head", metavar="REVISION")
    migrate.set_defaults(handler=_db_migrate)

    downgrade = db_commands.add_parser(
        "downgrade",
        help="downgrade the schema to a revision ('base' removes every table)",
        description="Downgrade the schema to REVISION: a revision id, a relative step "
        "such as -1, or 'base' (drops every table and its data).",
    )
    downgrade.add_argument("revision", metavar="REVISION")
    downgrade.set_defaults(handler=_db_downgrade)

    current = db_commands.add_parser(
        "current",
        help="show the database's current revision",
        description="Show the revision the database is at.",
    )
    current.add_argument("-v", "--verbose", action="store_true", help="show revision details")
    current.add_argument(
        "--check-heads",
        action="store_true",
        help="exit with 1 unless the database is at the migration head",
    )
    current.set_defaults(handler=_db_current)

    history = db_commands.add_parser(
        "history",
        help="list the migrations",
        description="List the migrations, newest first.",
    )
    history.add_argument("-v", "--verbose", action="store_true", help="show revision details")
    history.set_defaults(handler=_db_history)

    check = db_commands.add_parser(
        "check",
        help="fail if the models and the migrations disagree (alembic check)",
        description="Compare the models with the schema of a database migrated to the head "
        "and exit with 1 if an autogenerated migration would not be empty.",
    )
    check.set_defaults(handler=_db_check)
    return parser


def _port(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {raw!r}") from None


# --- serve ------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    DatabaseSettings.from_env()  # fail fast, with a clean message, on a bad setting
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    try:
        uvicorn.run(
            "graph.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            loop=loop,
            http=http,
        )
    except SystemExit as stop:  # uvicorn exits with 3 when startup fails
        if stop.code not in (None, 0):
            raise CLIFailure("server failed to start (see the log above)") from None
    return EXIT_OK


# --- db ---------------------------------------------------------------------------
# Alembic's env.py calls asyncio.run(): these handlers are plain synchronous code.


def _config(*, progress: bool = False) -> Config:
    _configure_logging(progress=progress)
    return alembic_config(DatabaseSettings.from_env().url)


def _db_migrate(args: argparse.Namespace) -> int:
    command.upgrade(_config(progress=True), args.revision)
    return EXIT_OK


def _db_downgrade(args: argparse.Namespace) -> int:
    command.downgrade(_config(progress=True), args.revision)
    return EXIT_OK


def _db_current(args: argparse.Namespace) -> int:
    cfg = _config()
    out = io.StringIO()
    cfg.stdout = out
    command.current(cfg, check_heads=args.check_heads, verbose=args.verbose)
    text = out.getvalue()
    sys.stdout.write(text)
    if not text.strip():
        print("(no revision: the database is not migrated; run `migval db migrate`)")
    return EXIT_OK


def _db_history(args: argparse.Namespace) -> int:
    command.history(_config(), verbose=args.verbose)
    return EXIT_OK


def _db_check(_args: argparse.Namespace) -> int:
    command.check(_config())  # raises AutogenerateDiffsDetected (a CommandError) on drift
    return EXIT_OK


# --- helpers ----------------------------------------------------------------------


def _configure_logging(*, progress: bool) -> None:
    """Warnings on stderr; with ``progress``, also Alembic's "Running upgrade ..." lines."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)-5.5s [%(name)s] %(message)s")
    if progress:
        logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)


def _describe_dbapi_error(error: exc.DBAPIError) -> str:
    """The driver's own message, without the SQL statement or SQLAlchemy's footer."""
    orig = error.orig
    if orig is None:
        return type(error).__name__
    return f"{type(orig).__name__}: {_first_line(orig)}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _version() -> str:
    try:
        return version("migval")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
