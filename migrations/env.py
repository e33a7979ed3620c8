"""Alembic environment (async). The URL comes from the config (tests, CLI) or from
DATABASE_URL, so ``alembic upgrade head`` uses the same database as the server."""

import asyncio
import warnings
from dataclasses import replace
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import SchemaItem

from persistence.database import postgres_connect_args
from persistence.models import metadata
from persistence.settings import DatabaseSettings

config = context.config

# PostgreSQL-only expression index (ddl_if): SQLite cannot reflect it, and
# include_object below already leaves it out of the comparison there.
warnings.filterwarnings(
    "ignore", message=r"autogenerate skipping metadata-specified expression-based index"
)
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or DatabaseSettings.from_env().url


def include_object(
    obj: SchemaItem, _name: str | None, _type: str, _reflected: bool, _compare_to: Any
) -> bool:
    """Skip objects created for another dialect only (``ddl_if``), which Alembic's
    comparison does not know about."""
    ddl_if = getattr(obj, "_ddl_if", None)
    if ddl_if is None or ddl_if.dialect is None:
        return True
    return bool(ddl_if.dialect == context.get_context().dialect.name)  # type: ignore[union-attr]


def _configure(connection: Connection | None, **kw: Any) -> None:
    is_sqlite = _url().startswith("sqlite")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        render_as_batch=is_sqlite,
        compare_type=True,
        **kw,
    )


def run_migrations_offline() -> None:
    _configure(None, url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = _url()
    connect_args = {}
    if not url.startswith("sqlite"):
        # Same TLS (SSL_MODE, SSL_ROOT_CERT) and session settings as the server.
        settings = replace(DatabaseSettings.from_env(), url=url)
        connect_args = postgres_connect_args(settings)
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
