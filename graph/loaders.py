"""Per-request DataLoaders. Each batch runs ONE repository method (one SQL statement)
on its own short read session: batches run as concurrent tasks and must not share a
session (see ARCHITECTURE.md). The exception is ``Loaders.one_session``: an execution
plan runs its batches one after the other in one task, on one session."""

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from persistence.database import DatabaseManager, read_errors
from persistence.filters import (
    BehavioralTestFilter,
    DiscrepancyFilter,
    IdOrder,
    SessionFilter,
    SessionOrder,
)
from persistence.models import ValidationMetric
from persistence.pagination import Keyset, Page
from persistence.records import Record
from persistence.repositories import (
    BehavioralTestRepository,
    DiscrepancyRepository,
    MetricRepository,
    ResultRepository,
    SessionRepository,
)
from persistence.repositories.base import Columns

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
F = TypeVar("F", bound=Hashable)
Ord = TypeVar("Ord", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ChildPageKey:
    """A parent's page of children with its arguments (hashable: a loader key)."""

    parent_id: int
    filter: DiscrepancyFilter
    order: IdOrder
    first: int
    after: Keyset | None


@dataclass(frozen=True, slots=True)
class PageKey(Generic[F, Ord]):
    """A root listing's page with its arguments (hashable: a loader key)."""

    filter: F
    order: Ord
    first: int
    after: Keyset | None


class _Shared:
    """The read session batches share inside ``Loaders.one_session`` (opened by the
    first batch that reads; ``scope`` is None outside), and the task that may use it."""

    __slots__ = ("scope", "session", "task")

    def __init__(self) -> None:
        self.scope: AsyncExitStack | None = None
        self.session: AsyncSession | None = None
        self.task: asyncio.Task[Any] | None = None


class Loaders:
    """All loaders of one request; names say target and key."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db
        self._shared = _Shared()
        sessions, results = SessionRepository, ResultRepository
        discrepancies, tests = DiscrepancyRepository, BehavioralTestRepository
        self.session_by_id: DataLoader[int, Record | None] = self._loader(
            lambda s, keys: sessions(s).list_by_ids(keys)
        )
        self.session_by_request_id: DataLoader[str, Record | None] = self._loader(
            lambda s, keys: sessions(s).list_by_request_ids(keys)
        )
        self.result_by_id: DataLoader[int, Record | None] = self._loader(
            lambda s, keys: results(s).list_by_ids(keys)
        )
        # Child lists an execution plan may read with fewer columns (``narrow``).
        self._narrowable: dict[str, Callable[[AsyncSession, list[Any], Columns], Any]] = {
            "results_by_session_id": lambda s, k, c: results(s).list_by_session_ids(k, c),
            "latest_result_by_session_id": lambda s, k, c: results(s).latest_by_session_ids(k, c),
            "discrepancies_by_result_id": lambda s, k, c: discrepancies(s).list_by_result_ids(k, c),
            "behavioral_tests_by_session_id": lambda s, k, c: tests(s).list_by_session_ids(k, c),
            "session_page": lambda s, k, c: _pages(sessions(s).list_page, k, c),
            "discrepancy_page": lambda s, k, c: _pages(discrepancies(s).list_page, k, c),
            "behavioral_test_page": lambda s, k, c: _pages(tests(s).list_page, k, c),
            "discrepancy_page_by_session": lambda s, k, c: _discrepancy_pages(
                discrepancies(s), k, c
            ),
        }
        self._narrowed: dict[tuple[str, Columns], DataLoader[Any, Any]] = {}
        self.results_by_session_id: DataLoader[int, list[Record]] = self.narrow(
            "results_by_session_id", None
        )
        self.latest_result_by_session_id: DataLoader[int, Record | None] = self.narrow(
            "latest_result_by_session_id", None
        )
        self.discrepancy_by_id: DataLoader[int, Record | None] = self._loader(
            lambda s, keys: discrepancies(s).list_by_ids(keys)
        )
        self.discrepancies_by_result_id: DataLoader[int, list[Record]] = self.narrow(
            "discrepancies_by_result_id", None
        )
        self.behavioral_test_by_id: DataLoader[int, Record | None] = self._loader(
            lambda s, keys: tests(s).list_by_ids(keys)
        )
        self.behavioral_tests_by_session_id: DataLoader[int, list[Record]] = self.narrow(
            "behavioral_tests_by_session_id", None
        )
        self.metric_by_id: DataLoader[int, ValidationMetric | None] = self._loader(
            lambda s, keys: MetricRepository(s).list_by_ids(keys)
        )
        self.discrepancy_page_by_session: DataLoader[ChildPageKey, Page[Record]] = self.narrow(
            "discrepancy_page_by_session", None
        )
        # Root listings: the page, its rows carrying the total (one statement; an empty
        # page counts on its own), cached per request like every loader, so a document
        # reads each listing once.
        self.session_page: DataLoader[PageKey[SessionFilter, SessionOrder], Page[Record]] = (
            self.narrow("session_page", None)
        )
        self.discrepancy_page: DataLoader[PageKey[DiscrepancyFilter, IdOrder], Page[Record]] = (
            self.narrow("discrepancy_page", None)
        )
        self.behavioral_test_page: DataLoader[
            PageKey[BehavioralTestFilter, IdOrder], Page[Record]
        ] = self.narrow("behavioral_test_page", None)

    def narrow(self, name: str, columns: Columns) -> DataLoader[Any, Any]:
        """The loader ``name`` reading only ``columns`` of its rows (None: all; the
        others come back NULL), one per column set and request. Execution plans use
        it; the rows must not reach anything that reads the other columns."""
        loader = self._narrowed.get((name, columns))
        if loader is None:
            fetch = self._narrowable[name]
            loader = self._loader(lambda s, keys: fetch(s, keys, columns))
            self._narrowed[(name, columns)] = loader
        return loader

    def _loader(
        self, fetch: Callable[[AsyncSession, list[K]], Awaitable[Sequence[V]]]
    ) -> DataLoader[K, V]:
        # Not self: a loader referring to its Loaders is a reference cycle.
        db, shared = self.db, self._shared

        async def batch(keys: list[K]) -> Sequence[V]:
            if shared.scope is None or asyncio.current_task() is not shared.task:
                async with db.read_session() as session:
                    return await fetch(session, keys)
            if shared.session is None:
                shared.session = await shared.scope.enter_async_context(db.read_session())
            with read_errors():  # reported as read_session reports them
                return await fetch(shared.session, keys)

        return DataLoader(batch)

    @asynccontextmanager
    async def one_session(self) -> AsyncIterator[None]:
        """Batches called in this scope share one read session, opened by the first and
        closed at the end: one connection checkout per plan run instead of one per
        batch (~0.2 ms of CPU each). Only the calling task's batches share it, one after
        the other; any other task's batch still opens its own session."""
        shared = self._shared
        if shared.scope is not None:
            raise RuntimeError("Loaders.one_session is not reentrant")
        async with AsyncExitStack() as scope:
            shared.scope, shared.task = scope, asyncio.current_task()
            try:
                yield
            finally:
                shared.scope = shared.session = shared.task = None


async def _discrepancy_pages(
    repo: DiscrepancyRepository, keys: Sequence[ChildPageKey], columns: Columns
) -> list[Page[Record]]:
    """Each key's page of its session's discrepancies; keys that share their arguments
    become one windowed statement. A narrow read (only for execution plans, which
    read rows by position) returns raw driver records where it can."""
    # arguments -> positions of the keys asking for them (no second key per page)
    groups: dict[tuple[DiscrepancyFilter, IdOrder, int, Keyset | None], list[int]] = defaultdict(
        list
    )
    for index, key in enumerate(keys):
        groups[(key.filter, key.order, key.first, key.after)].append(index)
    pages: list[Page[Record] | None] = [None] * len(keys)
    for (filter_, order, first, after), indexes in groups.items():
        parent_ids = [keys[i].parent_id for i in indexes]
        found = await repo.pages_by_session_ids(
            parent_ids, filter_, order, first, after, columns, raw=columns is not None
        )
        for index, page in zip(indexes, found, strict=True):
            pages[index] = page
    return cast(list[Page[Record]], pages)  # every position is in one group


async def _pages(
    list_page: Callable[..., Awaitable[Page[Record]]], keys: Sequence[PageKey[Any, Any]], c: Columns
) -> list[Page[Record]]:
    """One listing per key, in turn on the batch's session (a document rarely asks
    for the same listing with different arguments)."""
    return [await list_page(k.filter, k.order, k.first, k.after, c) for k in keys]
