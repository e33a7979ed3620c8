"""The phases of a benchmark run: seed, count statements, start the servers, check
their answers, load them with wrk, compare writes, print the report; and cleaning up
whatever happens."""

import argparse
import asyncio
import functools
import importlib.util
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from bench import load, report, seed, statements, verify, writes
from bench.floors.floor_sqlite import dashboard as floor_c_dashboard
from bench.query import DISCREPANCIES_FIRST, SESSIONS_FIRST
from bench.servers import (
    Server,
    free_port,
    pg_backend_cpu_ms,
    stop_all,
    uv_command,
)

DEFAULT_PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
FLOOR_MODULES = {
    "floorA-pg": "bench.floors.floor_json_agg:app",
    "floorB-pg": "bench.floors.floor_levels:app",
    "floorC-sqlite": "bench.floors.floor_sqlite:app",
}


def say(text: str) -> None:
    print(text, flush=True)


# --- servers ------------------------------------------------------------------------


@dataclass
class Plan:
    """Commands and environment of every server."""

    args: argparse.Namespace
    workdir: Path
    pg: seed.PgTarget | None
    sqlite_path: Path | None
    floor_python: list[str]
    loop: str = field(init=False)
    http: str = field(init=False)

    def __post_init__(self) -> None:
        # What `migval serve` picks (graph/cli.py), so floors run the same way.
        self.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        self.http = "httptools" if importlib.util.find_spec("httptools") else "h11"

    def base_env(self) -> dict[str, str]:
        # Every server, migval and floors alike, gets the same fixed pool (16 unless
        # DB_POOL_SIZE / DB_MAX_OVERFLOW are set): at c=32 a request runs up to four
        # batches at once, and SQLAlchemy closes overflow connections at check-in,
        # so an overflow would measure connection churn rather than serving.
        pool = {
            "DB_POOL_SIZE": os.environ.get("DB_POOL_SIZE", "16"),
            "DB_MAX_OVERFLOW": os.environ.get("DB_MAX_OVERFLOW", "0"),
        }
        return {**os.environ, **pool, "MIGVAL_ENV": "development", "PYTHONUNBUFFERED": "1"}

    def migval(self, name: str, database_url: str) -> Server:
        port = free_port()
        argv = [
            *uv_command(),
            "migval",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            self.args.log_level,
        ]
        env = {**self.base_env(), "DATABASE_URL": database_url}
        return Server(name, argv, env, port, self.workdir / f"{name}.log")

    def floor(self, name: str, extra_env: Mapping[str, str]) -> Server:
        port = free_port()
        argv = [
            *self.floor_python,
            "-m",
            "uvicorn",
            FLOOR_MODULES[name],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            self.loop,
            "--http",
            self.http,
            "--log-level",
            self.args.log_level,
        ]
        return Server(
            name, argv, {**self.base_env(), **extra_env}, port, self.workdir / f"{name}.log"
        )

    def pg_servers(self, dsn: str) -> list[Server]:
        assert self.pg is not None
        url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
        return [
            self.migval("migval-pg", url),
            self.floor("floorA-pg", {"BENCH_PG_DSN": dsn}),
            self.floor("floorB-pg", {"BENCH_PG_DSN": dsn}),
        ]

    def sqlite_servers(self) -> list[Server]:
        assert self.sqlite_path is not None
        return [
            self.migval("migval-sqlite", seed.sqlite_url(self.sqlite_path)),
            self.floor("floorC-sqlite", {"BENCH_SQLITE_PATH": str(self.sqlite_path)}),
        ]


def floor_python(no_orjson: bool) -> tuple[list[str], str]:
    """How floors run Python: with orjson layered on by `uv run --with orjson` (an
    ephemeral overlay: the project's dependencies and lock are untouched) when it can
    be had, else the project's Python and the stdlib json."""
    base = [*uv_command()]
    if not no_orjson:
        with_orjson = [*base, "--with", "orjson", "python"]
        probe = subprocess.run(  # noqa: S603 - fixed command
            [*with_orjson, "-c", "import orjson"], capture_output=True, timeout=120, check=False
        )
        if probe.returncode == 0:
            return with_orjson, "orjson (uv run --with orjson)"
        say("  orjson unavailable through `uv run --with orjson`: floors use the stdlib json")
    return [*base, "python"], "json (stdlib)"


async def start_all(servers: Sequence[Server]) -> None:
    for server in servers:
        server.start()
    await asyncio.gather(*(server.wait_ready() for server in servers))


async def fetch(server: Server) -> bytes:
    async with httpx.AsyncClient(timeout=120.0) as client:
        return await statements.post_dashboard(client, server.url + "/graphql")


# --- phases -------------------------------------------------------------------------


async def prepare_databases(plan: Plan, data: seed.Dataset) -> None:
    if plan.pg is not None:
        started = time.perf_counter()
        await seed.pg_create(plan.pg)
        await seed.migrate(plan.pg.sqlalchemy_url)
        await seed.pg_seed(plan.pg, data)
        say(
            f"  PostgreSQL {plan.pg.database}: migrated and seeded "
            f"in {time.perf_counter() - started:.1f}s"
        )
    if plan.sqlite_path is not None:
        started = time.perf_counter()
        await seed.migrate(seed.sqlite_url(plan.sqlite_path))
        await asyncio.to_thread(seed.sqlite_seed, plan.sqlite_path, data)
        say(
            f"  SQLite {plan.sqlite_path}: migrated and seeded "
            f"in {time.perf_counter() - started:.1f}s"
        )


async def count_statements(plan: Plan) -> tuple[dict[str, float | None], list[str]]:
    """Statements per request per server (see bench/statements.py) and notes."""
    counts: dict[str, float | None] = {}
    notes: list[str] = []
    if plan.pg is not None:
        proxy = statements.PgCountingProxy(*plan.pg.host_port)
        port = await proxy.start()
        dsn = plan.pg.via("127.0.0.1", port)
        try:
            for server in plan.pg_servers(dsn):
                server.name += "-counting"
                server.log_path = server.log_path.with_suffix(".counting.log")
                await start_all([server])
                try:
                    wire = await statements.count_over_http(server.url + "/graphql", proxy.counts)
                finally:
                    server.stop()
                name = server.name.removesuffix("-counting")
                counts[name] = wire.statements
                notes.append(
                    f"{name}: statements on the wire per request: {wire.statements} "
                    f"(Execute {wire.executes} + simple Query {wire.queries}; "
                    f"Parse {wire.parses})"
                )
        finally:
            await proxy.close()
        orm, _ = await statements.count_migval_in_process(plan.pg.sqlalchemy_url)
        notes.append(
            f"migval-pg: statements per request at SQLAlchemy's cursor: {orm:g} "
            "(before_cursor_execute; pre-ping and transaction control not included)"
        )
    if plan.sqlite_path is not None:
        orm, _ = await statements.count_migval_in_process(seed.sqlite_url(plan.sqlite_path))
        counts["migval-sqlite"] = orm
        counts["floorC-sqlite"] = statements.count_sqlite_floor(
            str(plan.sqlite_path), floor_c_dashboard
        )
        notes.append(
            f"migval-sqlite: statements per request at SQLAlchemy's cursor: {orm:g} "
            "(before_cursor_execute, create_app() in-process); floorC-sqlite: "
            f"{counts['floorC-sqlite']} (sqlite3 trace callback)"
        )
    return counts, notes


async def check_answers(servers: Sequence[Server], sessions: int) -> tuple[list[str], int, int]:
    """One answer from every server, all compared with the first migval's; aborts on
    any difference. Returns notes, the answer's size and its object count."""
    bodies = {server.name: await fetch(server) for server in servers}
    reference_name = next(name for name in bodies if name.startswith("migval"))
    reference = bodies[reference_name]
    expected_sessions = min(SESSIONS_FIRST, sessions)
    objects = verify.check_reference(reference, expected_sessions, DISCREPANCIES_FIRST)
    notes = []
    extra = verify.extensions(reference)
    if extra is not None:
        notes.append(f"{reference_name} adds top-level extensions {extra} (not compared)")
    for name, body in bodies.items():
        if name == reference_name:
            continue
        how = verify.compare(name, reference, body)
        notes.append(f"{name}: {how} to {reference_name} ({len(body):,} bytes)")
    return notes, len(reference), objects


async def run_load(
    plan: Plan, servers: Sequence[Server], wrk: str, script: Path
) -> list[load.LoadResult]:
    results = []
    for server in servers:
        db_cpu: Callable[[], dict[int, float]] | None = None
        if server.name.endswith("-pg") and plan.pg is not None:
            db_cpu = functools.partial(pg_backend_cpu_ms, plan.pg.database)

        for concurrency in plan.args.concurrency:
            point = await load.run_point(
                wrk,
                script,
                server,
                concurrency,
                plan.args.duration,
                plan.args.warmup,
                plan.args.wrk_threads,
                db_cpu,
            )
            results.append(point)
            warn = f", {point.errors} errors!" if point.errors else ""
            say(
                f"  {server.name:14} c={concurrency:<3} {report.num(point.rps):>7} req/s  "
                f"p50 {report.num(point.p50_ms):>6} ms  p99 {report.num(point.p99_ms):>6} ms  "
                f"({point.requests} requests, other load {point.other_cores:.2f} cores{warn})"
            )
    return results


async def run_writes(plan: Plan, servers: Mapping[str, Server]) -> list[writes.WriteResult]:
    out: list[writes.WriteResult] = []
    args = plan.args
    if plan.pg is not None and "migval-pg" in servers:
        raw, count = writes.pg_writer(plan.pg.dsn)
        out += await writes.compare(
            "pg",
            servers["migval-pg"].url + "/graphql",
            args.write_sizes,
            args.write_runs,
            raw,
            count,
        )
    if plan.sqlite_path is not None and "migval-sqlite" in servers:
        raw, count = writes.sqlite_writer(plan.sqlite_path)
        out += await writes.compare(
            "sqlite",
            servers["migval-sqlite"].url + "/graphql",
            args.write_sizes,
            args.write_runs,
            raw,
            count,
        )
    return out


async def pg_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    wrk = load.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="migval-bench-") as tmp:
        workdir = Path(tmp)
        pg = seed.PgTarget(args.pg_admin_dsn, args.pg_database) if "pg" in args.backends else None
        sqlite_path = workdir / "bench.db" if "sqlite" in args.backends else None
        python, encoder = floor_python(args.no_orjson)
        plan = Plan(args, workdir, pg, sqlite_path, python)
        shape = seed.Shape(sessions=args.sessions)
        try:
            say(
                f"migval bench: {args.sessions:,} sessions, {args.duration:g}s per point "
                f"(+{args.warmup:g}s warm-up), concurrency {args.concurrency}, "
                f"backends {args.backends}"
            )
            say(f"machine load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
            say("seeding")
            data = seed.generate(shape)
            await prepare_databases(plan, data)
            say("counting statements per request")
            counts, statement_notes = await count_statements(plan)
            servers = []
            if pg is not None:
                servers += plan.pg_servers(pg.dsn)
            if sqlite_path is not None:
                servers += plan.sqlite_servers()
            say("starting servers: " + ", ".join(s.name for s in servers))
            await start_all(servers)
            say("checking that every server serves the same JSON")
            same_notes, size, objects = await check_answers(servers, args.sessions)
            for note in same_notes:
                say("  " + note)
            say(f"load: wrk, {args.wrk_threads} thread(s), POST of the dashboard query")
            script = load.write_script(workdir)
            results = await run_load(plan, servers, wrk, script)
            write_results: list[writes.WriteResult] = []
            if not args.no_writes:
                say(
                    "writes: recordValidationResult over HTTP vs raw, median of "
                    f"{args.write_runs} run(s)"
                )
                write_results = await run_writes(plan, {s.name: s for s in servers})
            stop_all()
            context = {
                "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
                "python": platform.python_version(),
                "PostgreSQL": await pg_version(pg.dsn) if pg is not None else "not run",
                "servers": f"uvicorn, 1 worker, loop {plan.loop}, http {plan.http}, "
                f"log level {args.log_level}",
                "floor encoder": encoder,
                "dataset": f"{args.sessions:,} sessions; {data.row_count:,} rows",
                "answer": f"{size:,} bytes, {objects:,} JSON objects",
            }
            say(
                report.render(
                    context, results, counts, [*same_notes, *statement_notes], write_results
                )
            )
            say(f"\ntotal time {time.perf_counter() - began:.0f}s")
        finally:
            stop_all()
            if pg is not None:
                try:
                    await seed.pg_drop(pg)
                except (OSError, asyncpg.PostgresError) as error:
                    say(f"could not drop {pg.database}: {error}")
