"""Key rotation: re-seal every sealed value under the first key of the key ring.

Resumable by construction: each table is walked in id order, ``batch_size`` rows per
transaction (rows locked FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE locks the
database). Values already under the first key are skipped, so a run that was
interrupted (or one that finished) can simply be run again: it commits what it has
done batch by batch and only rewrites what is left. Plaintext values (written while
no key was configured) are sealed too. A value that cannot be opened stops the run
with DecryptionError naming its table, column and row; the batches before it stay
committed.

Processes still running with an older key order keep sealing under their first key:
deploy the new MIGVAL_ENCRYPTION_KEYS (new key first) everywhere before rotating.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.crypto import (
    BEHAVIORAL_TESTS,
    SESSIONS,
    KeyRing,
    SealedTable,
    is_envelope,
)
from persistence.database import DatabaseManager
from persistence.errors import ValidationFailed
from persistence.repositories import BehavioralTestRepository, SessionRepository

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000


class _SealedRepository(Protocol):
    async def sealed_batch(self, after_id: int, limit: int) -> Sequence[sa.Row[Any]]: ...

    async def write_sealed(self, row_id: int, values: dict[str, Any]) -> None: ...


_REPOSITORIES: dict[str, Callable[[AsyncSession], _SealedRepository]] = {
    SESSIONS.table: SessionRepository,
    BEHAVIORAL_TESTS.table: BehavioralTestRepository,
}


@dataclass(slots=True)
class RotationCounts:
    """What a rotation did to one table (or one batch of it)."""

    table: str
    rows: int = 0
    resealed: int = 0  # sealed under another key, now under the first
    sealed_plaintext: int = 0  # stored in plaintext, now sealed
    current: int = 0  # already under the first key: untouched
    null: int = 0  # SQL NULL: nothing to seal
    last_id: int = 0

    @property
    def rewritten(self) -> int:
        return self.resealed + self.sealed_plaintext

    def add(self, other: "RotationCounts") -> None:
        self.rows += other.rows
        self.resealed += other.resealed
        self.sealed_plaintext += other.sealed_plaintext
        self.current += other.current
        self.null += other.null
        self.last_id = max(self.last_id, other.last_id)


Progress = Callable[[RotationCounts], None]


async def rotate_keys(
    db: DatabaseManager,
    keyring: KeyRing,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    tables: Sequence[SealedTable] = (SESSIONS, BEHAVIORAL_TESTS),
) -> list[RotationCounts]:
    """Re-seal every sealed value not under ``keyring.primary_kid``; returns the
    totals per table. ``progress`` receives each committed batch's counts."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationFailed("batch_size", f"must be between 1 and {MAX_BATCH_SIZE}")
    totals = []
    for spec in tables:
        total = RotationCounts(spec.table)
        while True:
            batch = await db.run_write(_batch_work(spec, keyring, total.last_id, batch_size))
            if batch.rows == 0:
                break
            total.add(batch)
            if progress is not None:
                progress(batch)
            if batch.rows < batch_size:
                break
        totals.append(total)
    return totals


def _batch_work(
    spec: SealedTable, keyring: KeyRing, after_id: int, limit: int
) -> Callable[[AsyncSession], Any]:
    async def work(session: AsyncSession) -> RotationCounts:
        repo = _REPOSITORIES[spec.table](session)
        counts = RotationCounts(spec.table)
        for row in await repo.sealed_batch(after_id, limit):
            values = row._mapping
            row_id, row_key = int(values["id"]), values["row_key"]
            counts.rows += 1
            counts.last_id = row_id
            changed: dict[str, Any] = {}
            for column in spec.columns:
                stored = values[column]
                if stored is None:
                    counts.null += 1
                elif not is_envelope(stored):
                    counts.sealed_plaintext += 1
                    changed[column] = spec.seal(column, row_key, stored, keyring)
                elif stored.get("kid") == keyring.primary_kid:
                    counts.current += 1
                else:
                    plain = spec.open(column, row_key, stored, keyring)
                    counts.resealed += 1
                    changed[column] = spec.seal(column, row_key, plain, keyring)
            if changed:
                await repo.write_sealed(row_id, changed)
        return counts

    return work


__all__ = ["DEFAULT_BATCH_SIZE", "RotationCounts", "rotate_keys"]
