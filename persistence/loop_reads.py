"""SQLite fixed reads on the event loop's thread, on a read-only connection of its own.

aiosqlite runs every call on its connection's thread: each statement hands the GIL
over and back, and with a few requests in flight those hand-offs cost more CPU than
the statements themselves (docs/performance.md, eighth session). A fixed read is an
indexed loader batch of a document the cost limits admitted, and under WAL a reader
never waits for a writer, so it runs right on the loop, as the raw sqlite3 floor of
the benchmark does. What would wait is refused at once (``busy_timeout`` 0), and a
statement still running after ``LOOP_BUDGET_S`` (a listing's filtered count over a
large table, say) is interrupted: ``fetch`` answers None, and the caller sends the
statement to its session's aiosqlite connection, whose thread waits out
``SQLITE_BUSY_TIMEOUT_MS`` or runs it to its end off the loop. So a statement holds
the loop for about the budget at most.

Each thread gets its own connection (``query_only``: it cannot write), opened on first
use and closed by ``close`` (DatabaseManager.dispose). Only for SQLite files: an
in-memory database is private to its one pooled connection.
"""

import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

# Primary result codes of a statement given up on the loop: it would have waited for a
# lock, or it ran past the budget (interrupted by the progress handler).
_GIVE_UP = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_INTERRUPT})
_CACHED_STATEMENTS = 256  # fixed statements: a few dozen shapes, each kept prepared
LOOP_BUDGET_S = 0.05  # a statement still running after this leaves the loop
_PROGRESS_STEPS = 10_000  # SQLite VM steps between two looks at the clock


class LoopReads:
    """Read-only connections to one SQLite file, one per thread that reads; ``fetch``
    answers None for a statement that must run elsewhere (locked, or over budget)."""

    def __init__(self, database: str, *, uri: bool, budget_s: float = LOOP_BUDGET_S) -> None:
        self.database, self.uri, self.budget_s = database, uri, budget_s
        # per thread: its connection and the deadline its progress handler checks
        self._connections: dict[int, tuple[sqlite3.Connection, list[float]]] = {}
        self._lock = threading.Lock()  # guards the dict, not the connections

    def fetch(self, sql: str, arguments: Sequence[Any]) -> list[Any] | None:
        """The rows of ``sql`` (tuples), or None when it must run elsewhere."""
        conn, deadline = self._connections.get(threading.get_ident()) or self._open()
        deadline[0] = time.monotonic() + self.budget_s
        try:
            return conn.execute(sql, arguments).fetchall()
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF in _GIVE_UP:
                return None
            raise

    def _open(self) -> tuple[sqlite3.Connection, list[float]]:
        conn = sqlite3.connect(
            self.database,
            uri=self.uri,
            timeout=0,  # busy_timeout 0: a lock is never waited for on the loop
            isolation_level=None,  # autocommit: each statement its own snapshot
            check_same_thread=False,  # close() may run on another thread
            cached_statements=_CACHED_STATEMENTS,
        )
        conn.execute("PRAGMA query_only=ON")
        deadline = [0.0]
        clock = time.monotonic
        # True interrupts the statement (SQLITE_INTERRUPT); it only reads, so nothing
        # is left half-done.
        conn.set_progress_handler(lambda: clock() > deadline[0], _PROGRESS_STEPS)
        entry = conn, deadline
        with self._lock:
            self._connections[threading.get_ident()] = entry
        return entry

    def close(self) -> None:
        with self._lock:
            entries, self._connections = list(self._connections.values()), {}
        for conn, _ in entries:
            conn.close()
