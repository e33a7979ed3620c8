"""Per-request context: the database, fresh loaders and a request id."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from graph.loaders import Loaders
from graph.settings import PlanMode
from persistence.actor import SYSTEM, Actor
from persistence.database import DatabaseManager

if TYPE_CHECKING:
    from graph.observability import Metrics


@dataclass
class Context:
    db: DatabaseManager
    request_id: str
    request: Request | None = None
    response: Response | None = None
    # Who is asking; graph.schema sets it from the Authorization header.
    actor: Actor = SYSTEM
    # The app's metrics (graph.observability.OperationMetrics records into them).
    metrics: "Metrics | None" = None
    # How reads run (graph.plan; MIGVAL_EXECUTION_PLANS).
    plan_mode: PlanMode = PlanMode.ON
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.db)  # fresh per request: no cross-request cache
