"""Database TLS ([security] 7).

Against a real PostgreSQL that accepts TLS only (tests/security/tls_cluster.py: a
temporary cluster with a self-signed CA, ``hostssl`` as the only pg_hba line), through
``DatabaseManager``: ``SSL_MODE=verify-full`` connects with the right CA and refuses a
wrong CA or a certificate for another name, without ever falling back to plaintext;
``require`` encrypts without verifying; ``disable`` is refused by the server. These run
once, not per backend. Without initdb/pg_ctl they are skipped loudly, or fail under
CI=true (the rule of tests/conftest.py).

Then the production rule of ``DatabaseSettings.from_env``: with MIGVAL_ENV=production
a PostgreSQL host that is not loopback needs ``SSL_MODE=verify-full`` unless
MIGVAL_ALLOW_INSECURE_DB_TLS=1, and ``migval serve`` refuses to start otherwise.
"""

import os
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.crypto import generate_key
from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError
from persistence.settings import DatabaseSettings, SSLMode
from tests.conftest import ClusterUnavailable, _pg_unavailable_reason
from tests.security.conftest import run_cli
from tests.security.tls_cluster import (
    Issued,
    TlsCluster,
    make_ca,
    make_server_cert,
    start_tls_cluster,
)

SSL_OF_THIS_BACKEND = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
REMOTE = "postgresql+asyncpg://u@db.example.com/x"


# ----------------------------------------------------------------- the TLS cluster


@dataclass(frozen=True)
class Tls:
    cluster: TlsCluster
    server: Issued  # CN 127.0.0.1, SAN IP:127.0.0.1 and DNS:localhost, signed by the CA
    other_name: Issued  # CN/SAN db.other.example only, signed by the same CA
    ca_file: str
    wrong_ca_file: str  # another self-signed CA: signed nothing the server has


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    certs = tmp_path_factory.mktemp("db-tls")
    ca, wrong_ca = make_ca("migval test CA"), make_ca("migval wrong CA")
    server = make_server_cert(ca, "127.0.0.1", dns=("localhost",), ips=("127.0.0.1",))
    other_name = make_server_cert(ca, "db.other.example", dns=("db.other.example",))
    (certs / "ca.pem").write_bytes(ca.cert_pem)
    (certs / "wrong-ca.pem").write_bytes(wrong_ca.cert_pem)
    try:
        cluster = start_tls_cluster(server)
    except ClusterUnavailable as error:
        reason = f"database TLS tests NOT run: {error}"
        _pg_unavailable_reason.append(reason)  # the "PostgreSQL NOT TESTED" banner
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield Tls(cluster, server, other_name, str(certs / "ca.pem"), str(certs / "wrong-ca.pem"))
    finally:
        cluster.stop()


@pytest.fixture
def other_name_certificate(tls: Tls) -> Iterator[None]:
    """The server presents the db.other.example certificate during the test."""
    tls.cluster.use_certificate(tls.other_name)
    try:
        yield
    finally:
        tls.cluster.use_certificate(tls.server)


@asynccontextmanager
async def manager(
    url: str, mode: str, root_cert: str | None = None
) -> AsyncIterator[DatabaseManager]:
    """A DatabaseManager built from environment-style settings (no retries)."""
    env = {"DATABASE_URL": url, "SSL_MODE": mode, "DB_RETRY_ATTEMPTS": "1"}
    if root_cert is not None:
        env["SSL_ROOT_CERT"] = root_cert
    db = DatabaseManager(DatabaseSettings.from_env(env))
    try:
        yield db
    finally:
        await db.dispose()


async def ssl_of_backend(db: DatabaseManager) -> bool:
    async with db.read_session() as session:
        return bool(await session.scalar(sa.text(SSL_OF_THIS_BACKEND)))


async def select_one(session: AsyncSession) -> int:
    return int(await session.scalar(sa.text("SELECT 1")) or 0)


async def assert_refused_by_verification(db: DatabaseManager, reason: str) -> None:
    """Reads, writes and health all fail on the certificate check, at once (a bad
    certificate is not transient: no retry) and with the real reason."""
    with pytest.raises(ssl.SSLCertVerificationError) as read:
        await ssl_of_backend(db)
    with pytest.raises(ssl.SSLCertVerificationError) as write:
        await db.run_write(select_one)
    for error in (read.value, write.value):
        assert "certificate verify failed" in str(error)
        assert reason in str(error), str(error)
    health = await db.health()
    assert not health.ok
    assert health.latency_ms is None
    assert health.error == "SSLCertVerificationError"


def assert_no_session_started(log: str) -> None:
    """Nothing was authorized, and nothing was tried without encryption."""
    assert "connection received" in log, log  # the attempts did reach this server
    assert "connection authorized" not in log, log
    assert "no encryption" not in log, log


# ----------------------------------------------------------------- verify-full


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_verify_full_with_the_right_ca_connects_encrypted(tls: Tls, host: str) -> None:
    offset = tls.cluster.log_offset()
    async with manager(tls.cluster.url(host), "verify-full", tls.ca_file) as db:
        assert db.settings.ssl_mode is SSLMode.VERIFY_FULL
        assert await ssl_of_backend(db) is True
        assert await db.run_write(select_one) == 1
        health = await db.health()
        assert health.error is None
        assert health.latency_ms is not None
    log = tls.cluster.log_since(offset)
    assert "database=postgres application_name=migval SSL enabled (protocol=TLS" in log, log
    assert "no encryption" not in log, log


async def test_verify_full_with_a_wrong_ca_fails_without_plaintext(tls: Tls) -> None:
    offset = tls.cluster.log_offset()
    async with manager(tls.cluster.url(), "verify-full", tls.wrong_ca_file) as db:
        await assert_refused_by_verification(db, "unable to get local issuer certificate")
    assert_no_session_started(tls.cluster.log_since(offset))


@pytest.mark.usefixtures("other_name_certificate")
@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
        ("localhost", "Hostname mismatch, certificate is not valid for 'localhost'"),
    ],
)
async def test_verify_full_refuses_a_certificate_for_another_name(
    tls: Tls, host: str, reason: str
) -> None:
    offset = tls.cluster.log_offset()
    async with manager(tls.cluster.url(host), "verify-full", tls.ca_file) as db:
        await assert_refused_by_verification(db, reason)
    assert_no_session_started(tls.cluster.log_since(offset))
    # Same CA, server up: only the name is wrong. require does not check it.
    async with manager(tls.cluster.url(host), "require") as db:
        assert await ssl_of_backend(db) is True


# ----------------------------------------------------------- require, disable


async def test_require_connects_encrypted_without_verifying(tls: Tls) -> None:
    async with manager(tls.cluster.url(), "require") as db:
        assert db.settings.ssl_root_cert is None  # nothing to verify against
        assert await ssl_of_backend(db) is True
        assert await db.run_write(select_one) == 1


async def test_disable_is_refused_by_a_tls_only_server(tls: Tls) -> None:
    offset = tls.cluster.log_offset()
    async with manager(tls.cluster.url(), "disable") as db:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
            await ssl_of_backend(db)
        health = await db.health()
        assert not health.ok
        assert health.error == "InvalidAuthorizationSpecificationError"
    log = tls.cluster.log_since(offset)
    assert "no pg_hba.conf entry" in log, log
    assert "connection authorized" not in log, log


def test_migration_commands_verify_the_server_certificate(tls: Tls) -> None:
    result = run_cli(
        "db",
        "current",
        database_url=tls.cluster.url(),
        env={"SSL_MODE": "verify-full", "SSL_ROOT_CERT": tls.wrong_ca_file},
    )
    assert result.returncode == 1, result.stdout + result.stderr


# ------------------------------------------------- production rule (settings only)


def production(url: str, **env: str) -> dict[str, str]:
    return {"MIGVAL_ENV": "production", "DATABASE_URL": url, **env}


@pytest.fixture
def root_cert(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(make_ca("settings CA").cert_pem)
    return str(path)


@pytest.mark.parametrize("mode", ["disable", "require", "", "REQUIRE"])
@pytest.mark.parametrize(
    ("url", "extra", "shown"),
    [
        (REMOTE, {}, "db.example.com"),
        ("postgresql+asyncpg://u:p@10.0.0.5:5432/x", {}, "10.0.0.5"),
        ("postgresql+asyncpg://u@[2001:db8::1]:5432/x", {}, "2001:db8::1"),
        ("postgresql+asyncpg://u@db.internal/x", {}, "db.internal"),
        ("postgresql+asyncpg://u@localhost.example.com/x", {}, "localhost.example.com"),
        ("postgresql+asyncpg://u@/x?host=db.example.com", {}, "db.example.com"),
        (
            "postgresql+asyncpg://u@/x?host=127.0.0.1&host=db.example.com:5433",
            {},
            "db.example.com:5433",
        ),
        ("postgresql+asyncpg://u@/x", {"PGHOST": "db.example.com"}, "db.example.com"),
    ],
)
def test_production_refuses_weak_tls_to_a_remote_host(
    url: str, extra: Mapping[str, str], shown: str, mode: str
) -> None:
    env = production(url, SSL_MODE=mode, **extra)
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings.from_env(env)
    error = info.value
    assert error.field == "SSL_MODE"
    assert f"host {shown!r} is not loopback" in error.message
    assert f"is {(mode or 'disable').lower()!r}" in error.message
    for hint in (
        "MIGVAL_ENV=production",
        "SSL_MODE=verify-full",
        "SSL_ROOT_CERT",
        "MIGVAL_ALLOW_INSECURE_DB_TLS=1",
    ):
        assert hint in error.message
    assert "\n" not in str(error)


@pytest.mark.parametrize("mode", ["disable", "require"])
@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://u@127.0.0.1/x",
        "postgresql+asyncpg://u@127.0.0.1:6432/x",
        "postgresql+asyncpg://u@127.8.9.10/x",
        "postgresql+asyncpg://u@localhost/x",
        "postgresql+asyncpg://u@LOCALHOST:5432/x",
        "postgresql+asyncpg://u@[::1]:5432/x",
        "postgresql+asyncpg://u@/x?host=/var/run/postgresql",
        "postgresql+asyncpg://u@/x?host=localhost:5432&host=127.0.0.2",
        "postgresql+asyncpg://u@/x",  # no host: unix socket (or PGHOST, unset here)
        "sqlite+aiosqlite:///./prod.db",  # not PostgreSQL: no network at all
    ],
)
def test_production_allows_any_mode_on_loopback_and_sockets(url: str, mode: str) -> None:
    settings = DatabaseSettings.from_env(production(url, SSL_MODE=mode))
    assert settings.ssl_mode is SSLMode(mode)


def test_production_accepts_verify_full_to_a_remote_host(root_cert: str) -> None:
    settings = DatabaseSettings.from_env(
        production(REMOTE, SSL_MODE="verify-full", SSL_ROOT_CERT=root_cert)
    )
    assert (settings.ssl_mode, settings.ssl_root_cert) == (SSLMode.VERIFY_FULL, root_cert)


@pytest.mark.parametrize("flag", ["1", "true", "YES", "on"])
@pytest.mark.parametrize("mode", ["disable", "require"])
def test_the_override_allows_weak_tls_to_a_remote_host(flag: str, mode: str) -> None:
    env = production(REMOTE, SSL_MODE=mode, MIGVAL_ALLOW_INSECURE_DB_TLS=flag)
    assert DatabaseSettings.from_env(env).ssl_mode is SSLMode(mode)


@pytest.mark.parametrize("flag", ["0", "false", "off", ""])
def test_a_false_override_still_refuses(flag: str) -> None:
    env = production(REMOTE, SSL_MODE="require", MIGVAL_ALLOW_INSECURE_DB_TLS=flag)
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings.from_env(env)
    assert info.value.field == "SSL_MODE"


def test_a_malformed_override_names_its_variable() -> None:
    env = production(REMOTE, SSL_MODE="require", MIGVAL_ALLOW_INSECURE_DB_TLS="maybe")
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings.from_env(env)
    assert info.value.field == "MIGVAL_ALLOW_INSECURE_DB_TLS"


@pytest.mark.parametrize("mode_env", [{}, {"MIGVAL_ENV": ""}, {"MIGVAL_ENV": "development"}])
def test_development_allows_weak_tls_to_a_remote_host(mode_env: Mapping[str, str]) -> None:
    env = {"DATABASE_URL": REMOTE, "SSL_MODE": "require", **mode_env}
    assert DatabaseSettings.from_env(env).ssl_mode is SSLMode.REQUIRE


def test_the_mode_is_read_case_insensitively() -> None:
    env = production(REMOTE, SSL_MODE="require", MIGVAL_ENV=" Production ")
    with pytest.raises(ConfigurationError, match="not loopback"):
        DatabaseSettings.from_env(env)


def test_the_rule_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in production(REMOTE, SSL_MODE="require").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MIGVAL_ALLOW_INSECURE_DB_TLS", raising=False)
    monkeypatch.delenv("SSL_ROOT_CERT", raising=False)
    with pytest.raises(ConfigurationError, match="not loopback"):
        DatabaseSettings.from_env()
    monkeypatch.setenv("MIGVAL_ALLOW_INSECURE_DB_TLS", "1")
    assert DatabaseSettings.from_env().ssl_mode is SSLMode.REQUIRE


def test_serve_refuses_weak_tls_to_a_remote_database_in_production() -> None:
    result = run_cli(
        "serve",
        database_url=REMOTE,
        env={
            "MIGVAL_ENV": "production",
            "MIGVAL_ENCRYPTION_KEYS": generate_key(),  # what `migval keys generate` prints
            "SSL_MODE": "require",
            "SSL_ROOT_CERT": "",
        },
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    prefix = "migval: error: configuration error: SSL_MODE: is 'require' but MIGVAL_ENV"
    assert lines[0].startswith(prefix), lines
    assert "'db.example.com' is not loopback" in lines[0]
    assert "MIGVAL_ALLOW_INSECURE_DB_TLS=1" in lines[0]
