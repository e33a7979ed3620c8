"""Field encryption at rest for the JSON columns that can carry secrets.

Sealed columns (see ``SEALED_TABLES``):

- ``validation_sessions``: source_metadata, target_metadata, source_urls, target_urls,
  bound to the row's immutable natural key ``request_id`` (sessions are inserted with
  INSERT ... ON CONFLICT, so their id is not known before the write);
- ``behavioral_test_results``: interaction_log, bound to the row ``id`` (the row is
  inserted without it, then updated with the ciphertext in the same transaction).

A sealed value is AES-256-GCM over the value's JSON text with a random 96-bit nonce,
stored in the same JSON/JSONB column as an envelope::

    {"$enc": "v1", "kid": "<key id>", "n": "<base64 nonce>", "ct": "<base64 ciphertext+tag>"}

The associated data binds table, column and row, so a ciphertext copied to another
row or column, or altered in any way, fails to decrypt (``DecryptionError``) instead of
returning someone else's secret. SQL NULL stays NULL (not encrypted).

Keys come from MIGVAL_ENCRYPTION_KEYS: comma-separated base64url 32-byte keys, each
optionally ``kid:key``; the FIRST encrypts, ALL decrypt (rotation: put the new key
first, run ``migval keys rotate``, then drop the old ones). Without keys, development
stores plaintext (with one warning); MIGVAL_ENV=production refuses to start.

Writes are sealed by the repositories (``SESSIONS.seal_values`` /
``BEHAVIORAL_TESTS.seal``); reads are opened transparently by ORM ``load``/``refresh``
listeners registered below, so every ORM object a repository returns (including
INSERT/UPDATE ... RETURNING) carries plaintext.
"""

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import event
from sqlalchemy.orm import QueryContext
from sqlalchemy.orm.attributes import instance_dict, set_committed_value
from sqlmodel import SQLModel

from persistence.driver_reads import row_type
from persistence.errors import ConfigurationError, ValidationFailed
from persistence.models import BehavioralTestResult, ValidationSession
from persistence.records import Record

log = logging.getLogger(__name__)

ENV_KEYS: Final = "MIGVAL_ENCRYPTION_KEYS"
ENV_MODE: Final = "MIGVAL_ENV"
PRODUCTION: Final = "production"
# The same modes (and the same parsing) as the server settings (graph/settings.py).
MODES: Final = ("development", PRODUCTION)

MARKER: Final = "$enc"
VERSION: Final = "v1"
ENVELOPE_KEYS: Final = frozenset({MARKER, "kid", "n", "ct"})
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16

KID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class DecryptionError(Exception):
    """A stored sealed value cannot be opened: tampered, copied from another row or
    column, malformed, or sealed under a key that is not configured.

    Deliberately not a MigvalError: it is a server-side integrity or configuration
    fault, never the caller's input, so the API masks it as an internal error (and
    logs it). The message names table, column and row, never key material or data.
    """


# ----------------------------------------------------------------------------- keys


def generate_key() -> str:
    """A new random 256-bit key, base64url without padding (for MIGVAL_ENCRYPTION_KEYS)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def default_kid(key: bytes) -> str:
    """The key id of a key given without one: a fingerprint, stable wherever the key
    sits in the list (reveals nothing usable about the key)."""
    return hashlib.sha256(b"migval-kid:" + key).hexdigest()[:12]


class KeyRing:
    """Ordered AES-256-GCM keys: the first seals, every one opens (by key id)."""

    __slots__ = ("_aeads", "_kids")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigurationError(ENV_KEYS, "must contain at least one key")
        aeads: dict[str, AESGCM] = {}
        seen: dict[bytes, str] = {}
        for kid, key in keys:
            if not KID_PATTERN.fullmatch(kid):
                raise ConfigurationError(
                    ENV_KEYS,
                    f"key id {kid!r} must be 1-32 characters of A-Z a-z 0-9 . _ - "
                    "(starting with a letter or digit)",
                )
            if len(key) != KEY_BYTES:
                raise ConfigurationError(
                    ENV_KEYS, f"key {kid!r} must be {KEY_BYTES} bytes, got {len(key)}"
                )
            if kid in aeads:
                raise ConfigurationError(ENV_KEYS, f"key id {kid!r} appears twice")
            if key in seen:
                raise ConfigurationError(ENV_KEYS, f"key {kid!r} is the same key as {seen[key]!r}")
            seen[key] = kid
            aeads[kid] = AESGCM(key)
        self._aeads = aeads
        self._kids = tuple(aeads)

    @classmethod
    def parse(cls, raw: str) -> "KeyRing":
        """Parse a MIGVAL_ENCRYPTION_KEYS value; ConfigurationError (naming the entry,
        never echoing key material) when malformed."""
        keys: list[tuple[str, bytes]] = []
        for position, entry in enumerate(raw.split(","), start=1):
            item = entry.strip()
            if not item:
                raise ConfigurationError(ENV_KEYS, f"entry {position} is empty")
            kid: str | None = None
            encoded = item
            if ":" in item:
                kid, encoded = (part.strip() for part in item.split(":", 1))
            key = _decode_key(encoded, position)
            keys.append((kid if kid is not None else default_kid(key), key))
        return cls(keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "KeyRing | None":
        """The key ring MIGVAL_ENCRYPTION_KEYS describes (``env`` defaults to
        ``os.environ``), or None when it is unset outside production (plaintext, with
        one warning). Raises ConfigurationError when production has no keys, a key
        is malformed, or MIGVAL_ENV is neither development nor production."""
        e = os.environ if env is None else env
        raw_mode = e.get(ENV_MODE) or ""
        mode = raw_mode.strip().lower() or "development"
        if mode not in MODES:
            allowed = ", ".join(MODES)
            raise ConfigurationError(ENV_MODE, f"must be one of {allowed}, got {raw_mode!r}")
        raw = (e.get(ENV_KEYS) or "").strip()
        if not raw:
            if mode == PRODUCTION:
                raise ConfigurationError(
                    ENV_KEYS,
                    "is required when MIGVAL_ENV=production (secret fields are encrypted "
                    "at rest); generate a key with `migval keys generate`",
                )
            _warn_plaintext_once()
            return None
        return cls.parse(raw)

    @property
    def primary_kid(self) -> str:
        """The key id new values are sealed with (the first key)."""
        return self._kids[0]

    @property
    def kids(self) -> tuple[str, ...]:
        return self._kids

    def __repr__(self) -> str:  # never key material
        return f"KeyRing(kids={list(self._kids)!r})"

    def seal(self, value: Any, aad: bytes) -> dict[str, str]:
        """Encrypt ``value`` (JSON-serialisable) under the first key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        # ASCII JSON: a lone surrogate in a string cannot break the UTF-8 encoding.
        data = json.dumps(value, separators=(",", ":"), allow_nan=False)
        ct = self._aeads[self.primary_kid].encrypt(nonce, data.encode(), aad)
        return {MARKER: VERSION, "kid": self.primary_kid, "n": _b64(nonce), "ct": _b64(ct)}

    def open(self, envelope: Mapping[str, Any], aad: bytes, where: str) -> Any:
        """Decrypt an envelope; DecryptionError (naming ``where``) on any failure."""
        if set(envelope) != ENVELOPE_KEYS or envelope[MARKER] != VERSION:
            raise DecryptionError(f"{where}: not a {VERSION} encrypted value (malformed envelope)")
        kid, nonce_b64, ct_b64 = envelope["kid"], envelope["n"], envelope["ct"]
        if not all(isinstance(v, str) for v in (kid, nonce_b64, ct_b64)):
            raise DecryptionError(f"{where}: malformed envelope (kid, n and ct must be strings)")
        aead = self._aeads.get(kid)
        if aead is None:
            raise DecryptionError(
                f"{where}: sealed with key id {kid!r}, which is not in {ENV_KEYS} "
                f"(configured: {', '.join(self._kids)})"
            )
        nonce, ct = _unb64(nonce_b64), _unb64(ct_b64)
        if nonce is None or len(nonce) != NONCE_BYTES or ct is None or len(ct) < TAG_BYTES:
            raise DecryptionError(f"{where}: malformed envelope (bad nonce or ciphertext)")
        try:
            data = aead.decrypt(nonce, ct, aad)
        except InvalidTag:
            raise DecryptionError(
                f"{where}: authentication failed under key {kid!r}: the value was altered, "
                "copied from another row or column, or sealed with a different key "
                "under the same key id"
            ) from None
        return json.loads(data)


def _decode_key(encoded: str, position: int) -> bytes:
    hint = "generate one with `migval keys generate`"
    if not _B64URL.fullmatch(encoded):
        raise ConfigurationError(
            ENV_KEYS, f"entry {position}: key is not base64url (A-Z a-z 0-9 - _); {hint}"
        )
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            ENV_KEYS, f"entry {position}: key is not valid base64url; {hint}"
        ) from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(
            ENV_KEYS,
            f"entry {position}: key must decode to {KEY_BYTES} bytes, got {len(key)}; {hint}",
        )
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# ------------------------------------------------------------ the process key ring

_UNSET: Final = object()
_active: object = _UNSET  # KeyRing | None once configured
_warned_plaintext = False


def configure_encryption(keyring: KeyRing | None) -> None:
    """Set the process-wide key ring repositories seal with and loads open with
    (None: development plaintext). Call once at startup with ``KeyRing.from_env()``;
    if never called, the first use reads MIGVAL_ENCRYPTION_KEYS from the environment."""
    global _active  # noqa: PLW0603 - one process-wide setting, set at startup
    _active = keyring
    if keyring is None:
        _warn_plaintext_once()


def current_keyring() -> KeyRing | None:
    """The configured key ring (resolved from the environment on first use if
    ``configure_encryption`` was never called)."""
    global _active  # noqa: PLW0603 - lazy resolution of the process-wide setting
    if _active is _UNSET:
        _active = KeyRing.from_env()
    return _active if isinstance(_active, KeyRing) else None


def _warn_plaintext_once() -> None:
    global _warned_plaintext  # noqa: PLW0603 - log once per process
    if not _warned_plaintext:
        _warned_plaintext = True
        log.warning(
            "%s is not set: secret fields (session URLs/metadata, interaction logs) are "
            "stored in PLAINTEXT (development mode). Set it before storing real data; "
            "MIGVAL_ENV=production refuses to start without it.",
            ENV_KEYS,
        )


# --------------------------------------------------------------- sealed columns


def is_envelope(value: Any) -> bool:
    """Whether a stored JSON value is a sealed envelope (a dict with the marker)."""
    return isinstance(value, dict) and MARKER in value


def check_sealable(value: Any, field: str) -> None:
    """ValidationFailed (naming ``field``) for an input that would read back as an
    envelope: a top-level ``$enc`` key is reserved, with or without keys configured."""
    if is_envelope(value):
        raise ValidationFailed(
            field, f"a top-level {MARKER!r} key is reserved (encryption envelope)"
        )


def associated_data(table: str, column: str, key_name: str, row_key: str | int) -> bytes:
    """The AEAD associated data: an unambiguous JSON array naming the exact cell."""
    parts = ["migval", VERSION, table, column, key_name, str(row_key)]
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class SealedTable:
    """A table with sealed JSON columns, and the column whose value binds each row."""

    model: type[SQLModel]
    table: str
    row_key: str
    columns: tuple[str, ...]

    def where(self, column: str, row_key: str | int | None) -> str:
        return f"{self.table}.{column} ({self.row_key}={row_key!r})"

    def seal(
        self,
        column: str,
        row_key: str | int,
        value: Any,
        keyring: KeyRing | None = None,
        *,
        field: str | None = None,
    ) -> Any:
        """The stored form of ``value`` for this cell: an envelope under the first
        key, or ``value`` itself without keys (development) or when it is None.
        ``keyring`` defaults to the process key ring; ``field`` names the input in
        the ValidationFailed raised for a value that would read as an envelope."""
        if value is None:
            return None
        check_sealable(value, field or column)
        ring = keyring if keyring is not None else current_keyring()
        if ring is None:
            _warn_plaintext_once()
            return value
        return ring.seal(value, associated_data(self.table, column, self.row_key, row_key))

    def seal_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of an INSERT's values with the sealed columns sealed (the row key
        must be among the values)."""
        row_key = values[self.row_key]
        out = dict(values)
        for column in self.columns:
            if column in out:
                out[column] = self.seal(column, row_key, out[column])
        return out

    def open(
        self, column: str, row_key: str | int | None, value: Any, keyring: KeyRing | None = None
    ) -> Any:
        """The plaintext of a stored value (plaintext and NULL pass through)."""
        if not is_envelope(value):
            return value
        where = self.where(column, row_key)
        if row_key is None:
            raise DecryptionError(f"{where}: cannot open without the row's {self.row_key}")
        ring = keyring if keyring is not None else current_keyring()
        if ring is None:
            raise DecryptionError(f"{where}: the value is encrypted but {ENV_KEYS} is not set")
        return ring.open(value, associated_data(self.table, column, self.row_key, row_key), where)

    def open_row(self, row: Record) -> Record:
        """A Core row with its sealed cells as plaintext (the row itself when none is
        sealed: rows written without keys, or NULLs)."""
        if not any(is_envelope(getattr(row, column)) for column in self.columns):
            return row
        values = dict(row._mapping)
        for column in self.columns:
            values[column] = self.open(column, values.get(self.row_key), values[column])
        opened: Record = row_type(tuple(values))(values.values())  # same columns, same order
        return opened

    def open_instance(self, target: Any, attrs: Iterable[str] | None = None) -> None:
        """Replace loaded envelopes on an ORM instance by their plaintext, as committed
        state (the object is not dirtied)."""
        state = instance_dict(target)
        names = self.columns if attrs is None else [c for c in self.columns if c in attrs]
        for column in names:
            value = state.get(column)
            if is_envelope(value):
                plain = self.open(column, state.get(self.row_key), value)
                set_committed_value(target, column, plain)


SESSIONS: Final = SealedTable(
    ValidationSession,
    "validation_sessions",
    "request_id",
    ("source_metadata", "target_metadata", "source_urls", "target_urls"),
)
BEHAVIORAL_TESTS: Final = SealedTable(
    BehavioralTestResult, "behavioral_test_results", "id", ("interaction_log",)
)
SEALED_TABLES: Final = (SESSIONS, BEHAVIORAL_TESTS)


def _register(spec: SealedTable) -> None:
    def on_load(target: Any, _context: QueryContext) -> None:
        spec.open_instance(target)

    def on_refresh(target: Any, _context: QueryContext, attrs: Iterable[str] | None) -> None:
        spec.open_instance(target, None if attrs is None else set(attrs))

    event.listen(spec.model, "load", on_load)
    event.listen(spec.model, "refresh", on_refresh)


for _spec in SEALED_TABLES:
    _register(_spec)

__all__ = [
    "BEHAVIORAL_TESTS",
    "SEALED_TABLES",
    "SESSIONS",
    "DecryptionError",
    "KeyRing",
    "SealedTable",
    "check_sealable",
    "configure_encryption",
    "current_keyring",
    "generate_key",
]
