"""Per-request DataLoaders. Each batch runs ONE repository method (one SQL statement)
on its own short read session: batches run as concurrent tasks and must not share a
session (see ARCHITECTURE.md)."""

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from persistence.database import DatabaseManager
from persistence.filters import DiscrepancyFilter, IdOrder
from persistence.models import (
    BehavioralTestResult,
    ValidationDiscrepancy,
    ValidationMetric,
    ValidationResult,
    ValidationSession,
)
from persistence.pagination import Keyset, Page
from persistence.repositories import (
    BehavioralTestRepository,
    DiscrepancyRepository,
    MetricRepository,
    ResultRepository,
    SessionRepository,
)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class ChildPageKey:
    """A parent's page of children with its arguments (hashable: a loader key)."""

    parent_id: int
    filter: DiscrepancyFilter
    order: IdOrder
    first: int
    after: Keyset | None


class Loaders:
    """All loaders of one request; names say target and key."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db
        sessions, results = SessionRepository, ResultRepository
        discrepancies, tests = DiscrepancyRepository, BehavioralTestRepository
        self.session_by_id: DataLoader[int, ValidationSession | None] = self._loader(
            lambda s, keys: sessions(s).list_by_ids(keys)
        )
        self.session_by_request_id: DataLoader[str, ValidationSession | None] = self._loader(
            lambda s, keys: sessions(s).list_by_request_ids(keys)
        )
        self.result_by_id: DataLoader[int, ValidationResult | None] = self._loader(
            lambda s, keys: results(s).list_by_ids(keys)
        )
        self.results_by_session_id: DataLoader[int, list[ValidationResult]] = self._loader(
            lambda s, keys: results(s).list_by_session_ids(keys)
        )
        self.latest_result_by_session_id: DataLoader[int, ValidationResult | None] = self._loader(
            lambda s, keys: results(s).latest_by_session_ids(keys)
        )
        self.discrepancy_by_id: DataLoader[int, ValidationDiscrepancy | None] = self._loader(
            lambda s, keys: discrepancies(s).list_by_ids(keys)
        )
        self.discrepancies_by_result_id: DataLoader[int, list[ValidationDiscrepancy]] = (
            self._loader(lambda s, keys: discrepancies(s).list_by_result_ids(keys))
        )
        self.behavioral_test_by_id: DataLoader[int, BehavioralTestResult | None] = self._loader(
            lambda s, keys: tests(s).list_by_ids(keys)
        )
        self.behavioral_tests_by_session_id: DataLoader[int, list[BehavioralTestResult]] = (
            self._loader(lambda s, keys: tests(s).list_by_session_ids(keys))
        )
        self.metric_by_id: DataLoader[int, ValidationMetric | None] = self._loader(
            lambda s, keys: MetricRepository(s).list_by_ids(keys)
        )
        self.discrepancy_page_by_session: DataLoader[ChildPageKey, Page[ValidationDiscrepancy]] = (
            DataLoader(self._discrepancy_pages)
        )

    def _loader(
        self, fetch: Callable[[AsyncSession, list[K]], Awaitable[Sequence[V]]]
    ) -> DataLoader[K, V]:
        async def batch(keys: list[K]) -> Sequence[V]:
            async with self.db.read_session() as session:
                return await fetch(session, keys)

        return DataLoader(batch)

    async def _discrepancy_pages(
        self, keys: list[ChildPageKey]
    ) -> list[Page[ValidationDiscrepancy]]:
        # Keys that share their arguments become one windowed statement.
        groups: dict[tuple[DiscrepancyFilter, IdOrder, int, Keyset | None], list[int]] = (
            defaultdict(list)
        )
        for key in keys:
            groups[(key.filter, key.order, key.first, key.after)].append(key.parent_id)
        pages: dict[ChildPageKey, Page[ValidationDiscrepancy]] = {}
        async with self.db.read_session() as session:
            repo = DiscrepancyRepository(session)
            for (filter_, order, first, after), parent_ids in groups.items():
                found = await repo.pages_by_session_ids(
                    parent_ids,
                    filter_,
                    order,
                    first,
                    after,
                )
                for pid, page in zip(parent_ids, found, strict=True):
                    pages[ChildPageKey(pid, filter_, order, first, after)] = page
        return [pages[key] for key in keys]

