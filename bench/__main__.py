"""``python -m bench`` (``make bench``): migval's dashboard read and bulk write, next to
hand-written floors, on PostgreSQL and SQLite. Prints figures; asserts nothing about
speed. Every process it starts and every scratch database it creates is removed at the
end, on errors and on Ctrl-C too. See bench/README.md.
"""

import argparse
import asyncio
import functools
import importlib.util
import os
import platform
import re
import subprocess
import sys
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
    BenchError,
    Server,
    free_port,
    install_signal_handlers,
    pg_backend_ticks,
    stop_all,
    uv_command,
)

# Above this, CPU taken by processes outside the benchmark is called out.
NOISY_CORES = 0.2
DEFAULT_PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
FLOOR_MODULES = {
    "floorA-pg": "bench.floors.floor_json_agg:app",
    "floorB-pg": "bench.floors.floor_levels:app",
    "floorC-sqlite": "bench.floors.floor_sqlite:app",
}


def _duration(text: str) -> float:
    """'10s', '500ms', '1m' or plain seconds."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(ms|s|m)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 10s, 500ms, 1m)")
    value = float(match.group(1))
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2) or "s"]


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def _backends(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or set(values) - {"pg", "sqlite"}:
        raise argparse.ArgumentTypeError("backends: pg, sqlite or pg,sqlite")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="migval dashboard reads and bulk writes versus raw floors "
        "(PostgreSQL and SQLite). Defaults come from BENCH_* environment variables.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=env.get("BENCH_QUICK") == "1",
        help="small and short: 2,000 sessions, 3s points, 1s warm-up, 1 write "
        "run (explicit flags still win; BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=_env_int("BENCH_SESSIONS"),
        help="sessions seeded, each with 1 result, 20 discrepancies and 2 "
        "behavioral tests (default 10000; BENCH_SESSIONS)",
    )
    parser.add_argument(
        "--duration",
        type=_duration,
        default=_env_duration("BENCH_DURATION"),
        help="measured time per point, e.g. 10s (default 10s; BENCH_DURATION)",
    )
    parser.add_argument(
        "--warmup",
        type=_duration,
        default=_env_duration("BENCH_WARMUP"),
        help="unmeasured load before each point (default 3s; BENCH_WARMUP)",
    )
    parser.add_argument(
        "--concurrency",
        type=_ints,
        default=_ints(env.get("BENCH_CONCURRENCY", "8,32")),
        help="wrk connections per point (default 8,32; BENCH_CONCURRENCY)",
    )
    parser.add_argument(
        "--backends",
        type=_backends,
        default=_backends(env.get("BENCH_BACKENDS", "pg,sqlite")),
        help="databases (default pg,sqlite; BENCH_BACKENDS)",
    )
    parser.add_argument(
        "--write-sizes",
        type=_ints,
        default=_ints(env.get("BENCH_WRITE_SIZES", "1000,10000")),
        help="discrepancies per recorded result (default 1000,10000)",
    )
    parser.add_argument(
        "--write-runs",
        type=int,
        default=_env_int("BENCH_WRITE_RUNS"),
        help="timed runs per write size and method; the median is shown "
        "(default 3; BENCH_WRITE_RUNS)",
    )
    parser.add_argument("--no-writes", action="store_true", help="skip the write comparison")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--pg-admin-dsn",
        default=env.get("BENCH_PG_ADMIN_DSN", DEFAULT_PG_ADMIN_DSN),
        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE "
        f"(default {DEFAULT_PG_ADMIN_DSN}; BENCH_PG_ADMIN_DSN)",
    )
    parser.add_argument(
        "--pg-database",
        default="migval_bench",
        help="scratch database, dropped and recreated (default migval_bench)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        help="log level of every server (default warning: no access log)",
    )
    parser.add_argument(
        "--no-orjson",
        action="store_true",
        help="floors B and C serialize with the stdlib json, not orjson",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.sessions = args.sessions or (2_000 if quick else 10_000)
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 3.0)
    args.write_runs = args.write_runs or (1 if quick else 3)
    if args.sessions < SESSIONS_FIRST:
        parser.error(f"--sessions must be at least {SESSIONS_FIRST}")
    return args


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    return int(raw) if raw else None


def _env_duration(name: str) -> float | None:
    raw = os.environ.get(name)
    return _duration(raw) if raw else None


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
        return {**os.environ, "MIGVAL_ENV": "development", "PYTHONUNBUFFERED": "1"}

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
        host = plan.pg.host_port[0]
        dsn = plan.pg.dsn.replace(f"{host}:{plan.pg.host_port[1]}", f"127.0.0.1:{port}", 1)
        if dsn == plan.pg.dsn:
            raise BenchError(
                "cannot route the counting run through the proxy: put host:port in --pg-admin-dsn"
            )
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
        db_ticks: Callable[[], dict[int, int]] | None = None
        if server.name.endswith("-pg") and plan.pg is not None:
            db_ticks = functools.partial(pg_backend_ticks, plan.pg.database)

        for concurrency in plan.args.concurrency:
            point = await load.run_point(
                wrk,
                script,
                server,
                concurrency,
                plan.args.duration,
                plan.args.warmup,
                plan.args.wrk_threads,
                db_ticks,
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


async def main_async(args: argparse.Namespace) -> None:
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
                "answer": f"{size:,} bytes, {objects:,} objects",
            }
            print_report(context, results, counts, same_notes, statement_notes, write_results)
            say(f"\ntotal time {time.perf_counter() - began:.0f}s")
        finally:
            stop_all()
            if pg is not None:
                try:
                    await seed.pg_drop(pg)
                except (OSError, asyncpg.PostgresError) as error:
                    say(f"could not drop {pg.database}: {error}")


def print_report(
    context: Mapping[str, str],
    results: Sequence[load.LoadResult],
    counts: Mapping[str, float | None],
    same_notes: Sequence[str],
    statement_notes: Sequence[str],
    write_results: Sequence[writes.WriteResult],
) -> None:
    rows = report.rows(results, counts)
    say("\n== context")
    for key, value in context.items():
        say(f"  {key}: {value}")
    say(
        "\n== reads: the dashboard query (sessions(first: 50) with nested results, "
        "20 discrepancies and tests each)"
    )
    say(report.reads_table(rows))
    say(
        "\n== migval as a ratio of the floors (migval figure / floor figure; "
        "req/s < 1 and the others > 1 mean migval costs more)"
    )
    say(report.ratio_table(rows))
    if write_results:
        say("\n== writes: recordValidationResult with N discrepancies (median ms)")
        say(report.writes_table(write_results))
    say("\n== notes")
    for note in [*same_notes, *statement_notes]:
        say("  " + note)
    for r in results:
        if r.errors:
            say(
                f"  WARNING: {r.server} c={r.concurrency}: {r.errors} failed requests "
                "(non-2xx or socket errors, timeouts included)"
            )
    noisy = max((r.other_cores for r in results), default=0.0)
    if noisy > NOISY_CORES:
        say(
            f"  WARNING: other processes used up to {noisy:.2f} of {os.cpu_count()} cores "
            "during the measurements: the figures are disturbed (see 'other load')"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    try:
        asyncio.run(main_async(args))
    except BenchError as error:
        print(f"\nbench: ABORTED: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            "\nbench: interrupted; servers stopped, scratch databases dropped",
            file=sys.stderr,
            flush=True,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
