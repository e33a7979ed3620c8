"""Rows as reads return them: plain column values by attribute, no ORM identity map.

Reads for display (loaders, listings) fetch Core rows, or ``driver_reads.Row`` tuples
from fixed statements, which cost a fraction of ORM objects to build; the services
that change data still work on ORM objects. Both kinds of row hold the columns in the
statement's order (by position, by attribute and by name in ``_mapping``).
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.driver_reads import FixedRead

if TYPE_CHECKING:
    from persistence.crypto import SealedTable


class Record(Protocol):
    """A row read for display: column values as attributes, by position, and by name
    in ``_mapping`` (a Core ``Row`` or a ``driver_reads.Row``)."""

    def __getattr__(self, name: str) -> Any: ...

    def __getitem__(self, index: int) -> Any: ...


async def fetch_records(
    session: AsyncSession,
    stmt: sa.Select[Any] | FixedRead,
    sealed: "SealedTable | None" = None,
    params: Mapping[str, Any] | None = None,
) -> list[Record]:
    """The rows of ``stmt`` (with bound ``params``); with ``sealed``, encrypted cells
    come back as plaintext."""
    rows: Sequence[Record]
    if isinstance(stmt, FixedRead):
        rows = await stmt.fetch(session, params or {})
    else:
        rows = (await session.execute(stmt, params)).all()
    return list(rows) if sealed is None else [sealed.open_row(row) for row in rows]
