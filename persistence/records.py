"""Rows as reads return them: plain column values by attribute, no ORM identity map.

Reads for display (loaders, listings) fetch Core rows, which cost a fraction of ORM
objects to build; the services that change data still work on ORM objects.
"""

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from persistence.crypto import SealedTable


class Record(Protocol):
    """A row read for display: column values as attributes, and by name in
    ``_mapping`` (a Core ``Row`` or an ``OpenedRow``)."""

    def __getattr__(self, name: str) -> Any: ...


class OpenedRow:
    """A row whose sealed columns were replaced by their plaintext (Core rows are
    immutable, so an opened one is a copy)."""

    __slots__ = ("_values",)
    _values: dict[str, Any]

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> Mapping[str, Any]:  # as a Core Row's
        return self._values

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("rows are read-only")

    def __repr__(self) -> str:
        return f"OpenedRow(id={self._values.get('id')!r})"


async def fetch_records(
    session: AsyncSession,
    stmt: sa.Select[Any],
    sealed: "SealedTable | None" = None,
    params: Mapping[str, Any] | None = None,
) -> list[Record]:
    """The rows of ``stmt`` (with bound ``params``); with ``sealed``, encrypted cells
    come back as plaintext."""
    rows: Iterable[Record] = (await session.execute(stmt, params)).all()
    return list(rows) if sealed is None else [sealed.open_row(row) for row in rows]
