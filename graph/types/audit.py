"""AuditLogEntry: one change recorded in the append-only audit trail (admins only)."""

from datetime import datetime
from typing import Any, Self

import strawberry

from graph.errors import BadUserInput
from graph.ids import from_global_id, to_global_id
from graph.types.common import JSON, desc
from persistence.audit import AuditLogFilter, EntityType
from persistence.errors import ValidationFailed

# Entity types of the log and the GraphQL types of the objects they name.
_NODE_TYPE_OF_ENTITY = {
    EntityType.SESSION.value: "ValidationSession",
    EntityType.RESULT.value: "ValidationResult",
    EntityType.DISCREPANCY.value: "Discrepancy",
    EntityType.BEHAVIORAL_TEST.value: "BehavioralTestResult",
}
_ENTITY_OF_NODE_TYPE = {node: entity for entity, node in _NODE_TYPE_OF_ENTITY.items()}


@strawberry.type(
    description=(
        "One successful change, recorded in the same transaction as the change itself. "
        "Append-only; secrets in the snapshots are replaced by [REDACTED]."
    )
)
class AuditLogEntry:
    database_id: strawberry.ID = desc("Database key of the entry (64-bit, so given as a string).")
    operation: str = desc("What was done, named after the mutation (e.g. createValidationSession).")
    entity_type: str = desc(
        "Table of the changed row(s): validation_sessions, validation_results, validation_discrepancies or behavioral_test_results."
    )
    entity_id: str | None = desc(
        "Database id of the changed row; null for entries about several rows (their ids are in `after`)."
    )
    entity_global_id: strawberry.ID | None = desc(
        "Global ID of the changed object, usable with node(id:) while it exists; null for several rows."
    )
    actor_name: str = desc(
        'Who did it: the API token\'s name, "anonymous" or "system" (CLI and jobs).'
    )
    actor_role: str | None = desc(
        "The actor's role at the time (viewer, writer, admin); null if anonymous without a role."
    )
    actor_token_id: int | None = desc("Database id of the API token used; null without a token.")
    before: JSON | None = desc("Relevant state before the change (redacted); null for creations.")
    after: JSON | None = desc("Relevant state after the change (redacted); null for deletions.")
    request_id: str | None = desc(
        "Request id of the API call (X-Request-ID), to match server logs."
    )
    client_address: str | None = desc("Network address of the client, as the server saw it.")
    created_at: datetime = desc(
        "When it was recorded: the database clock in the change's transaction (UTC)."
    )

    @classmethod
    def from_row(cls, row: Any) -> Self:
        node_type = _NODE_TYPE_OF_ENTITY.get(row.entity_type)
        global_id = None
        if node_type is not None and row.entity_id is not None and row.entity_id.isdigit():
            global_id = strawberry.ID(to_global_id(node_type, int(row.entity_id)))
        return cls(
            database_id=strawberry.ID(str(row.id)),
            operation=row.operation,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            entity_global_id=global_id,
            actor_name=row.actor_name,
            actor_role=row.actor_role,
            actor_token_id=row.actor_token_id,
            before=row.before,
            after=row.after,
            request_id=row.request_id,
            client_address=row.client_address,
            created_at=row.created_at,
        )


@strawberry.input(description="Filter of the audit log; all given conditions must hold.")
class AuditLogFilterInput:
    operation: list[str] | None = strawberry.field(
        default=None, description="Any of these operations (e.g. deleteSession)."
    )
    entity: strawberry.ID | None = strawberry.field(
        default=None,
        description="Only entries about this object (global ID of a session, result, discrepancy or behavioral test).",
    )
    entity_type: str | None = strawberry.field(
        default=None,
        description="Only entries about rows of this table (e.g. validation_sessions).",
    )
    entity_id: str | None = strawberry.field(
        default=None,
        description="Only entries about the row with this database id (use with entityType).",
    )
    actor_name: str | None = strawberry.field(
        default=None, description="Only changes by this actor (token name, anonymous or system)."
    )
    actor_token_id: int | None = strawberry.field(
        default=None, description="Only changes made with this API token (database id)."
    )
    request_id: str | None = strawberry.field(
        default=None, description="Only changes of the request with this X-Request-ID."
    )
    created_from: datetime | None = strawberry.field(
        default=None, description="Recorded at or after this instant."
    )
    created_to: datetime | None = strawberry.field(
        default=None, description="Recorded before this instant."
    )


def to_audit_filter(f: AuditLogFilterInput | None) -> AuditLogFilter:
    """The persistence filter, or BAD_USER_INPUT naming the argument at fault."""
    if f is None:
        return AuditLogFilter()
    entity_type, entity_id = f.entity_type, f.entity_id
    try:
        if f.entity is not None:
            if entity_type is not None or entity_id is not None:
                raise ValidationFailed(
                    "filter.entity", "give either entity or entityType/entityId, not both"
                )
            node_type, db_id = from_global_id(f.entity, "filter.entity")
            if node_type not in _ENTITY_OF_NODE_TYPE:
                raise ValidationFailed("filter.entity", f"{node_type} objects are not audited")
            entity_type, entity_id = _ENTITY_OF_NODE_TYPE[node_type], str(db_id)
        for name, value in (
            ("filter.createdFrom", f.created_from),
            ("filter.createdTo", f.created_to),
        ):
            if value is not None and value.tzinfo is None:
                raise ValidationFailed(name, "must include a timezone offset")
    except ValidationFailed as error:
        raise BadUserInput(error) from None
    return AuditLogFilter(
        operations=None if f.operation is None else tuple(f.operation),
        entity_type=entity_type,
        entity_id=entity_id,
        actor_name=f.actor_name,
        actor_token_id=f.actor_token_id,
        request_id=f.request_id,
        created_from=f.created_from,
        created_to=f.created_to,
    )
