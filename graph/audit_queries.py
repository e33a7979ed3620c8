"""The audit log query (admins only), merged into the root Query by graph.schema."""

from typing import Annotated

import strawberry

from graph.context import Context
from graph.permissions import IsAdmin
from graph.types.audit import AuditLogEntry, AuditLogFilterInput, to_audit_filter
from graph.types.common import Connection, connection_from_page
from graph.types.pagination import After, First, page_args
from persistence.repositories.audit import AuditRepository

Info = strawberry.Info[Context, None]


@strawberry.type(description="Read access to the audit trail.")
class AuditQuery:
    @strawberry.field(
        description=(
            "Audit log entries, newest first (by recording time, then key). Requires the "
            "admin role."
        ),
        permission_classes=[IsAdmin],
    )
    async def audit_log(
        self,
        info: Info,
        filter: Annotated[
            AuditLogFilterInput | None,
            strawberry.argument(description="Conditions entries must meet."),
        ] = None,
        first: First = 20,
        after: After = None,
    ) -> Connection[AuditLogEntry]:
        size, keyset = page_args(first, after)
        conditions = to_audit_filter(filter)
        async with info.context.db.read_session() as session:
            page = await AuditRepository(session).list_page(conditions, size, keyset)
        return connection_from_page(
            page, AuditLogEntry.from_row, lambda r: r.created_at, after is not None
        )
