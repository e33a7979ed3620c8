"""``migval maintenance``: the periodic routine for cron, in order:

1. ``rollup``: metrics rollup of the recent days (``persistence.services.metrics.
   run_rollup(db, full=False[, days=N])``; without N the rollup's own default window),
   first, so sessions about to be deleted are counted in validation_metrics; skipped
   (and said so) when this build has no rollup;
2. ``cleanup``: retention (``persistence.maintenance.cleanup``);
3. ``optimize``: VACUUM/ANALYZE (``persistence.maintenance.optimize``);
4. ``validate``: integrity checks (``persistence.maintenance.integrity``).

Every step runs even when an earlier one failed (each is independent); the routine
fails when any step failed or validation found problems.
"""

import importlib
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from persistence.database import DatabaseManager
from persistence.maintenance.cleanup import cleanup
from persistence.maintenance.integrity import validate
from persistence.maintenance.optimize import optimize

ROLLUP_MODULE = "persistence.services.metrics"
ROLLUP_FUNCTION = "run_rollup"
STEPS = ("rollup", "cleanup", "optimize", "validate")


class StepStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class StepResult:
    name: str
    status: StepStatus
    seconds: float
    detail: str

    def line(self) -> str:
        return f"maintenance {self.name}: {self.status.value} ({self.seconds:.2f}s) {self.detail}"


def find_rollup() -> Callable[..., Awaitable[Any]] | None:
    """``run_rollup`` if this build has it (it lives with the metrics service)."""
    try:
        module = importlib.import_module(ROLLUP_MODULE)
    except ModuleNotFoundError as error:
        if error.name == ROLLUP_MODULE:
            return None
        raise
    found = getattr(module, ROLLUP_FUNCTION, None)
    return found if callable(found) else None


async def run_routine(
    db: DatabaseManager,
    *,
    retention_days: int,
    rollup_days: int | None = None,
    skip: frozenset[str] = frozenset(),
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    async def rollup() -> tuple[StepStatus, str]:
        fn = find_rollup()
        if fn is None:
            return StepStatus.SKIPPED, f"{ROLLUP_MODULE}.{ROLLUP_FUNCTION} is not available"
        if rollup_days is None:
            outcome = await fn(db, full=False)
            window = "default window"
        else:
            outcome = await fn(db, full=False, days=rollup_days)
            window = f"last {rollup_days} days"
        return StepStatus.OK, f"{window}: {_describe_rollup(outcome)}"

    async def do_cleanup() -> tuple[StepStatus, str]:
        report = await cleanup(db, retention_days)
        return StepStatus.OK, report.summary()

    async def do_optimize() -> tuple[StepStatus, str]:
        report = await optimize(db)
        return StepStatus.OK, report.summary()

    async def do_validate() -> tuple[StepStatus, str]:
        report = await validate(db)
        return (StepStatus.OK if report.ok else StepStatus.FAILED), report.summary()

    actions: dict[str, Callable[[], Awaitable[tuple[StepStatus, str]]]] = {
        "rollup": rollup,
        "cleanup": do_cleanup,
        "optimize": do_optimize,
        "validate": do_validate,
    }
    results = []
    for name in STEPS:
        started = time.perf_counter()
        if name in skip:
            status, detail = StepStatus.SKIPPED, "skipped on request (--skip)"
        else:
            try:
                status, detail = await actions[name]()
            except Exception as error:  # one failed step must not stop the others
                frame = traceback.extract_tb(error.__traceback__)[-1:]
                where = f" at {frame[0].filename}:{frame[0].lineno}" if frame else ""
                first = str(error).strip().splitlines()
                status = StepStatus.FAILED
                detail = f"{type(error).__name__}: {first[0] if first else ''}{where}"
        result = StepResult(name, status, time.perf_counter() - started, detail)
        results.append(result)
        if on_step is not None:
            on_step(result)
    return results


def _describe_rollup(outcome: Any) -> str:
    """One line from the rollup's report (per period: computed/inserted/updated)."""
    parts = []
    for period in getattr(outcome, "periods", ()) or ():
        kind = getattr(period, "period", "?")
        name = getattr(kind, "value", kind)
        figures = [
            f"{getattr(period, key, '?')} {key}" for key in ("computed", "inserted", "updated")
        ]
        parts.append(f"{name} {', '.join(figures)}")
    return "; ".join(parts) if parts else "done"
