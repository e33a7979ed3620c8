"""The relations a plan can follow: for each ``Type.field``, the loader that serves it
and the loader key for a parent row and the field's arguments. The keys come from the
same functions the resolvers call, so both paths load exactly the same thing."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from strawberry.dataloader import DataLoader

from graph.loaders import Loaders
from graph.queries import (
    behavioral_test_page_key,
    discrepancy_page_key,
    session_page_key,
    session_sort_value,
)
from graph.types.common import row_id
from graph.types.session import session_discrepancies_key
from persistence.records import Record

Kind = Literal["one", "list", "page"]
Args = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Fetch:
    """How a field reaches its rows.

    ``parent``: the parent row's column holding the id the key is built from (None for
    root fields); ``key``: (that id, converted arguments) -> loader key; a None id
    means no row (nullable foreign keys). ``sort_value``: for pages, key -> the row's
    cursor sort value (as the resolver's ``connection_from_page`` gets it). ``narrow``:
    the name of the same loader reading fewer columns (``Loaders.narrow``)."""

    loader: Callable[[Loaders], DataLoader[Any, Any]]
    key: Callable[[Any, Args], Any]
    kind: Kind
    target: str  # GraphQL type of the rows
    parent: str | None = None
    sort_value: Callable[[Any], Callable[[Record], Any]] | None = None
    # Loaders.narrow name: the plan reads only the columns its selection needs.
    narrow: str | None = None


def _by_id(_key: Any) -> Callable[[Record], Any]:
    return row_id


def _page(build: Callable[..., Any]) -> Callable[[Any, Args], Any]:
    return lambda _parent, a: build(a.get("filter"), a.get("order_by"), a["first"], a.get("after"))


# A result's, a discrepancy's or a behavioral test's session.
_SESSION_OF_ROW = Fetch(
    lambda ls: ls.session_by_id, lambda p, _a: p, "one", "ValidationSession", "session_id"
)

FETCHES: Mapping[str, Fetch] = {
    # Root listings and lookups.
    "Query.sessions": Fetch(
        lambda ls: ls.session_page, _page(session_page_key), "page", "ValidationSession",
        sort_value=session_sort_value, narrow="session_page",
    ),
    "Query.discrepancies": Fetch(
        lambda ls: ls.discrepancy_page, _page(discrepancy_page_key), "page", "Discrepancy",
        sort_value=_by_id, narrow="discrepancy_page",
    ),
    "Query.behavioralTests": Fetch(
        lambda ls: ls.behavioral_test_page, _page(behavioral_test_page_key), "page",
        "BehavioralTestResult", sort_value=_by_id, narrow="behavioral_test_page",
    ),
    "Query.session": Fetch(
        lambda ls: ls.session_by_request_id, lambda _p, a: a["request_id"], "one",
        "ValidationSession",
    ),
    # Children of a session.
    "ValidationSession.results": Fetch(
        lambda ls: ls.results_by_session_id, lambda p, _a: p, "list", "ValidationResult", "id",
        narrow="results_by_session_id",
    ),
    "ValidationSession.latestResult": Fetch(
        lambda ls: ls.latest_result_by_session_id, lambda p, _a: p, "one", "ValidationResult",
        "id", narrow="latest_result_by_session_id",
    ),
    "ValidationSession.discrepancies": Fetch(
        lambda ls: ls.discrepancy_page_by_session,
        lambda p, a: session_discrepancies_key(p, a.get("filter"), a["first"], a.get("after")),
        "page", "Discrepancy", "id", _by_id, narrow="discrepancy_page_by_session",
    ),
    "ValidationSession.behavioralTests": Fetch(
        lambda ls: ls.behavioral_tests_by_session_id, lambda p, _a: p, "list",
        "BehavioralTestResult", "id", narrow="behavioral_tests_by_session_id",
    ),
    # Children and parents of a result, a discrepancy and a behavioral test.
    "ValidationResult.discrepancies": Fetch(
        lambda ls: ls.discrepancies_by_result_id, lambda p, _a: p, "list", "Discrepancy", "id",
        narrow="discrepancies_by_result_id",
    ),
    "ValidationResult.session": _SESSION_OF_ROW,
    "Discrepancy.session": _SESSION_OF_ROW,
    "Discrepancy.result": Fetch(
        lambda ls: ls.result_by_id, lambda p, _a: p, "one", "ValidationResult", "result_id"
    ),
    "BehavioralTestResult.session": _SESSION_OF_ROW,
}  # fmt: skip
