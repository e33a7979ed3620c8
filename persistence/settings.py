"""Database settings read from the environment, validated once at start-up."""

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from persistence.errors import ConfigurationError

C = TypeVar("C", bound=StrEnum)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./migration_validator.db"


class SSLMode(StrEnum):
    DISABLE = "disable"
    REQUIRE = "require"
    VERIFY_FULL = "verify-full"


class SQLiteSynchronous(StrEnum):
    OFF = "OFF"
    NORMAL = "NORMAL"
    FULL = "FULL"
    EXTRA = "EXTRA"


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = DEFAULT_DATABASE_URL
    pool_size: int = 5
    max_overflow: int = 10
    pool_pre_ping: bool = False
    pool_timeout: float = 30.0
    pool_recycle: int = 1800
    ssl_mode: SSLMode = SSLMode.DISABLE
    ssl_root_cert: str | None = None
    sqlite_busy_timeout_ms: int = 5000
    sqlite_synchronous: SQLiteSynchronous = SQLiteSynchronous.NORMAL
    sqlite_loop_budget_ms: int = 50  # 0: no reads on the event loop's connection
    statement_timeout_ms: int = 30000
    retry_attempts: int = 5
    retry_deadline_s: float = 10.0

    @property
    def dialect(self) -> str:
        return "sqlite" if self.url.startswith("sqlite") else "postgresql"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "DatabaseSettings":
        """Build settings from ``env`` (default ``os.environ``); bad values raise
        ConfigurationError naming the variable."""
        e = os.environ if env is None else env
        d = cls()  # defaults (slots hide class-level values)
        url = e.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ConfigurationError(
                "DATABASE_URL",
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg://",
            )
        settings = cls(
            url=url,
            pool_size=env_int(e, "DB_POOL_SIZE", d.pool_size, minimum=1),
            max_overflow=env_int(e, "DB_MAX_OVERFLOW", d.max_overflow, minimum=0),
            pool_pre_ping=_bool(e, "DB_POOL_PRE_PING", d.pool_pre_ping),
            pool_timeout=_float(e, "DB_POOL_TIMEOUT", d.pool_timeout, minimum=0.001),
            pool_recycle=env_int(e, "DB_POOL_RECYCLE", d.pool_recycle, minimum=-1),
            ssl_mode=env_choice(e, "SSL_MODE", SSLMode, d.ssl_mode),
            ssl_root_cert=e.get("SSL_ROOT_CERT") or None,
            sqlite_busy_timeout_ms=env_int(
                e, "SQLITE_BUSY_TIMEOUT_MS", d.sqlite_busy_timeout_ms, minimum=0
            ),
            sqlite_synchronous=env_choice(
                e, "SQLITE_SYNCHRONOUS", SQLiteSynchronous, d.sqlite_synchronous
            ),
            sqlite_loop_budget_ms=env_int(
                e, "SQLITE_LOOP_BUDGET_MS", d.sqlite_loop_budget_ms, minimum=0
            ),
            statement_timeout_ms=env_int(
                e, "DB_STATEMENT_TIMEOUT_MS", d.statement_timeout_ms, minimum=0
            ),
            retry_attempts=env_int(e, "DB_RETRY_ATTEMPTS", d.retry_attempts, minimum=1),
            retry_deadline_s=_float(e, "DB_RETRY_DEADLINE", d.retry_deadline_s, minimum=0.0),
        )
        if settings.ssl_mode is SSLMode.VERIFY_FULL and not settings.ssl_root_cert:
            raise ConfigurationError("SSL_ROOT_CERT", "is required when SSL_MODE=verify-full")
        if settings.ssl_root_cert and not os.path.isfile(settings.ssl_root_cert):
            raise ConfigurationError("SSL_ROOT_CERT", f"file not found: {settings.ssl_root_cert}")
        _check_production_tls(settings, e)
        return settings


def _check_production_tls(settings: DatabaseSettings, env: Mapping[str, str]) -> None:
    """Production reaches a PostgreSQL server on another machine only over verified TLS
    (SSL_MODE=verify-full), unless MIGVAL_ALLOW_INSECURE_DB_TLS=1 says otherwise."""
    if env.get("MIGVAL_ENV", "").strip().lower() != "production":
        return
    if settings.dialect != "postgresql" or settings.ssl_mode is SSLMode.VERIFY_FULL:
        return
    if _bool(env, "MIGVAL_ALLOW_INSECURE_DB_TLS", default=False):
        return
    try:
        url = make_url(settings.url)
    except ArgumentError:
        raise ConfigurationError("DATABASE_URL", "is not a valid URL") from None
    hosts = [*([url.host] if url.host else []), *_as_tuple(url.query.get("host") or ())]
    if not hosts and env.get("PGHOST"):  # asyncpg's fallback when the URL names no host
        hosts = [env["PGHOST"]]
    names = [h.strip() for part in hosts for h in part.split(",") if h.strip()]
    remote = [h for h in names if not _is_local_host(h)]
    if remote:
        raise ConfigurationError(
            "SSL_MODE",
            f"is {settings.ssl_mode.value!r} but MIGVAL_ENV=production and the database host "
            f"{remote[0]!r} is not loopback: set SSL_MODE=verify-full with "
            "SSL_ROOT_CERT=<CA file> (the server's certificate and host name are checked), "
            "or accept an unverified connection with MIGVAL_ALLOW_INSECURE_DB_TLS=1",
        )


def _as_tuple(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def _is_local_host(host: str) -> bool:
    """Loopback (127.0.0.0/8, ::1, localhost) or a unix-socket directory; ``host`` may
    carry a port (``host:5432``, ``[::1]:5432``)."""
    if host.startswith("/"):
        return True
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    """Integer setting ``name`` (``default`` when unset or blank); ConfigurationError
    naming it when malformed or below ``minimum``. Shared by every integer setting."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(name, f"must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(name, f"must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, f"must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(name, f"must be >= {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(name, f"must be true or false, got {raw!r}")


def env_choice(env: Mapping[str, str], name: str, enum: type[C], default: C) -> C:
    """One of ``enum``'s values, case-insensitively (``default`` when unset or blank)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    for member in enum:
        if member.value.lower() == raw.strip().lower():
            return member
    allowed = ", ".join(m.value for m in enum)
    raise ConfigurationError(name, f"must be one of {allowed}, got {raw!r}")
