"""Root query fields. Lists read through repositories on one short read session;
nested fields go through the request's loaders."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import strawberry

from graph.context import Context
from graph.errors import BadUserInput
from graph.ids import from_global_id
from graph.loaders import PageKey
from graph.permissions import IsViewer
from graph.types.behavioral_test import BehavioralTestResult
from graph.types.common import Connection, MetricPeriod, Node, connection_from_page, row_id
from graph.types.discrepancy import Discrepancy
from graph.types.inputs import (
    BehavioralTestFilterInput,
    DiscrepancyFilterInput,
    IdOrderInput,
    SessionFilterInput,
    SessionOrderInput,
    to_behavioral_filter,
    to_discrepancy_filter,
    to_id_order,
    to_session_filter,
    to_session_order,
)
from graph.types.metric import ValidationMetric
from graph.types.pagination import After, First, page_args
from graph.types.result import ValidationResult
from graph.types.session import ValidationSession
from persistence.errors import ValidationFailed
from persistence.filters import (
    BehavioralTestFilter,
    DiscrepancyFilter,
    IdOrder,
    SessionFilter,
    SessionOrder,
)
from persistence.records import Record
from persistence.services.metrics import MetricsService

Info = strawberry.Info[Context, None]


# Loader keys of the root listings, from the fields' arguments (graph.plan uses them too).
def session_page_key(
    filter: SessionFilterInput | None,
    order_by: SessionOrderInput | None,
    first: int,
    after: str | None,
) -> PageKey[SessionFilter, SessionOrder]:
    size, keyset = page_args(first, after)
    return PageKey(to_session_filter(filter), to_session_order(order_by), size, keyset)


def discrepancy_page_key(
    filter: DiscrepancyFilterInput | None,
    order_by: IdOrderInput | None,
    first: int,
    after: str | None,
) -> PageKey[DiscrepancyFilter, IdOrder]:
    size, keyset = page_args(first, after)
    return PageKey(to_discrepancy_filter(filter), to_id_order(order_by), size, keyset)


def behavioral_test_page_key(
    filter: BehavioralTestFilterInput | None,
    order_by: IdOrderInput | None,
    first: int,
    after: str | None,
) -> PageKey[BehavioralTestFilter, IdOrder]:
    size, keyset = page_args(first, after)
    return PageKey(to_behavioral_filter(filter), to_id_order(order_by), size, keyset)


def session_sort_value(key: PageKey[SessionFilter, SessionOrder]) -> Callable[[Record], Any]:
    """What a session listing's cursors carry besides the id: its sort column."""
    column = key.order.field.value
    return lambda row: getattr(row, column)


@strawberry.type(
    description="Read access to validation sessions, results, discrepancies and metrics."
)
class Query:
    @strawberry.field(
        description="Any object by its global ID; null if it does not exist.",
        permission_classes=[IsViewer],
    )
    async def node(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="Global ID.")],
    ) -> Node | None:
        try:
            type_name, db_id = from_global_id(id)
        except ValidationFailed as error:
            raise BadUserInput(error) from None
        loaders = info.context.loaders
        if type_name == "ValidationSession":
            session = await loaders.session_by_id.load(db_id)
            return None if session is None else ValidationSession.from_row(session)
        if type_name == "ValidationResult":
            result = await loaders.result_by_id.load(db_id)
            return None if result is None else ValidationResult.from_row(result)
        if type_name == "Discrepancy":
            discrepancy = await loaders.discrepancy_by_id.load(db_id)
            return None if discrepancy is None else Discrepancy.from_row(discrepancy)
        if type_name == "BehavioralTestResult":
            test = await loaders.behavioral_test_by_id.load(db_id)
            return None if test is None else BehavioralTestResult.from_row(test)
        if type_name == "ValidationMetric":
            metric = await loaders.metric_by_id.load(db_id)
            return None if metric is None else ValidationMetric.from_row(metric)
        return None

    @strawberry.field(
        description="A session by its requestId (natural key); null if unknown.",
        permission_classes=[IsViewer],
    )
    async def session(
        self,
        info: Info,
        request_id: Annotated[str, strawberry.argument(description="The session's requestId.")],
    ) -> ValidationSession | None:
        row = await info.context.loaders.session_by_request_id.load(request_id)
        return None if row is None else ValidationSession.from_row(row)

    @strawberry.field(
        description="Sessions matching a filter, newest first by default.",
        permission_classes=[IsViewer],
    )
    async def sessions(
        self,
        info: Info,
        filter: Annotated[
            SessionFilterInput | None,
            strawberry.argument(description="Conditions sessions must meet."),
        ] = None,
        order_by: Annotated[
            SessionOrderInput | None,
            strawberry.argument(description="Sort order (default newest first)."),
        ] = None,
        first: First = 20,
        after: After = None,
    ) -> Connection[ValidationSession]:
        key = session_page_key(filter, order_by, first, after)
        page = await info.context.loaders.session_page.load(key)
        return connection_from_page(
            page, ValidationSession.from_row, session_sort_value(key), after is not None
        )

    @strawberry.field(
        description="Discrepancies across sessions matching a filter.",
        permission_classes=[IsViewer],
    )
    async def discrepancies(
        self,
        info: Info,
        filter: Annotated[
            DiscrepancyFilterInput | None,
            strawberry.argument(description="Conditions discrepancies must meet."),
        ] = None,
        order_by: Annotated[
            IdOrderInput | None,
            strawberry.argument(description="Sort order (default oldest first)."),
        ] = None,
        first: First = 20,
        after: After = None,
    ) -> Connection[Discrepancy]:
        key = discrepancy_page_key(filter, order_by, first, after)
        page = await info.context.loaders.discrepancy_page.load(key)
        return connection_from_page(page, Discrepancy.from_row, row_id, after is not None)

    @strawberry.field(
        description="Behavioral test results matching a filter.",
        permission_classes=[IsViewer],
    )
    async def behavioral_tests(
        self,
        info: Info,
        filter: Annotated[
            BehavioralTestFilterInput | None,
            strawberry.argument(description="Conditions tests must meet."),
        ] = None,
        order_by: Annotated[
            IdOrderInput | None,
            strawberry.argument(description="Sort order (default oldest first)."),
        ] = None,
        first: First = 20,
        after: After = None,
    ) -> Connection[BehavioralTestResult]:
        key = behavioral_test_page_key(filter, order_by, first, after)
        page = await info.context.loaders.behavioral_test_page.load(key)
        return connection_from_page(page, BehavioralTestResult.from_row, row_id, after is not None)

    @strawberry.field(
        description="Metrics of a period kind, oldest first (at most 1000): stored rollups of closed periods, then live figures (databaseId 0, never stored) for the open period and closed periods not rolled up yet.",
        permission_classes=[IsViewer],
    )
    async def metrics(
        self,
        info: Info,
        period: Annotated[
            MetricPeriod,
            strawberry.argument(description="Which rollups: daily, weekly or monthly."),
        ],
        from_: Annotated[
            datetime | None,
            strawberry.argument(name="from", description="Periods starting at or after this."),
        ] = None,
        to: Annotated[
            datetime | None, strawberry.argument(description="Periods starting before this.")
        ] = None,
    ) -> list[ValidationMetric]:
        for name, value in (("from", from_), ("to", to)):
            if value is not None and value.tzinfo is None:
                raise BadUserInput(ValidationFailed(name, "must include a timezone offset"))
            if value is not None and not 2 <= value.year <= 9998:
                # Period arithmetic near year 1 or 9999 would overflow datetime.
                raise BadUserInput(ValidationFailed(name, "must be between years 2 and 9998"))
        # Stored rollups of closed periods plus live figures from the open period (and
        # closed ones not rolled up yet) on; live rows have databaseId 0.
        rows = await MetricsService(info.context.db).list_metrics(period, from_, to)
        return [ValidationMetric.from_row(r) for r in rows]
