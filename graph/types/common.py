"""Building blocks shared by the object types: Node, connections, enums, JSON."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Generic, Self, TypeVar

import strawberry
from strawberry.scalars import JSON

from graph.ids import to_global_id
from persistence.enums import (
    ExecutionStatus,
    InputType,
    MetricPeriod,
    OverallStatus,
    ResultType,
    SessionStatus,
    SeverityLevel,
    TechnologyType,
    ValidationScope,
)
from persistence.pagination import Page, encode_cursor

T = TypeVar("T")
R = TypeVar("R")

# Registered on the persistence enums themselves, so one class serves both layers.
strawberry.enum(TechnologyType, description="Application stack.")
strawberry.enum(ValidationScope, description="What a session validates.")
strawberry.enum(InputType, description="Kind of input given for one side.")
strawberry.enum(SeverityLevel, description="How serious a discrepancy is.")
strawberry.enum(
    SessionStatus,
    description="Session lifecycle: PENDING -> PROCESSING -> COMPLETED | FAILED; CANCELLED.",
)
strawberry.enum(OverallStatus, description="Verdict of a validation result.")
strawberry.enum(ResultType, description="How a result was produced.")
strawberry.enum(ExecutionStatus, description="Outcome of one behavioral test scenario.")
strawberry.enum(MetricPeriod, description="Aggregation period (UTC).")

__all__ = [
    "JSON",
    "ExecutionStatus",
    "InputType",
    "MetricPeriod",
    "OverallStatus",
    "ResultType",
    "SessionStatus",
    "SeverityLevel",
    "TechnologyType",
    "ValidationScope",
]


def desc(text: str) -> Any:
    """A field with a description (every field has one)."""
    return strawberry.field(description=text)


def optional(text: str) -> Any:
    """An optional input field (default null) with a description."""
    return strawberry.field(default=None, description=text)


@strawberry.interface(description="An object with a global ID (Relay).")
class Node:
    id: strawberry.ID = strawberry.field(description="Global ID, usable with node(id:).")


@strawberry.type(description="Pagination state of a connection.")
class PageInfo:
    has_next_page: bool = desc("Whether more items follow the last edge.")
    has_previous_page: bool = desc(
        "Whether items precede the first edge (true when `after` was given)."
    )
    start_cursor: str | None = desc("Cursor of the first edge.")
    end_cursor: str | None = desc("Cursor of the last edge; pass it as `after` for the next page.")


@strawberry.type(description="An item of a connection with its cursor.")
class Edge(Generic[T]):
    cursor: str = desc("Opaque keyset cursor of this item.")
    node: T = desc("The item.")


@strawberry.type(description="A page of items (keyset pagination).")
class Connection(Generic[T]):
    edges: list[Edge[T]] = desc("The items of this page with their cursors.")
    page_info: PageInfo = desc("Pagination state.")
    total_count: int = desc("Number of items matching the filter, over all pages.")

    @strawberry.field(description="The items of this page, without cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def connection_from_page(
    page: Page[R],
    convert: Callable[[R], T],
    sort_value: Callable[[R], Any],
    had_after: bool,
) -> Connection[T]:
    edges = [
        Edge(cursor=encode_cursor(sort_value(row), row.id), node=convert(row))  # type: ignore[attr-defined]
        for row in page.items
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next_page,
            has_previous_page=had_after,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=page.total_count,
    )


def row_id(row: Any) -> int:
    """The sort value of listings ordered by id (their cursors carry it)."""
    return int(row.id)


class FromRow:
    """Builds a type from a table row: same-named columns, plus ``id`` (global) and
    ``database_id``; relations resolve through loaders, never from the row."""

    @classmethod
    def from_row(cls, row: Any) -> Self:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if not f.init:
                continue
            if f.name == "id":
                values["id"] = strawberry.ID(to_global_id(cls.__name__, row.id))
            elif f.name == "database_id":
                values["database_id"] = row.id
            else:
                values[f.name] = getattr(row, f.name)
        return cls(**values)


def from_rows(cls: type[Any], rows: Sequence[Any]) -> list[Any]:
    return [cls.from_row(row) for row in rows]
