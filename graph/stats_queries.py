"""Dashboard aggregate queries (viewers), merged into the root Query by graph.schema."""

from datetime import datetime
from typing import Annotated

import strawberry

from graph.context import Context
from graph.errors import BadUserInput
from graph.permissions import IsViewer
from graph.types.inputs import DiscrepancyFilterInput, to_discrepancy_filter
from graph.types.stats import (
    DiscrepancyGroupBy,
    DiscrepancyStatsRowType,
    TimeBucket,
    to_group_keys,
    to_period,
)
from persistence.errors import ValidationFailed
from persistence.repositories.discrepancy_stats import (
    MAX_STATS_ROWS,
    DiscrepancyStatsRepository,
)

Info = strawberry.Info[Context, None]


@strawberry.type(description="Dashboard aggregates.")
class StatsQuery:
    @strawberry.field(
        description=(
            "Discrepancy counts (and how many are resolved) grouped by any combination of "
            "keys and an optional time bucket of their creation time, computed by the "
            "database. Ordered by bucket, then by the keys in groupBy order (as text, "
            "nulls last). An empty groupBy without bucket gives one row of totals. At "
            f"most {MAX_STATS_ROWS} groups: more is a BAD_USER_INPUT error on groupBy "
            "(narrow the filter or use a coarser bucket), never a truncated answer."
        ),
        permission_classes=[IsViewer],
    )
    async def discrepancy_stats(
        self,
        info: Info,
        group_by: Annotated[
            list[DiscrepancyGroupBy],
            strawberry.argument(description="Keys to group by (duplicates are ignored)."),
        ],
        filter: Annotated[
            DiscrepancyFilterInput | None,
            strawberry.argument(description="Conditions discrepancies must meet."),
        ] = None,
        bucket: Annotated[
            TimeBucket | None,
            strawberry.argument(description="Also group by this period of createdAt (UTC)."),
        ] = None,
        from_: Annotated[
            datetime | None,
            strawberry.argument(name="from", description="Created at or after this instant."),
        ] = None,
        to: Annotated[
            datetime | None, strawberry.argument(description="Created before this instant.")
        ] = None,
    ) -> list[DiscrepancyStatsRowType]:
        for name, value in (("from", from_), ("to", to)):
            if value is not None and value.tzinfo is None:
                raise BadUserInput(ValidationFailed(name, "must include a timezone offset"))
        filter_ = to_discrepancy_filter(filter)
        try:
            async with info.context.db.read_session() as session:
                rows = await DiscrepancyStatsRepository(session).grouped(
                    filter_, to_group_keys(group_by), to_period(bucket), from_, to
                )
        except ValidationFailed as error:
            raise BadUserInput(error) from None
        return [DiscrepancyStatsRowType.from_row(row) for row in rows]
