"""Server processes: start, wait for /readyz, measure CPU, stop (always).

Every process is started in its own session (process group), so stopping it ends the
whole tree the harness started (``uv run`` and the Python server under it) and nothing
else. Servers still registered at exit are stopped by an atexit hook.
"""

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 60.0

_RUNNING: list["Server"] = []


class BenchError(RuntimeError):
    """A failure that stops the benchmark (the message says why)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uv_command() -> list[str]:
    """How to call uv: $UV (the Makefile passes its own), else uv on PATH."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        raise BenchError("uv not found: run through `make bench` or put uv on PATH")
    return [uv, "run", "--frozen"]


@dataclass
class Server:
    """One server process tree; ``ready_path`` must answer 200 once it can serve."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    port: int
    log_path: Path
    ready_path: str = "/readyz"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own fixed commands
            list(self.argv),
            env=dict(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        _RUNNING.append(self)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        async with httpx.AsyncClient(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise BenchError(f"{self.name} exited during startup:\n{self.log_tail()}")
                try:
                    response = await client.get(self.url + self.ready_path)
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as error:
                    last = type(error).__name__
                await asyncio.sleep(0.2)
        raise BenchError(
            f"{self.name} not ready after {timeout_s:.0f}s ({last}):\n{self.log_tail()}"
        )

    def pids(self) -> list[int]:
        return [] if self.process is None else process_tree(self.process.pid)

    def cpu_ms(self) -> float:
        """CPU (user + system) of the whole tree so far, in ms: /proc/<pid>/stat, which
        includes every thread (aiosqlite's too), exited ones as well; 10 ms ticks."""
        return ticks_to_ms(sum(_cpu_ticks(pid) for pid in self.pids()))

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if self in _RUNNING:
            _RUNNING.remove(self)
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the group we created
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


atexit.register(stop_all)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP stop every server at once, then unwind like Ctrl-C
    so every ``finally`` runs (scratch databases are dropped); a second signal exits.
    Installed for SIGINT too: a shell starts background jobs with SIGINT ignored, and
    asyncio would otherwise take it over."""
    received = 0

    def _handle(signum: int, _frame: object) -> None:
        nonlocal received
        received += 1
        stop_all()
        if received > 1:
            raise SystemExit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _handle)


# --- /proc ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _cpu_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return 0 if fields is None else int(fields[11]) + int(fields[12])


def _all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _precise_cpu_ms(pid: int) -> float:
    """CPU of a single-threaded process in ms, to the nanosecond: the first field of
    /proc/<pid>/schedstat (time on CPU); the 10 ms ticks of /proc/<pid>/stat otherwise."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6
    except (OSError, ValueError, IndexError):
        return ticks_to_ms(_cpu_ticks(pid))


def pg_backend_cpu_ms(database: str) -> dict[int, float]:
    """CPU (ms) of every PostgreSQL backend connected to ``database`` (cmdline
    ``postgres: <cluster>: <user> <database> <client> <state>``), by pid. Backends are
    single-threaded, so schedstat is exact: per-request figures well under a tick."""
    found: dict[int, float] = {}
    for pid in _all_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("postgres:") and f" {database} " in cmdline:
            found[pid] = _precise_cpu_ms(pid)
    return found


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU spent between two snapshots; a backend born in between started at 0."""
    return sum(spent - before.get(pid, 0.0) for pid, spent in after.items())


def ticks_to_ms(ticks: int) -> float:
    return ticks * 1000.0 / CLOCK_TICKS
