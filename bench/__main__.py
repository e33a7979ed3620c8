"""``python -m bench`` (``make bench``): migval's dashboard read and bulk write, next to
hand-written floors, on PostgreSQL and SQLite. Prints figures; asserts nothing about
speed. Every process it starts and every scratch database it creates is removed at the
end, on errors and on Ctrl-C too. See bench/README.md.

This module holds the command line; bench.harness runs the phases.
"""

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence

from bench.harness import DEFAULT_PG_ADMIN_DSN, run
from bench.query import SESSIONS_FIRST
from bench.servers import BenchError, install_signal_handlers


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
        "(default 7; BENCH_WRITE_RUNS)",
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
        choices=("critical", "error", "warning", "info", "debug"),
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
    args.write_runs = args.write_runs or (1 if quick else 7)
    if args.sessions < SESSIONS_FIRST:
        parser.error(f"--sessions must be at least {SESSIONS_FIRST}")
    return args


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    return int(raw) if raw else None


def _env_duration(name: str) -> float | None:
    raw = os.environ.get(name)
    return _duration(raw) if raw else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    try:
        asyncio.run(run(args))
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
