"""API tokens: issue, list, revoke, and check a presented token.

A token is ``mvt_`` followed by ``secrets.token_urlsafe(32)`` (32 random bytes, 256
bits, as 43 base64url characters). Only its SHA-256 (hex) and its first
``PREFIX_LENGTH`` characters (for listings) are stored; the text is shown once, when
it is created. Every check reads the row again, so an expiry or a revocation takes
effect on the very next request.
"""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.audit import AuditOperation, EntityType, audit_entry, snapshot
from persistence.database import DatabaseManager
from persistence.enums import Role
from persistence.errors import Conflict, MigvalError, NotFound, ValidationFailed
from persistence.models import ApiToken
from persistence.repositories.audit import AuditRepository
from persistence.repositories.tokens import TokenRepository
from persistence.validation import coerce_enum

TOKEN_PREFIX = "mvt_"  # noqa: S105 - a public marker, not a secret
PREFIX_LENGTH = 12
TOKEN_PATTERN = re.compile(r"^mvt_[A-Za-z0-9_-]{43}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,99}$")
NAME_RULE = "1-100 characters: letters, digits and . _ @ : + - (starting with a letter or digit)"
# last_used_at is written at most once per interval per token.
TOUCH_INTERVAL = timedelta(minutes=1)


class Refusal(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


_REFUSAL_MESSAGES = {
    Refusal.MALFORMED: "malformed token",
    Refusal.UNKNOWN: "invalid token",
    Refusal.EXPIRED: "token expired",
    Refusal.REVOKED: "token revoked",
}


class TokenRefused(MigvalError):
    """A presented token cannot be used (malformed, unknown, expired or revoked)."""

    code = "UNAUTHENTICATED"

    def __init__(self, reason: Refusal) -> None:
        super().__init__(None, _REFUSAL_MESSAGES[reason])
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # the only time the text exists outside the caller's hands
    row: ApiToken


@dataclass(frozen=True, slots=True)
class RevokeOutcome:
    row: ApiToken
    already_revoked: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def create(
        self, name: str, role: Role | str, expires_in: timedelta | None = None
    ) -> IssuedToken:
        """Issue a token; a duplicate name is a Conflict."""
        check_name(name)
        checked_role = coerce_enum(Role, role, "role")
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValidationFailed("expires_in", "must be positive")
        token = generate_token()
        now = datetime.now(UTC)
        values = {
            "name": name,
            "role": checked_role,
            "token_prefix": token[:PREFIX_LENGTH],
            "token_hash": hash_token(token),
            "expires_at": None if expires_in is None else now + expires_in,
        }

        async def work(session: AsyncSession) -> ApiToken:
            repo = TokenRepository(session)
            if await repo.get_by_name(name) is not None:
                raise Conflict("name", f"a token named {name!r} already exists")
            row = await repo.insert(values)
            after = snapshot(row, only=_AUDITED_FIELDS)
            await _audit(session, AuditOperation.CREATE_API_TOKEN, row, after=after)
            return row

        try:
            row = await self.db.run_write(work)
        except exc.IntegrityError:  # a concurrent create with the same name won
            raise Conflict("name", f"a token named {name!r} already exists") from None
        return IssuedToken(token=token, row=row)

    async def list_all(self) -> list[ApiToken]:
        async with self.db.read_session() as session:
            return await TokenRepository(session).list_all()

    async def revoke(self, name: str) -> RevokeOutcome:
        """Revoke by name; revoking twice keeps the first revocation time."""

        async def work(session: AsyncSession) -> RevokeOutcome:
            repo = TokenRepository(session)
            revoked = await repo.revoke(name, datetime.now(UTC))
            if revoked is not None:
                await _audit(
                    session,
                    AuditOperation.REVOKE_API_TOKEN,
                    revoked,
                    before={"revoked_at": None},
                    after={"revoked_at": revoked.revoked_at},
                )
                return RevokeOutcome(revoked, already_revoked=False)
            existing = await repo.get_by_name(name)
            if existing is None:
                raise NotFound("name", f"no token named {name!r}")
            return RevokeOutcome(existing, already_revoked=True)

        return await self.db.run_write(work)

    async def authenticate(self, token: str, now: datetime | None = None) -> ApiToken:
        """The token's row if it may be used now; TokenRefused otherwise. One indexed
        read by hash (no comparison of secrets in Python, so nothing to time)."""
        if not TOKEN_PATTERN.match(token):
            raise TokenRefused(Refusal.MALFORMED)
        async with self.db.read_session() as session:
            row = await TokenRepository(session).get_by_hash(hash_token(token))
        if row is None:
            raise TokenRefused(Refusal.UNKNOWN)
        if row.revoked_at is not None:
            raise TokenRefused(Refusal.REVOKED)
        if row.expires_at is not None and row.expires_at <= (now or datetime.now(UTC)):
            raise TokenRefused(Refusal.EXPIRED)
        return row

    async def record_use(self, token: ApiToken, now: datetime | None = None) -> bool:
        """Set last_used_at, at most once per TOUCH_INTERVAL; True if written."""
        at = now or datetime.now(UTC)
        if token.id is None or not needs_touch(token, at):
            return False

        async def work(session: AsyncSession) -> bool:
            return await TokenRepository(session).touch(token.id or 0, at, at - TOUCH_INTERVAL)

        return await self.db.run_write(work)


# What an entry shows of a token: never its hash or prefix (they identify the secret).
_AUDITED_FIELDS = ("name", "role", "expires_at", "revoked_at")


async def _audit(
    session: AsyncSession,
    operation: AuditOperation,
    row: ApiToken,
    before: Any = None,
    after: Any = None,
) -> None:
    """One audit entry in the change's transaction (ADR 0004); recording a use
    (``record_use``) writes none: it is bookkeeping, not a change of who may do what."""
    entry = audit_entry(operation, EntityType.API_TOKEN, row.id, before=before, after=after)
    await AuditRepository(session).append(entry)


def needs_touch(token: ApiToken, now: datetime) -> bool:
    return token.last_used_at is None or token.last_used_at < now - TOUCH_INTERVAL


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValidationFailed("name", f"must be {NAME_RULE}, got {name!r}")
    return name
