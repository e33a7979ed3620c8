"""SQL for audit_log: append inside the caller's transaction, keyset listing.

There is deliberately no update or delete here: the log is append-only (on
PostgreSQL a trigger enforces it; docs/decisions/0004-audit-log.md).
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.audit import (
    AuditEntry,
    AuditLogFilter,
    AuditOperation,
    EntityType,
    RetentionMark,
)
from persistence.filters import SortDirection
from persistence.models import (
    AuditLogEntry,
    BehavioralTestResult,
    ValidationDiscrepancy,
    ValidationResult,
)
from persistence.pagination import Keyset, Page
from persistence.records import Record
from persistence.repositories.base import keyset_page

A = AuditLogEntry


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(self, entry: AuditEntry) -> int:
        """Insert ``entry`` (redacted by ``AuditEntry.values``) in the caller's
        transaction; returns its id. One INSERT, no read-back."""
        stmt = sa.insert(A).values(**entry.values()).returning(_c("id"))
        return int((await self.session.execute(stmt)).scalar_one())

    async def retention_mark(self) -> RetentionMark | None:
        """What retention cleanup has deleted so far (None: nothing): the latest
        cleanup entry carries the running mark. Entries written before marks existed
        count with the latest of their cutoffs (every session they deleted was older;
        a child of one may have been newer). Found through the entity index: cleanup
        entries are about several sessions."""
        entries = (
            sa.select(_c("after"))
            .where(
                _c("entity_type") == EntityType.SESSION.value,
                _c("entity_id").is_(None),
                _c("operation") == AuditOperation.RETENTION_CLEANUP.value,
            )
            .order_by(_c("id").desc())
        )
        newest = (await self.session.execute(entries.limit(1))).scalar_one_or_none()
        if newest is None:
            return None
        mark = RetentionMark.of(newest)
        if mark is not None:
            return mark
        cutoffs = [
            datetime.fromisoformat(after["cutoff"])
            for after in (await self.session.scalars(entries)).all()
            if isinstance(after, dict) and isinstance(after.get("cutoff"), str)
        ]
        return RetentionMark(max(cutoffs)) if cutoffs else None

    async def list_page(
        self, filter_: AuditLogFilter, first: int, after: Keyset | None
    ) -> Page[Record]:
        """Newest first, keyset on (created_at, id)."""
        return await keyset_page(
            self.session,
            A,
            audit_conditions,
            filter_,
            "created_at",
            SortDirection.DESC,
            first,
            after,
        )

    async def session_child_counts(self, session_id: int) -> dict[str, int]:
        """How many results, discrepancies and behavioral tests a session has (the
        audit snapshot of a delete records what the cascade removes). One statement."""

        def count(model: type[Any]) -> sa.ScalarSelect[int]:
            table = model.__table__
            return (
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c.session_id == session_id)
                .scalar_subquery()
            )

        stmt = sa.select(
            count(ValidationResult).label("results"),
            count(ValidationDiscrepancy).label("discrepancies"),
            count(BehavioralTestResult).label("behavioral_tests"),
        )
        row = (await self.session.execute(stmt)).one()
        return {key: int(value) for key, value in row._mapping.items()}


def audit_conditions(f: AuditLogFilter) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if f.operations:
        conds.append(_c("operation").in_(f.operations))
    if f.entity_type is not None:
        conds.append(_c("entity_type") == f.entity_type)
    if f.entity_id is not None:
        conds.append(_c("entity_id") == f.entity_id)
    if f.actor_name is not None:
        conds.append(_c("actor_name") == f.actor_name)
    if f.actor_token_id is not None:
        conds.append(_c("actor_token_id") == f.actor_token_id)
    if f.request_id is not None:
        conds.append(_c("request_id") == f.request_id)
    if f.created_from is not None:
        conds.append(_c("created_at") >= f.created_from)
    if f.created_to is not None:
        conds.append(_c("created_at") < f.created_to)
    return conds


def _c(name: str) -> sa.Column[Any]:
    return A.__table__.c[name]  # type: ignore[attr-defined,no-any-return]
