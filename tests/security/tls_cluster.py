"""A throw-away PostgreSQL cluster that accepts TLS connections only, and the
certificates it needs (for tests/security/test_db_tls.py).

- ``make_ca(name)`` / ``make_server_cert(ca, cn, dns=..., ips=...)`` build an EC P-256
  CA and a server certificate it signs (cryptography, no openssl CLI).
- ``start_tls_cluster(server)`` runs initdb (as the ``postgres`` user when running as
  root, like tests/conftest.py), turns ``ssl`` on with ``server``'s certificate and
  key, writes a pg_hba.conf whose only line is ``hostssl all all 127.0.0.1/32 trust``
  (so plaintext connections are refused), and starts the server on a free port of
  127.0.0.1 with ``log_connections``. Raises ``tests.conftest.ClusterUnavailable`` when the binaries
  or the postgres user are missing (the caller skips or, under CI, fails); any other
  failure is an error.
- ``TlsCluster.use_certificate(...)`` swaps the server's certificate and reloads;
  ``presented_certificate()`` reads what the server presents now;
  ``log_since(offset)`` reads the server log; ``stop()`` stops it and removes its
  directory (a new temporary one: pytest's own are not reachable by ``postgres``).
"""

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import _free_port, new_cluster

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest packet


# ------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "migval tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def make_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_server_cert(
    ca: Issued, common_name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        _builder(common_name, ca.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


# ------------------------------------------------------------------------ cluster


@dataclass
class TlsCluster:
    base: Path
    port: int
    pg_ctl: str
    run_as: list[str]
    owner: int | None
    cert_file: Path
    key_file: Path
    stopped: bool = field(default=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, host: str = "127.0.0.1") -> str:
        return f"postgresql+asyncpg://postgres@{host}:{self.port}/postgres"

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def install_certificate(self, server: Issued) -> None:
        """Write the certificate and key files (key 0600, owned by the server user)."""
        self.cert_file.write_bytes(server.cert_pem)
        self.key_file.write_bytes(server.key_pem)
        self.key_file.chmod(0o600)
        if self.owner is not None:
            os.chown(self.cert_file, self.owner, -1)
            os.chown(self.key_file, self.owner, -1)

    def use_certificate(self, server: Issued, timeout_s: float = 10.0) -> None:
        """Swap the server's certificate and reload; returns once new connections get it."""
        self.install_certificate(server)
        self._pg_ctl("reload")
        deadline = time.monotonic() + timeout_s
        while self.presented_certificate() != server.der:
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not pick up the new certificate: {self.log}")
            time.sleep(0.05)

    def presented_certificate(self) -> bytes:
        """DER of the certificate a new connection gets (TLS handshake, unverified)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(_SSL_REQUEST)
            if sock.recv(1) != b"S":
                raise AssertionError("server refused the SSLRequest")
            with ctx.wrap_socket(sock) as tls:
                der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self._pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*self.run_as, self.pg_ctl, "-D", str(self.data), "-w", *args],
            check=check,
            capture_output=True,
            timeout=60,
        )


def start_tls_cluster(server: Issued) -> TlsCluster:
    """initdb + ssl=on + hostssl-only pg_hba + pg_ctl start, in a new temporary directory
    (``server``: the certificate and key the server presents)."""
    made = new_cluster("migval-tls-")
    base, run_as = made.base, made.run_as
    cluster = TlsCluster(
        base,
        _free_port(),
        made.pg_ctl,
        run_as,
        made.owner,
        base / "server.crt",
        base / "server.key",
    )
    try:
        cluster.install_certificate(server)
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {cluster.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base}'\n"
                "log_connections = on\n"
                "ssl = on\n"
                f"ssl_cert_file = '{cluster.cert_file}'\n"
                f"ssl_key_file = '{cluster.key_file}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        # The only line: TLS over 127.0.0.1. No `host` (plaintext) and no `local` line.
        (cluster.data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                *run_as,
                cluster.pg_ctl,
                "-D",
                str(cluster.data),
                "-l",
                str(cluster.log),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = (getattr(error, "stderr", b"") or b"").decode(errors="replace")
        log = cluster.log.read_text(errors="replace") if cluster.log.exists() else ""
        cluster.stopped = True  # not running (or half-started: pg_ctl stop is harmless)
        cluster._pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"TLS cluster failed to start: {error}\n{detail}\n{log}") from error
    return cluster
