"""Idempotency keys: a write retried with the same key is done once.

A client may send an idempotency key with any write mutation. The first request
with that key does the write and, **in the same transaction**, records the key with
a hash of the request and the ids of the object(s) its response returns. A later
request with the same key (by the same actor, before the key expires):

- with the same operation and input: writes nothing (no data change, no audit entry)
  and returns the recorded object(s), read again as they are now (``replayed``);
- with another input or operation: raises ``IdempotencyMismatch``, writes nothing.

Because the key commits atomically with the write, a key exists exactly when its write
was committed: a rolled-back write leaves no key, and only successful outcomes are
stored (a request refused with a user error stores no key, so a corrected retry with
the same key is a new request). That is what makes a retry after
``COMMIT_OUTCOME_UNKNOWN`` safe (docs/decisions/0003-in-memory-fallback-replaced.md).

Concurrent duplicates: the claim is ``INSERT ... ON CONFLICT (scope, key) DO
NOTHING`` as the first statement of the write. On PostgreSQL a duplicate waits on the
unique index until the first transaction ends, then sees its committed row (or, if it
rolled back, claims the key itself); on SQLite ``BEGIN IMMEDIATE`` serialises writers.

Keys are scoped per actor (``scope_of``) and expire after
``MIGVAL_IDEMPOTENCY_TTL_HOURS`` (default 24): an expired key is ignored (the request
is new) and ``purge_expired_idempotency_keys`` deletes them.

Services take ``idempotency: IdempotencyRequest | None`` and run through
``run_idempotent``; without a request the write is exactly what it was (not one
extra statement).
"""

import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.actor import Actor
from persistence.audit import json_safe
from persistence.database import DatabaseManager
from persistence.errors import (
    ConfigurationError,
    Conflict,
    IdempotencyMismatch,
    NotFound,
    ValidationFailed,
)
from persistence.repositories.idempotency import IdempotencyKeyRepository, StoredKey
from persistence.settings import env_int

T = TypeVar("T")
R = TypeVar("R")

ENV_TTL_HOURS = "MIGVAL_IDEMPOTENCY_TTL_HOURS"
DEFAULT_TTL_HOURS = 24
MAX_TTL_HOURS = 24 * 366
MAX_KEY_LENGTH = 200
FIELD = "idempotency_key"
# Claim attempts: an expired key deleted by a concurrent request, or purged between
# our INSERT and SELECT, sends the claim round again (each round makes progress).
_CLAIM_ATTEMPTS = 5


def idempotency_ttl(env: Mapping[str, str] | None = None) -> timedelta:
    """MIGVAL_IDEMPOTENCY_TTL_HOURS (whole hours, default 24); ConfigurationError
    naming it when malformed."""
    hours = env_int(os.environ if env is None else env, ENV_TTL_HOURS, DEFAULT_TTL_HOURS)
    if not 1 <= hours <= MAX_TTL_HOURS:
        raise ConfigurationError(
            ENV_TTL_HOURS, f"must be between 1 and {MAX_TTL_HOURS} hours, got {hours}"
        )
    return timedelta(hours=hours)


def scope_of(actor: Actor) -> str:
    """Whose keys these are: one API token's (``token:<id>``), or the anonymous
    clients' (``anonymous``); other token-less actors (CLI, maintenance) by name."""
    if actor.token_id is not None:
        return f"token:{actor.token_id}"
    if actor.role is None or actor.name == "anonymous":
        return "anonymous"
    return f"actor:{actor.name}"


def request_hash(operation: str, payload: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of the operation and its input: sorted
    keys, no whitespace, UTF-8; datetimes, enums and decimals as in the audit log."""
    canonical = json.dumps(
        {"operation": operation, "input": json_safe(payload)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # surrogatepass: a lone surrogate in a string value hashes rather than crashes.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class IdempotencyRequest:
    """One keyed request. Build it with ``for_input``; pass it to a service call.

    ``replayed`` is set by the call that used it: True when the outcome of an earlier
    request with this key was returned and nothing was written."""

    scope: str
    key: str
    operation: str
    request_hash: str
    ttl: timedelta = field(default_factory=idempotency_ttl)
    replayed: bool = field(default=False, init=False)

    @classmethod
    def for_input(
        cls,
        actor: Actor,
        key: str,
        operation: str,
        payload: Any,
        *,
        ttl: timedelta | None = None,
    ) -> "IdempotencyRequest":
        """The request of ``actor`` for ``operation`` with ``payload`` (the input
        without the key). The key is checked when the request is used."""
        return cls(
            scope=scope_of(actor),
            key=key,
            operation=operation,
            request_hash=request_hash(operation, payload),
            ttl=idempotency_ttl() if ttl is None else ttl,
        )

    def check(self) -> None:
        """ValidationFailed unless the key is 1..MAX_KEY_LENGTH characters of text the
        database can store."""
        if not 1 <= len(self.key) <= MAX_KEY_LENGTH:
            raise ValidationFailed(
                FIELD, f"must be 1 to {MAX_KEY_LENGTH} characters, got {len(self.key)}"
            )
        if "\x00" in self.key:
            raise ValidationFailed(FIELD, "must not contain NUL characters")
        try:
            self.key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed(FIELD, "must be valid Unicode text") from None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a response returned, as stored with its key: the payload's shape (a name
    the service chooses, e.g. ``session.created``) and the ids of its object(s)."""

    result_type: str
    result_ids: tuple[int, ...]

    @classmethod
    def of(cls, result_type: str, ids: Sequence[int | None]) -> "Outcome":
        return cls(result_type, tuple(i for i in ids if i is not None))


async def run_idempotent(
    db: DatabaseManager,
    request: IdempotencyRequest | None,
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    outcome: Callable[[T], Outcome],
    replay: Callable[[AsyncSession, Outcome], Awaitable[T]],
) -> T:
    """``db.run_write(work)``, guarded by ``request`` when there is one.

    ``outcome`` says what to store of ``work``'s value; ``replay`` rebuilds that value
    from a stored outcome (reading the objects as they are now, writing nothing)."""
    if request is None:
        return await db.run_write(work)
    request.check()
    replayed = False

    async def guarded(session: AsyncSession) -> T:
        nonlocal replayed
        repo = IdempotencyKeyRepository(session)
        claimed = await _claim(repo, request)
        if isinstance(claimed, StoredKey):
            replayed = True
            stored = Outcome(claimed.result_type or "", tuple(claimed.result_ids or ()))
            return await replay(session, stored)
        replayed = False
        value = await work(session)
        done = outcome(value)
        await repo.complete(claimed, done.result_type, done.result_ids)
        return value

    value = await db.run_write(guarded)
    request.replayed = replayed
    return value


async def _claim(repo: IdempotencyKeyRepository, request: IdempotencyRequest) -> int | StoredKey:
    """The new key row's id (this request does the write), or the stored key whose
    outcome it replays. Raises IdempotencyMismatch for another request's key."""
    for _ in range(_CLAIM_ATTEMPTS):
        now = datetime.now(UTC)
        key_id = await repo.insert_if_absent(
            request.scope,
            request.key,
            request.operation,
            request.request_hash,
            now + request.ttl,
        )
        if key_id is not None:
            return key_id
        stored = await repo.get(request.scope, request.key)
        if stored is None:  # purged between the two statements
            continue
        if stored.expires_at <= now:  # ignored: forget it and claim the key afresh
            await repo.delete(stored.id)
            continue
        if stored.operation != request.operation:
            raise IdempotencyMismatch(
                FIELD, f"was already used for {stored.operation}; use a new key for a new request"
            )
        if stored.request_hash != request.request_hash:
            raise IdempotencyMismatch(
                FIELD, "was already used with a different input; use a new key for a new request"
            )
        if stored.result_type is None or stored.result_ids is None:  # pragma: no cover
            raise Conflict(FIELD, "has no recorded outcome; use a new key")
        return stored
    raise Conflict(FIELD, "is being claimed concurrently; retry")


def replayed_row(row: R | None) -> R:
    """The re-read object of a replay; NotFound when it was deleted since."""
    if row is None:
        raise NotFound(FIELD, "the object returned by the request with this key no longer exists")
    return row


async def purge_expired_idempotency_keys(db: DatabaseManager, now: datetime | None = None) -> int:
    """Delete the expired keys (they are already ignored); returns how many. One
    transaction; for the maintenance job."""
    cutoff = now or datetime.now(UTC)

    async def work(session: AsyncSession) -> int:
        return await IdempotencyKeyRepository(session).purge_expired(cutoff)

    return await db.run_write(work)


__all__ = [
    "DEFAULT_TTL_HOURS",
    "ENV_TTL_HOURS",
    "MAX_KEY_LENGTH",
    "IdempotencyRequest",
    "Outcome",
    "idempotency_ttl",
    "purge_expired_idempotency_keys",
    "replayed_row",
    "request_hash",
    "run_idempotent",
    "scope_of",
]
