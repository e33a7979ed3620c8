"""SQLite fixed reads on the event loop's own read-only connection
(persistence/loop_reads.py): they never wait for a lock on the loop (a locked database
sends the statement to the session's aiosqlite connection, which waits off the loop),
see only committed rows, cannot write, and are closed with the manager."""

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from persistence.database import LOOP_READS, DatabaseManager
from persistence.loop_reads import LoopReads
from persistence.repositories import SessionRepository
from persistence.services import SessionService
from tests.conftest import DbFactory
from tests.persistence.factories import session_input


def _locked_file(path: Path) -> sqlite3.Connection:
    """A rollback-journal database held under an EXCLUSIVE lock: readers must wait."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_a_locked_database_is_not_waited_for(tmp_path: Path) -> None:
    holder = _locked_file(tmp_path / "locked.db")
    reads = LoopReads(str(tmp_path / "locked.db"), uri=False)
    try:
        assert reads.fetch("SELECT x FROM t", ()) is None  # at once: busy_timeout 0
        assert reads.moved == {"locked": 1, "over_budget": 0, "broken": 0}
        holder.execute("COMMIT")
        assert reads.fetch("SELECT x FROM t", ()) == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reads.fetch("INSERT INTO t VALUES (2)", ())
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            reads.fetch("SELECT * FROM missing", ())  # other errors are raised
    finally:
        reads.close()
        holder.close()


def test_a_statement_over_budget_leaves_the_loop(tmp_path: Path) -> None:
    """A statement still running at the budget is interrupted at once (not run to
    its end on the loop); short ones are untouched."""
    sqlite3.connect(tmp_path / "any.db").close()
    reads = LoopReads(str(tmp_path / "any.db"), uri=False, budget_s=0.01)
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000)"
        " SELECT count(*) FROM c"
    )
    try:
        started = time.monotonic()
        assert reads.fetch(endless, ()) is None
        assert time.monotonic() - started < 2  # the whole count takes ~20 s
        assert reads.fetch("SELECT 1", ()) == [(1,)]
        # Remembered: the same statement now skips the loop without starting.
        started = time.monotonic()
        assert reads.fetch(endless, ()) is None
        assert time.monotonic() - started < 0.005
        assert reads.moved["over_budget"] == 1
    finally:
        reads.close()
    assert reads.fetch("SELECT 1", ()) is None  # closed: every read goes elsewhere
    assert reads._connections == {}


def test_a_broken_connection_is_replaced(tmp_path: Path) -> None:
    """A file that stops being a database under the server (overwritten, say) breaks
    the loop's connection: the read moves, the connection is closed, and a later read
    opens a new one. Errors of sqlite3 itself (no result code) are raised as they are."""
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    header = path.read_bytes()[:100]
    reads = LoopReads(str(path), uri=False)
    try:
        assert reads.fetch("SELECT x FROM t", ()) == [(1,)]
        first = reads._connections[threading.get_ident()]
        with path.open("r+b") as file:
            file.write(b"not a database header, not at all")
        assert reads.fetch("SELECT x FROM t", ()) is None
        assert reads.moved == {"locked": 0, "over_budget": 0, "broken": 1}
        assert threading.get_ident() not in reads._connections
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            first[0].execute("SELECT 1")
        with path.open("r+b") as file:
            file.write(header)
        assert reads.fetch("SELECT x FROM t", ()) == [(1,)]
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("INSERT INTO t VALUES (CAST(x'fffe' AS TEXT))")  # not UTF-8
        raw.close()
        with pytest.raises(sqlite3.OperationalError, match="decode"):
            reads.fetch("SELECT x FROM t WHERE typeof(x) = 'text'", ())
    finally:
        reads.close()


@pytest.mark.sqlite_only
async def test_a_read_over_budget_is_answered_from_the_sessions_connection(
    db: DatabaseManager, sqlite_path: str
) -> None:
    """With no budget at all, a statement of some length is interrupted on the loop
    and answered, the same, by the session's aiosqlite connection."""
    created = (await SessionService(db).create(session_input("long"))).session.id
    keys = [created, *range(10_000_000, 10_005_000)]
    sent: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    impatient = LoopReads(sqlite_path, uri=False, budget_s=0.0)
    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        async with db.read_session() as reader:
            patient = await SessionRepository(reader).list_by_ids(keys)
            reader.info[LOOP_READS] = impatient
            moved = await SessionRepository(reader).list_by_ids(keys)
        statement, parameters = sent[0]
        assert impatient.fetch(statement, parameters) is None  # over budget on the loop
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)
        impatient.close()
    assert [r.request_id if r else None for r in moved][:2] == ["long", None]
    assert [tuple(r) if r else None for r in moved] == [tuple(r) if r else None for r in patient]


@pytest.mark.sqlite_only
async def test_reads_run_beside_an_open_write_transaction(db: DatabaseManager) -> None:
    """Under WAL the loop's reader neither waits for a writer holding the lock nor
    sees its uncommitted rows; statement events fire as for any statement."""
    first = (await SessionService(db).create(session_input("committed"))).session.id
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    async with db.write_session() as writer:
        await writer.execute(
            sa.text("UPDATE validation_sessions SET request_id = 'uncommitted' WHERE id = :i"),
            {"i": first},
        )
        event.listen(db.engine.sync_engine, "before_cursor_execute", before)
        try:
            async with db.read_session() as reader:
                assert reader.info[LOOP_READS] is db.loop_reads
                rows = await asyncio.wait_for(
                    SessionRepository(reader).list_by_ids([first]), timeout=2
                )
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", before)
    assert [r.request_id for r in rows if r] == ["committed"]
    assert len(seen) == 1
    assert "json_each" in seen[0]
    # The loop's own connection ran it (its trace), nothing moved.
    assert db.loop_reads is not None
    traced: list[str] = []
    loop_conn, _deadline = db.loop_reads._connections[threading.get_ident()]
    loop_conn.set_trace_callback(traced.append)
    try:
        async with db.read_session() as reader:
            await SessionRepository(reader).list_by_ids([first])
    finally:
        loop_conn.set_trace_callback(None)
    assert [statement.split(None, 1)[0] for statement in traced] == ["SELECT"]
    assert db.loop_reads.moved == {"locked": 0, "over_budget": 0, "broken": 0}


@pytest.mark.sqlite_only
async def test_a_locked_loop_read_goes_to_the_sessions_connection(
    db: DatabaseManager, tmp_path: Path
) -> None:
    """When the loop's connection meets a lock, the statement runs on the session's
    aiosqlite connection instead (which waits on its own thread) and returns the
    same rows. The loop reader here reads a second file held locked, so its answer is
    always "locked"."""
    created = (await SessionService(db).create(session_input("fallback"))).session.id
    holder = _locked_file(tmp_path / "locked.db")
    locked = LoopReads(str(tmp_path / "locked.db"), uri=False)
    try:
        async with db.read_session() as reader:
            reader.info[LOOP_READS] = locked
            rows = await SessionRepository(reader).list_by_ids([created, 999_999])
    finally:
        locked.close()
        holder.close()
    assert [r.request_id if r else None for r in rows] == ["fallback", None]


@pytest.mark.sqlite_only
async def test_loop_reads_only_for_files_and_closed_on_dispose(db_factory: DbFactory) -> None:
    manager = db_factory()
    assert manager.loop_reads is not None
    async with manager.read_session() as session:
        assert (await SessionRepository(session).list_by_ids([999_999])) == [None]
    opened = [conn for conn, _deadline in manager.loop_reads._connections.values()]
    assert len(opened) == 1
    await manager.dispose()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")
    assert db_factory("sqlite+aiosqlite:///:memory:").loop_reads is None
    assert db_factory(sqlite_loop_budget_ms=0).loop_reads is None  # every read to the pool
    tuned = db_factory(sqlite_loop_budget_ms=200).loop_reads
    assert tuned is not None
    assert tuned.budget_s == 0.2
