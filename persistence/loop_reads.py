"""SQLite fixed reads on the event loop's thread, on a read-only connection of its own.

aiosqlite runs every call on its connection's thread: each statement hands the GIL
over and back, and with a few requests in flight those hand-offs cost more CPU than
the statements themselves (docs/performance.md, eighth session). A fixed read is an
indexed loader batch of a document the cost limits admitted (a listing's filtered
count scans its matches: ADR 0008, Consequences), and under WAL a reader never waits
for a writer, so it runs right on the loop, as the raw sqlite3 floor of the benchmark
does. What would wait is refused at once (``busy_timeout`` 0)
and ``fetch`` answers None: the caller then sends the statement to its session's
aiosqlite connection, whose thread waits out ``SQLITE_BUSY_TIMEOUT_MS`` off the loop.

Each thread gets its own connection (``query_only``: it cannot write), opened on first
use and closed by ``close`` (DatabaseManager.dispose). Only for SQLite files: an
in-memory database is private to its one pooled connection.
"""

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

# Primary result codes of a statement that would have waited for a lock.
_WAITS = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_CACHED_STATEMENTS = 256  # fixed statements: a few dozen shapes, each kept prepared


class LoopReads:
    """Read-only connections to one SQLite file, one per thread that reads."""

    def __init__(self, database: str, *, uri: bool) -> None:
        self.database, self.uri = database, uri
        self._connections: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()  # guards the dict, not the connections

    def fetch(self, sql: str, arguments: Sequence[Any]) -> list[Any] | None:
        """The rows of ``sql`` (tuples), or None when the database is locked."""
        conn = self._connections.get(threading.get_ident()) or self._open()
        try:
            return conn.execute(sql, arguments).fetchall()
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF in _WAITS:
                return None
            raise

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.database,
            uri=self.uri,
            timeout=0,  # busy_timeout 0: a lock is never waited for on the loop
            isolation_level=None,  # autocommit: each statement its own snapshot
            check_same_thread=False,  # close() may run on another thread
            cached_statements=_CACHED_STATEMENTS,
        )
        conn.execute("PRAGMA query_only=ON")
        with self._lock:
            self._connections[threading.get_ident()] = conn
        return conn

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()
