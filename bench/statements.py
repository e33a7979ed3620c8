"""Counting the SQL statements one dashboard request costs.

PostgreSQL, on the wire: a counting TCP proxy sits between a server and PostgreSQL
(only for a short counting run, never under load) and counts the client's protocol
messages: Execute ('E', extended protocol: asyncpg's prepared statements) and Query
('Q', simple protocol: BEGIN/COMMIT and the like). So every statement the server makes
PostgreSQL run is counted: pool pre-pings, transaction control and type introspection
included. Parse ('P') messages are counted apart (statement cache misses).

In process, at the driver's door: a SQLAlchemy ``before_cursor_execute`` listener on
migval's own engine (create_app() run in-process, with its lifespan), as the test suite
counts them; and sqlite3's trace callback for floor C.
"""

import asyncio
import contextlib
import os
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import event

from bench.query import DASHBOARD_BODY

_SPECIAL_REQUESTS = {80877102, 80877103, 80877104}  # cancel, SSL, GSSENC


@dataclass
class WireCounts:
    executes: int = 0
    queries: int = 0
    parses: int = 0

    @property
    def statements(self) -> int:
        return self.executes + self.queries

    def reset(self) -> None:
        self.executes = self.queries = self.parses = 0


class PgCountingProxy:
    """127.0.0.1:<port> -> PostgreSQL, counting the client's messages."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.counts = WireCounts()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        upstream = asyncio.create_task(self._pipe(up_reader, writer))
        self._tasks.add(upstream)
        try:
            await self._count_and_forward(reader, up_writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # one side closed: the session is over
        except asyncio.CancelledError:
            pass  # the harness is shutting down; end quietly (asyncio would log it)
        finally:
            up_writer.close()
            upstream.cancel()
            self._tasks.discard(upstream)
            writer.close()

    async def _count_and_forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Untyped messages first (int32 length, int32 code): SSL/GSSENC requests, then
        # the startup message; typed messages (1 byte type, int32 length) after it.
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            writer.write(head + await reader.readexactly(length - 8))
            await writer.drain()
            if code not in _SPECIAL_REQUESTS:
                break
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            if kind == b"E":
                self.counts.executes += 1
            elif kind == b"Q":
                self.counts.queries += 1
            elif kind == b"P":
                self.counts.parses += 1
            writer.write(head + await reader.readexactly(length - 4))
            await writer.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


async def post_dashboard(client: httpx.AsyncClient, url: str) -> bytes:
    response = await client.post(
        url, content=DASHBOARD_BODY, headers={"content-type": "application/json"}
    )
    response.raise_for_status()
    return response.content


async def count_over_http(
    url: str, counts: WireCounts, warmup: int = 10, measured: int = 11
) -> WireCounts:
    """Wire counts of the median request among ``measured`` sequential ones, after
    ``warmup`` requests (they open the pool's connections and fill the statement and
    type caches, whose misses would otherwise be counted)."""
    seen: list[WireCounts] = []
    async with httpx.AsyncClient(timeout=120.0) as client:
        for _ in range(warmup):
            await post_dashboard(client, url)
        for _ in range(measured):
            counts.reset()
            await post_dashboard(client, url)
            seen.append(WireCounts(counts.executes, counts.queries, counts.parses))
    seen.sort(key=lambda c: (c.statements, c.parses))
    return seen[len(seen) // 2]


@contextlib.asynccontextmanager
async def migval_in_process(database_url: str) -> AsyncIterator[tuple[Any, Any]]:
    """create_app() for ``database_url`` with its lifespan running: (app, engine)."""
    from graph.app import create_app  # noqa: PLC0415 - only this step needs migval's app

    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database_url
    try:
        app = create_app()
        async with app.router.lifespan_context(app):
            yield app, app.state.db.engine.sync_engine
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved


async def count_migval_in_process(
    database_url: str, warmup: int = 3, measured: int = 5
) -> tuple[float, bytes]:
    """SQL statements per dashboard request at SQLAlchemy's cursor level, and the
    response body."""
    texts: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        texts.append(statement)

    async with migval_in_process(database_url) as (app, engine):
        event.listen(engine, "before_cursor_execute", before)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for _ in range(warmup):
                    body = await post_dashboard(client, "/graphql")
                texts.clear()
                for _ in range(measured):
                    body = await post_dashboard(client, "/graphql")
        finally:
            event.remove(engine, "before_cursor_execute", before)
    return len(texts) / measured, body


def count_sqlite_floor(path: str, dashboard: Callable[[sqlite3.Connection], bytes]) -> int:
    """Statements floor C runs for one request (sqlite3 trace callback)."""
    from bench.floors.floor_sqlite import connect  # noqa: PLC0415

    conn = connect(path)
    try:
        dashboard(conn)  # warm
        traced: list[str] = []
        conn.set_trace_callback(traced.append)
        dashboard(conn)
        return len(traced)
    finally:
        conn.close()
