"""SQLite fixed reads on the event loop's thread, on a read-only connection of its own.

aiosqlite runs every call on its connection's thread: each statement hands the GIL
over and back, and with a few requests in flight those hand-offs cost more CPU than
the statements themselves (docs/performance.md, eighth session). A fixed read is an
indexed loader batch of a document the cost limits admitted, and under WAL a reader
never waits for a writer, so it runs right on the loop, as the raw sqlite3 floor of
the benchmark does. What would wait is refused at once (``busy_timeout`` 0), and a
statement still running after its budget (``SQLITE_LOOP_BUDGET_MS``, default 50 ms: a
listing's filtered count over a large table, say) is interrupted: ``fetch`` answers
None, and the caller sends the statement to its session's aiosqlite connection,
whose thread waits out ``SQLITE_BUSY_TIMEOUT_MS`` or runs it to its end off the loop.
So a statement holds the loop for about the budget at most (the clock is read every
few thousand VM steps; a slow disk read in between is not cut short), and one that
went over it skips the loop for a minute. A connection whose file was replaced,
removed or cannot be read is closed, and the next read opens a new one.

Each thread gets its own connection (``query_only``: it cannot write), opened on first
use and closed by ``close`` (DatabaseManager.dispose). Only for SQLite files: an
in-memory database is private to its one pooled connection.
"""

import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from persistence.settings import DatabaseSettings

# Primary result codes of a statement that would have waited for a lock (one past the
# budget ends with SQLITE_INTERRUPT, from the progress handler) ...
_LOCKED = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# ... and of a connection that cannot go on: the file was replaced, removed or cannot be
# read (the statement moves; the connection is closed and the next read opens anew).
_BROKEN = frozenset(
    {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB}
)
_CACHED_STATEMENTS = 256  # fixed statements: a few dozen shapes, each kept prepared
# A statement still running after this leaves the loop (SQLITE_LOOP_BUDGET_MS).
LOOP_BUDGET_S = DatabaseSettings().sqlite_loop_budget_ms / 1000
_PROGRESS_STEPS = 10_000  # SQLite VM steps between two looks at the clock
SLOW_FOR_S = 60.0  # a statement over budget goes straight to the thread for this long
_SLOW_SIZE = 256  # bound of the statements remembered as over budget
Moved = str  # why a statement left the loop: "locked", "over_budget", "broken"


class LoopReads:
    """Read-only connections to one SQLite file, one per thread that reads; ``fetch``
    answers None for a statement that must run elsewhere, and counts why in
    ``moved`` (exported as ``migval_db_loop_reads_moved_total``)."""

    def __init__(self, database: str, *, uri: bool, budget_s: float = LOOP_BUDGET_S) -> None:
        self.database, self.uri, self.budget_s = database, uri, budget_s
        self.moved: dict[Moved, int] = {"locked": 0, "over_budget": 0, "broken": 0}
        # per thread: its connection and the deadline its progress handler checks
        self._connections: dict[int, tuple[sqlite3.Connection, list[float]]] = {}
        self._slow: dict[str, float] = {}  # SQL over budget -> until when it skips the loop
        self._lock = threading.Lock()  # guards the dicts, not the connections
        self._closed = False

    def fetch(self, sql: str, arguments: Sequence[Any]) -> list[Any] | None:
        """The rows of ``sql`` (tuples), or None when it must run elsewhere."""
        now = time.monotonic()
        if self._closed or self._slow.get(sql, 0.0) > now:
            return None
        entry = self._connections.get(threading.get_ident()) or self._open()
        conn, deadline = entry
        deadline[0] = now + self.budget_s
        try:
            return conn.execute(sql, arguments).fetchall()
        except sqlite3.DatabaseError as error:
            # sqlite3's own errors (a column it cannot decode, say) carry no code
            code = getattr(error, "sqlite_errorcode", 0) & 0xFF
            if code in _LOCKED:
                self.moved["locked"] += 1
            elif code == sqlite3.SQLITE_INTERRUPT:
                self.moved["over_budget"] += 1
                with self._lock:
                    if len(self._slow) >= _SLOW_SIZE:
                        self._slow.clear()
                    self._slow[sql] = time.monotonic() + SLOW_FOR_S
            elif code in _BROKEN:
                self.moved["broken"] += 1
                self._forget(entry)
            else:
                raise
            return None

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

    def _forget(self, entry: tuple[sqlite3.Connection, list[float]]) -> None:
        with self._lock:
            if self._connections.get(threading.get_ident()) is entry:
                del self._connections[threading.get_ident()]
        entry[0].close()

    def close(self) -> None:
        """Close every connection; later reads all go to the sessions' connections."""
        with self._lock:
            self._closed = True
            entries, self._connections = list(self._connections.values()), {}
        for conn, _ in entries:
            conn.close()
