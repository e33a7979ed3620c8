"""``migval keys``: field-encryption keys (generate one, rotate stored values).

Wired into the ``migval`` parser by ``graph.cli`` through ``add_commands(subparsers)``.
Exit codes follow ``graph.cli``: 0 success, 1 failure (a value that cannot be
decrypted, database unreachable), 2 usage or configuration error (MIGVAL_ENCRYPTION_KEYS
missing or malformed).
"""

import argparse
import asyncio
import sys
from typing import Any

from graph.exit_codes import EXIT_FAILURE, EXIT_OK
from persistence.crypto import ENV_KEYS, KID_PATTERN, DecryptionError, KeyRing, generate_key
from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError
from persistence.services.keys import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    RotationCounts,
    rotate_keys,
)


def add_commands(subparsers: Any) -> None:
    """Add the ``keys`` command group to the ``migval`` top-level subparsers."""
    keys = subparsers.add_parser(
        "keys",
        help="manage field-encryption keys (MIGVAL_ENCRYPTION_KEYS)",
        description="Manage the keys that encrypt secret fields at rest (session URLs and "
        "metadata, behavioral interaction logs). MIGVAL_ENCRYPTION_KEYS lists them, "
        "comma-separated, each optionally as KID:KEY; the first encrypts, all decrypt.",
    )
    keys.set_defaults(group_parser=keys)
    commands = keys.add_subparsers(title="commands", metavar="COMMAND")

    generate = commands.add_parser(
        "generate",
        help="print a new random key",
        description="Print a new random 256-bit key (base64url). To rotate, put it FIRST "
        "in MIGVAL_ENCRYPTION_KEYS, keep the old keys after it, deploy, then run "
        "`migval keys rotate`.",
    )
    generate.add_argument(
        "--kid", type=_kid, help="print the key as KID:KEY (default: key id derived from the key)"
    )
    generate.set_defaults(handler=_generate)

    rotate = commands.add_parser(
        "rotate",
        help="re-encrypt every stored secret with the first key",
        description="Re-encrypt every encrypted value (and encrypt any plaintext one) with "
        "the first key of MIGVAL_ENCRYPTION_KEYS, in id order, one transaction per batch. "
        "Values already under the first key are skipped, so an interrupted run can be "
        "run again and continues. Afterwards the other keys can be removed.",
    )
    rotate.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        help="rows per transaction (default: %(default)s)",
    )
    rotate.set_defaults(handler=_rotate)


def _kid(raw: str) -> str:
    if not KID_PATTERN.fullmatch(raw):
        raise argparse.ArgumentTypeError(
            "1-32 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)"
        )
    return raw


def _batch_size(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {raw!r}") from None
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH_SIZE}, got {value}")
    return value


def _generate(args: argparse.Namespace) -> int:
    key = generate_key()
    print(f"{args.kid}:{key}" if args.kid else key)
    print(
        f"Put it first in {ENV_KEYS} (keep the old keys after it), then run "
        "`migval keys rotate`. Store it like a password: losing it loses the data.",
        file=sys.stderr,
    )
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    keyring = KeyRing.from_env()
    if keyring is None:
        raise ConfigurationError(ENV_KEYS, "is required for `migval keys rotate`")
    print(f"rotating to key {keyring.primary_kid!r} (keys configured: {', '.join(keyring.kids)})")
    try:
        totals = asyncio.run(_run_rotation(keyring, args.batch_size))
    except DecryptionError as error:
        print(f"migval: error: {error}", file=sys.stderr)
        print(
            "migval: batches before this one are committed; fix the key list (or the row) "
            "and run `migval keys rotate` again to continue",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    rewritten = sum(t.rewritten for t in totals)
    for t in totals:
        print(
            f"{t.table}: {t.rows} rows; {t.resealed} re-encrypted, {t.sealed_plaintext} "
            f"plaintext encrypted, {t.current} already current, {t.null} null"
        )
    print(
        f"done: {rewritten} values rewritten; every stored secret is now under key "
        f"{keyring.primary_kid!r}. Keys after the first can be removed from {ENV_KEYS} "
        "once every process runs with the new key first."
    )
    return EXIT_OK


async def _run_rotation(keyring: KeyRing, batch_size: int) -> list[RotationCounts]:
    db = DatabaseManager.from_env()
    try:
        return await rotate_keys(db, keyring, batch_size=batch_size, progress=_print_batch)
    finally:
        await db.dispose()


def _print_batch(batch: RotationCounts) -> None:
    print(
        f"{batch.table}: rows up to id {batch.last_id}: {batch.rows} scanned, "
        f"{batch.rewritten} values rewritten, {batch.current} already current",
        flush=True,
    )


__all__ = ["add_commands"]
