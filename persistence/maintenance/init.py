"""``migval db init``: create the database if it does not exist, then migrate it to
the head. Safe to run again: an existing database is kept and only migrated.

SQLite: the file is created (its directory must exist). PostgreSQL: connects to the
server's ``postgres`` database (``template1`` if that one is gone) with the same
credentials and runs ``CREATE DATABASE`` (server defaults for owner, encoding and
locale); the user needs the CREATEDB privilege, or an administrator creates the
database once and ``init`` only migrates it.
"""

import sqlite3
from contextlib import closing
from dataclasses import dataclass, replace

import asyncpg
import sqlalchemy as sa
from alembic import command
from sqlalchemy import exc
from sqlalchemy.engine import make_url

from persistence.database import DatabaseManager
from persistence.maintenance import MaintenanceError
from persistence.maintenance.tables import describe_url, sqlite_file
from persistence.schema_version import alembic_config
from persistence.settings import DatabaseSettings

ADMIN_DATABASES = ("postgres", "template1")


class InitError(MaintenanceError):
    """An expected failure with a message for the operator (exit code 1)."""


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    created: bool
    where: str


def create_sqlite_if_missing(settings: DatabaseSettings) -> CreateOutcome:
    path = sqlite_file(settings.url)
    if path.exists():
        return CreateOutcome(False, str(path))
    if not path.parent.is_dir():
        raise InitError(f"directory {path.parent} does not exist (create it first)")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    return CreateOutcome(True, str(path))


async def create_postgres_if_missing(settings: DatabaseSettings) -> CreateOutcome:
    url = make_url(settings.url)
    name = url.database
    if not name:
        raise InitError("DATABASE_URL names no database")
    last_error: Exception | None = None
    for admin_db in ADMIN_DATABASES:
        admin = DatabaseManager(
            replace(settings, url=url.set(database=admin_db).render_as_string(False))
        )
        try:
            async with admin.engine.connect() as raw:
                conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
                exists = await conn.scalar(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                )
                if exists:
                    return CreateOutcome(False, describe_url(settings.url))
                quoted = conn.dialect.identifier_preparer.quote_identifier(name)
                try:
                    await conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
                except exc.DBAPIError as error:
                    if "already exists" in str(error.orig):  # created concurrently
                        return CreateOutcome(False, describe_url(settings.url))
                    raise InitError(
                        f"cannot create database {name!r}: {_first_line(error.orig)} (the "
                        "user needs CREATEDB, or an administrator creates it once)"
                    ) from None
                return CreateOutcome(True, describe_url(settings.url))
        except asyncpg.InvalidCatalogNameError as error:  # no such admin database
            last_error = error
        finally:
            await admin.dispose()
    raise InitError(
        f"cannot connect to the server's {' or '.join(ADMIN_DATABASES)} database "
        f"to create {name!r}: {last_error}"
    )


def migrate_to_head(url: str) -> None:
    """Alembic upgrade to head (synchronous: migrations/env.py runs its own loop)."""
    command.upgrade(alembic_config(url), "head")


def _first_line(error: BaseException | None) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
