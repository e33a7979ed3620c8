"""Load with wrk: a Lua script POSTs the dashboard query; throughput and latency
percentiles come from wrk's --latency report, CPU from /proc before and after."""

import asyncio
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.query import DASHBOARD_BODY
from bench.servers import BenchError, Server, cpu_delta, ticks_to_ms

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True, slots=True)
class LoadResult:
    server: str
    concurrency: int
    requests: int
    seconds: float
    rps: float | None  # None: no request completed
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_ms: float  # per request started (see run_point)
    db_cpu_ms: float | None  # per request; None: in-process database (SQLite)
    errors: int  # non-2xx responses + socket errors
    # CPU used meanwhile by processes outside the benchmark (other users of the
    # machine), in cores: the figures are trustworthy only when it is near 0.
    other_cores: float


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: apt-get install -y wrk", flush=True)
        for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
            subprocess.run(args, check=False, stdout=subprocess.DEVNULL)  # noqa: S603
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError("wrk not found: install it (Debian: apt-get install wrk)")


def write_script(directory: Path) -> Path:
    """The Lua script: POST the dashboard body as JSON."""
    body = DASHBOARD_BODY.decode()
    if "]==]" in body:
        raise BenchError("query text cannot be quoted for Lua")
    path = directory / "dashboard.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise BenchError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    def grab(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"cannot read wrk output ({pattern!r}):\n{output}")
        return match

    done = grab(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket:
        errors += sum(int(g) for g in socket.groups())
    return {
        "requests": float(done.group(1)),
        "seconds": _ms(done.group(2) + done.group(3)) / 1000.0,
        "rps": float(grab(r"^Requests/sec:\s+([\d.]+)").group(1)),
        "p50_ms": _ms(grab(r"^\s+50%\s+(\S+)").group(1)),
        "p99_ms": _ms(grab(r"^\s+99%\s+(\S+)").group(1)),
        "errors": float(errors),
    }


async def _wrk(
    wrk: str, script: Path, url: str, connections: int, seconds: float, threads: int
) -> str:
    process = await asyncio.create_subprocess_exec(
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"wrk failed ({process.returncode}):\n{text}")
    return text


def _machine_busy_ticks() -> int:
    """Busy CPU of the whole machine since boot (user, nice, system, irq, softirq,
    steal), in clock ticks."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def _own_ms() -> float:
    """CPU of this process and its reaped children (wrk), in ms."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime) * 1000


async def _drained(server: Server, limit_s: float = 60.0) -> None:
    """Wait until the server's CPU stops moving: the requests in flight when wrk
    stopped have been computed (uvicorn finishes them; the answers go nowhere)."""
    deadline = time.monotonic() + limit_s
    last, still = server.cpu_ms(), 0
    while still < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = server.cpu_ms()
        still = still + 1 if now == last else 0
        last = now


async def run_point(
    wrk: str,
    script: Path,
    server: Server,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    threads: int,
    db_cpu: Callable[[], Mapping[int, float]] | None,
) -> LoadResult:
    """Warm up (not measured), let the server go idle, then one measured wrk run.

    CPU per request: the server's (and the database backends') CPU from the start of
    the run until the server is idle again, over the requests started: those wrk
    completed plus the ``concurrency`` still in flight when it stopped (wrk keeps
    exactly one outstanding request per connection). So a slow server is not flattered
    or penalised by the requests cut off at the end of the run.
    """
    url = server.url + "/graphql"
    if warmup_s > 0:
        await _wrk(wrk, script, url, concurrency, warmup_s, threads)
    await _drained(server)
    server_before = server.cpu_ms()
    db_before = db_cpu() if db_cpu else {}
    busy_before, own_before, started = _machine_busy_ticks(), _own_ms(), time.monotonic()
    output = await _wrk(wrk, script, url, concurrency, duration_s, threads)
    wall_ms = (time.monotonic() - started) * 1000
    busy_ms = ticks_to_ms(_machine_busy_ticks() - busy_before)
    own_ms = _own_ms() - own_before
    window_server_ms = server.cpu_ms() - server_before
    window_db_ms = cpu_delta(db_before, db_cpu()) if db_cpu else 0.0
    await _drained(server)
    server_ms = server.cpu_ms() - server_before
    db_ms = cpu_delta(db_before, db_cpu()) if db_cpu else None
    figures = parse_wrk(output)
    requests = int(figures["requests"])
    started_requests = requests + concurrency
    other_ms = busy_ms - own_ms - window_server_ms - window_db_ms
    return LoadResult(
        server=server.name,
        concurrency=concurrency,
        requests=requests,
        seconds=figures["seconds"],
        rps=figures["rps"] if requests else None,
        p50_ms=figures["p50_ms"] if requests else None,
        p99_ms=figures["p99_ms"] if requests else None,
        server_cpu_ms=server_ms / started_requests,
        db_cpu_ms=None if db_ms is None else db_ms / started_requests,
        errors=int(figures["errors"]),
        other_cores=max(0.0, other_ms / wall_ms),
    )
