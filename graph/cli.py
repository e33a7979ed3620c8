"""The ``migval`` command: run the server, manage the database schema and API tokens.

Exit codes: 0 success, 1 failure (database unreachable, migration error, drift found,
server failed to start), 2 usage or configuration error (bad arguments, a malformed
environment variable). Errors are printed as one line on stderr, without a traceback.
"""

import argparse
import asyncio
import importlib.util
import io
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import exc

from graph.cli_db import add_db_commands, add_maintenance_command
from graph.cli_keys import add_commands as add_key_commands
from graph.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.errors import ConfigurationError, MigvalError, ValidationFailed
from persistence.models import ApiToken
from persistence.schema_version import alembic_config
from persistence.services.tokens import NAME_PATTERN, NAME_RULE, TokenService
from persistence.settings import DatabaseSettings

PROG = "migval"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

T = TypeVar("T")
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_TOKEN_LIFETIME = timedelta(days=3660)


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
        description="Run the GraphQL server: /graphql (GraphiQL in development mode), "
        "liveness at /healthz, readiness at /readyz, Prometheus metrics at /metrics (a "
        "viewer token in production). Production logs one JSON object per line. "
        "Migrate the database first (migval "
        "db migrate). MIGVAL_ENV=production requires API tokens (migval token create); "
        "development mode refuses a non-loopback --host unless --allow-insecure-bind.",
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
    serve.add_argument(
        "--allow-insecure-bind",
        action="store_true",
        help="bind a non-loopback --host even though requests without a token are let in "
        "(development mode); same as MIGVAL_ALLOW_INSECURE_BIND=1",
    )
    serve.set_defaults(handler=_serve)

    _add_token_commands(commands)

    db = commands.add_parser(
        "db",
        help="manage the database: schema, maintenance, backups, export/import",
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
    add_db_commands(db_commands)
    add_maintenance_command(commands)
    add_key_commands(commands)
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

    from graph.logs import configure_logging  # noqa: PLC0415 - only this command needs it
    from graph.settings import SERVER_PROCESS_ENV, AppSettings  # noqa: PLC0415 - slow
    from persistence.crypto import KeyRing  # noqa: PLC0415 - imports cryptography (slow)
    from persistence.idempotency import idempotency_ttl  # noqa: PLC0415
    from persistence.instrumentation import InstrumentationSettings  # noqa: PLC0415

    DatabaseSettings.from_env()  # fail fast, with a clean message, on a bad setting
    InstrumentationSettings.from_env()
    settings = AppSettings.from_env()
    KeyRing.from_env()  # production without MIGVAL_ENCRYPTION_KEYS refuses to start
    idempotency_ttl()  # MIGVAL_IDEMPOTENCY_TTL_HOURS
    if args.allow_insecure_bind:
        settings = replace(settings, allow_insecure_bind=True)
    settings.check_bind(args.host)
    if settings.anonymous_access:
        role = settings.anonymous_role.value if settings.anonymous_role else "none"
        print(
            f"{PROG}: development mode: requests without a token act as {role!r} "
            "(MIGVAL_ANONYMOUS_ROLE); set MIGVAL_ENV=production to require tokens",
            file=sys.stderr,
        )
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    # Production: every line (uvicorn's included) one JSON object; uvicorn must not
    # install its own handlers. Development: uvicorn's usual format.
    configure_logging(production=settings.production, level=args.log_level)
    logging_options: dict[str, Any] = {"log_config": None} if settings.production else {}
    # Each server process (one per worker) tunes its garbage collector once its app is
    # loaded (graph.app.tune_collector); the variable reaches the workers uvicorn spawns.
    os.environ[SERVER_PROCESS_ENV] = "1"
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
            **logging_options,
        )
    except SystemExit as stop:  # uvicorn exits with 3 when startup fails
        if stop.code not in (None, 0):
            raise CLIFailure("server failed to start (see the log above)") from None
    return EXIT_OK


# --- token ------------------------------------------------------------------------


def _add_token_commands(commands: Any) -> None:
    token = commands.add_parser(
        "token",
        help="manage API tokens (create, list, revoke)",
        description="Manage the bearer tokens clients send as 'Authorization: Bearer "
        "<token>'. Only a hash of each token is stored: the token is shown once, when "
        "it is created.",
    )
    token.set_defaults(group_parser=token)
    token_commands = token.add_subparsers(title="commands", metavar="COMMAND")

    create = token_commands.add_parser(
        "create",
        help="create a token and print it (once)",
        description="Create a token and print it on stdout (details on stderr). It "
        "cannot be shown again: store it now.",
    )
    create.add_argument("--name", required=True, type=_token_name, help=f"unique name: {NAME_RULE}")
    create.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="viewer: read; writer: also record and resolve; admin: also delete",
    )
    create.add_argument(
        "--expires-in",
        type=_duration,
        metavar="DURATION",
        help="lifetime such as 90d, 12h, 30m or 1w2d (s, m, h, d, w); default: never expires",
    )
    create.set_defaults(handler=_token_create)

    listing = token_commands.add_parser(
        "list",
        help="list the tokens (never their text)",
        description="List the tokens: name, role, prefix, created, expires, last used, revoked.",
    )
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    listing.set_defaults(handler=_token_list)

    revoke = token_commands.add_parser(
        "revoke",
        help="revoke a token by name (refused from the next request on)",
        description="Revoke the token NAME: every later request carrying it gets 401.",
    )
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(handler=_token_revoke)


def _token_name(raw: str) -> str:
    if not NAME_PATTERN.match(raw):
        raise argparse.ArgumentTypeError(f"must be {NAME_RULE}, got {raw!r}")
    return raw


def _duration(raw: str) -> timedelta:
    text = raw.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 90d, 12h, 30m or 1w2d, got {raw!r}"
        )
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than zero, got {raw!r}")
    if seconds > MAX_TOKEN_LIFETIME.total_seconds():
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TOKEN_LIFETIME.days}d, got {raw!r}")
    return timedelta(seconds=seconds)


def _run_tokens(call: Callable[[TokenService], Awaitable[T]]) -> T:
    """Run ``call`` on the database DATABASE_URL names, in a fresh event loop."""

    async def run() -> T:
        db = DatabaseManager.from_env()
        try:
            return await call(TokenService(db))
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except ConfigurationError:
        raise
    except ValidationFailed as error:
        raise ConfigurationError(error.field, error.message) from None
    except MigvalError as error:  # duplicate name, unknown name, database unavailable
        raise CLIFailure(error.message) from None


def _token_create(args: argparse.Namespace) -> int:
    issued = _run_tokens(lambda tokens: tokens.create(args.name, args.role, args.expires_in))
    row = issued.row
    print(issued.token)
    expires = _when(row.expires_at) if row.expires_at else "never"
    print(
        f"created token {row.name!r} (role {row.role.value}, prefix {row.token_prefix}, "
        f"expires {expires}). This is the only time it is shown: store it now. "
        "Clients send it as 'Authorization: Bearer <token>'.",
        file=sys.stderr,
    )
    return EXIT_OK


def _token_list(args: argparse.Namespace) -> int:
    rows = _run_tokens(lambda tokens: tokens.list_all())
    records = [_token_record(row) for row in rows]
    if args.json:
        print(json.dumps(records, indent=2))
        return EXIT_OK
    if not records:
        print("(no tokens; create one with `migval token create --name NAME --role ROLE`)")
        return EXIT_OK
    headers = {
        "name": "NAME",
        "role": "ROLE",
        "prefix": "PREFIX",
        "created": "CREATED",
        "expires": "EXPIRES",
        "last_used": "LAST USED",
        "revoked": "REVOKED",
    }
    table = [
        {key: "-" if value is None else str(value) for key, value in record.items()}
        for record in records
    ]
    widths = {key: max(len(title), *(len(r[key]) for r in table)) for key, title in headers.items()}
    print("  ".join(title.ljust(widths[key]) for key, title in headers.items()).rstrip())
    for record in table:
        print("  ".join(record[key].ljust(widths[key]) for key in headers).rstrip())
    return EXIT_OK


def _token_record(row: ApiToken) -> dict[str, str | None]:
    return {
        "name": row.name,
        "role": row.role.value,
        "prefix": row.token_prefix,
        "created": _when(row.created_at),
        "expires": _when(row.expires_at),
        "last_used": _when(row.last_used_at),
        "revoked": _when(row.revoked_at),
    }


def _token_revoke(args: argparse.Namespace) -> int:
    outcome = _run_tokens(lambda tokens: tokens.revoke(args.name))
    when = _when(outcome.row.revoked_at)
    if outcome.already_revoked:
        print(f"token {args.name!r} was already revoked at {when}")
    else:
        print(f"revoked token {args.name!r} at {when}; requests carrying it now get 401")
    return EXIT_OK


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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
