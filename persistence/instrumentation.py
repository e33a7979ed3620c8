"""Database instrumentation: statement timing, the slow-statement log and pool gauges.

``DatabaseInstrumentation(db, registry, settings).attach()`` hooks a DatabaseManager's
engine and a Prometheus registry together:

- ``migval_db_statement_duration_seconds{kind}``: a histogram of the time each SQL
  statement spends in the driver (SQLAlchemy's ``before_cursor_execute`` to
  ``after_cursor_execute``, or to ``handle_error`` when it fails), ``kind`` being
  SELECT, INSERT, UPDATE, DELETE or OTHER (BEGIN, PRAGMA, DDL ...).
- ``migval_db_slow_statements_total{kind}`` and a WARNING on the ``migval.sql`` logger
  for each statement slower than ``MIGVAL_SLOW_STATEMENT_MS`` (default 500): its
  duration and its text, whitespace collapsed and cut at 500 characters, never its
  parameter values (they can carry secrets; bound values are not part of the text).
- ``migval_db_pool_size`` / ``_checked_in`` / ``_checked_out`` / ``_overflow``:
  gauges read from ``db.pool_stats()`` when the registry is scraped.

``detach()`` removes the listeners and the pool collector. Plain prometheus_client and
SQLAlchemy only: nothing here knows about HTTP or GraphQL.
"""

import functools
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext

from persistence.database import DatabaseManager
from persistence.errors import ConfigurationError

log = logging.getLogger("migval.sql")

StatementKind = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"]

DEFAULT_SLOW_STATEMENT_MS: Final = 500.0
MAX_LOGGED_STATEMENT_CHARS: Final = 500
# Statements are timed from a few hundred microseconds (SQLite) to the statement
# timeout (PostgreSQL, 30 s by default).
STATEMENT_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# conn.info key of the running statement's start: a connection runs one at a time.
_STARTED: Final = "migval_statement_started"
_LEADING = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_DML = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_KINDS: Final[Mapping[str, StatementKind]] = {
    "SELECT": "SELECT",
    "INSERT": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
}
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class InstrumentationSettings:
    # Statements slower than this many milliseconds are logged; 0 logs every one.
    slow_statement_ms: float = DEFAULT_SLOW_STATEMENT_MS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "InstrumentationSettings":
        """``MIGVAL_SLOW_STATEMENT_MS`` from ``env`` (default ``os.environ``); a bad
        value raises ConfigurationError naming the variable."""
        e = os.environ if env is None else env
        raw = e.get("MIGVAL_SLOW_STATEMENT_MS", "").strip()
        if not raw:
            return cls()
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not 0 <= value < float("inf"):
            raise ConfigurationError(
                "MIGVAL_SLOW_STATEMENT_MS", f"must be a number of milliseconds >= 0, got {raw!r}"
            )
        return cls(slow_statement_ms=value)


# A server runs a few hundred distinct statements (on SQLite one more per IN-list
# length); bounded either way.
@functools.lru_cache(maxsize=1024)
def statement_kind(statement: str) -> StatementKind:
    """SELECT, INSERT, UPDATE, DELETE or OTHER, from the statement's first keyword
    (a ``WITH`` query counts as the DML it contains, else as a SELECT)."""
    leading = _LEADING.match(statement)
    body = statement[leading.end() :] if leading else statement
    word = _FIRST_WORD.match(body)
    keyword = word.group(0).upper() if word else ""
    if keyword == "WITH":
        dml = _DML.search(body)
        return _KINDS[dml.group(1).upper()] if dml else "SELECT"
    return _KINDS.get(keyword, "OTHER")


def loggable_statement(statement: str) -> str:
    """The statement text for a log line: one line, at most 500 characters. Values
    bound as parameters are not part of it (placeholders such as $1 or ? are)."""
    text = _WHITESPACE.sub(" ", statement).strip()
    if len(text) > MAX_LOGGED_STATEMENT_CHARS:
        return text[: MAX_LOGGED_STATEMENT_CHARS - 3] + "..."
    return text


class DatabaseInstrumentation:
    """Statement timing, the slow-statement log and pool gauges for one
    DatabaseManager, recorded into ``registry``. ``attach()`` once; ``detach()``."""

    def __init__(
        self,
        db: DatabaseManager,
        registry: CollectorRegistry,
        settings: InstrumentationSettings | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings or InstrumentationSettings()
        self._slow_s = self.settings.slow_statement_ms / 1000
        self.durations = Histogram(
            "migval_db_statement_duration_seconds",
            "Time SQL statements spent in the database driver, by statement kind.",
            ["kind"],
            buckets=STATEMENT_BUCKETS,
            registry=registry,
        )
        self.slow = Counter(
            "migval_db_slow_statements",
            "SQL statements slower than MIGVAL_SLOW_STATEMENT_MS, by statement kind.",
            ["kind"],
            registry=registry,
        )
        self.pool = PoolCollector(db)
        self._attached = False
        # The histogram's child per kind: labels() takes a lock and builds a key per call.
        self._duration_of: dict[str, Any] = {}

    @property
    def _engine(self) -> Engine:
        return self.db.engine.sync_engine

    def attach(self) -> "DatabaseInstrumentation":
        if self._attached:
            return self
        event.listen(self._engine, "before_cursor_execute", self._before)
        event.listen(self._engine, "after_cursor_execute", self._after)
        event.listen(self._engine, "handle_error", self._failed)
        self.registry.register(self.pool)
        self._attached = True
        return self

    def detach(self) -> None:
        if not self._attached:
            return
        event.remove(self._engine, "before_cursor_execute", self._before)
        event.remove(self._engine, "after_cursor_execute", self._after)
        event.remove(self._engine, "handle_error", self._failed)
        self.registry.unregister(self.pool)
        self._attached = False

    # SQLAlchemy calls these synchronously around each cursor execution.

    def _before(self, conn: Connection, *_args: Any) -> None:
        conn.info[_STARTED] = time.perf_counter()

    def _after(self, conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        started = conn.info.pop(_STARTED, None)
        if started is not None:
            self._observe(statement, time.perf_counter() - started, failed=False)

    def _failed(self, context: ExceptionContext) -> None:
        # An exception raised here would replace the statement's own: never raise.
        conn, statement = context.connection, context.statement
        if conn is None or statement is None or conn.closed or conn.invalidated:
            return  # not a statement on a live connection (connect, pre-ping ...)
        try:
            started = conn.info.pop(_STARTED, None)
            if started is not None:
                self._observe(statement, time.perf_counter() - started, failed=True)
        except Exception:
            log.debug("could not time a failed statement", exc_info=True)

    def _observe(self, statement: str, seconds: float, *, failed: bool) -> None:
        kind = statement_kind(statement)
        duration = self._duration_of.get(kind)
        if duration is None:
            duration = self._duration_of[kind] = self.durations.labels(kind)
        duration.observe(seconds)
        if seconds < self._slow_s:
            return
        self.slow.labels(kind).inc()
        # Only the statement text: parameters (bound values) are never logged.
        log.warning(
            "slow SQL statement%s: %s took %.1f ms (threshold %g ms): %s",
            " (failed)" if failed else "",
            kind,
            seconds * 1000,
            self.settings.slow_statement_ms,
            loggable_statement(statement),
        )


class PoolCollector(Collector):
    """The connection pool's state, read from ``db.pool_stats()`` at each scrape."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        stats = self.db.pool_stats()
        # QueuePool counts overflow from -pool_size up; only the excess is news.
        figures = (
            ("size", "Connections the pool keeps open (its configured size).", stats.size),
            ("checked_in", "Idle connections in the pool.", stats.checked_in),
            ("checked_out", "Connections in use (checked out of the pool).", stats.checked_out),
            ("overflow", "Connections open beyond the pool size.", max(stats.overflow, 0)),
        )
        for name, documentation, value in figures:
            yield GaugeMetricFamily(f"migval_db_pool_{name}", documentation, value=value)
        if self.db.loop_reads is not None:  # SQLite files
            moved = CounterMetricFamily(
                "migval_db_loop_reads_moved",
                "SQLite reads moved off the event loop to a pooled connection, by reason "
                "(locked: the database was locked; over_budget: still running after "
                "SQLITE_LOOP_BUDGET_MS, or over it lately; broken: the loop's connection "
                "failed).",
                labels=["reason"],
            )
            for reason, count in self.db.loop_reads.moved.items():
                moved.add_metric([reason], count)
            yield moved
