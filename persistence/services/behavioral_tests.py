"""Recording behavioral test results for a session."""

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.audit import AuditOperation, EntityType, audit_entry
from persistence.database import DatabaseManager
from persistence.errors import NotFound, ValidationFailed
from persistence.idempotency import IdempotencyRequest, Outcome, replayed_row, run_idempotent
from persistence.models import BehavioralTestResult
from persistence.records import Record
from persistence.repositories import BehavioralTestRepository, SessionRepository
from persistence.repositories.audit import AuditRepository
from persistence.validation import check_row

TABLE = BehavioralTestResult.__table__  # type: ignore[attr-defined]
MAX_TESTS = 1_000


class BehavioralTestService:
    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    async def record(
        self,
        session_id: int,
        tests: Sequence[Mapping[str, Any]],
        idempotency: IdempotencyRequest | None = None,
    ) -> Sequence[BehavioralTestResult | Record]:
        """Store all of ``tests`` for the session, or none of them, with one audit
        entry in the same transaction."""
        if not tests:
            raise ValidationFailed("tests", "must contain at least one test result")
        if len(tests) > MAX_TESTS:
            raise ValidationFailed("tests", f"at most {MAX_TESTS} per call; got {len(tests)}")
        rows = []
        for i, item in enumerate(tests):
            if "session_id" in item:
                raise ValidationFailed(f"tests[{i}].session_id", "is set by the server")
            rows.append(check_row(TABLE, {**item, "session_id": session_id}, f"tests[{i}]."))

        async def work(session: AsyncSession) -> Sequence[BehavioralTestResult | Record]:
            if await SessionRepository(session).get(session_id) is None:
                raise NotFound("session_id", f"no session with id {session_id}")
            stored = await BehavioralTestRepository(session).add_many(rows)
            # One entry for the batch: which session, how many, which ids (the rows
            # themselves carry URLs and interaction logs; they stay out of the log).
            await AuditRepository(session).append(
                audit_entry(
                    AuditOperation.RECORD_BEHAVIORAL_TESTS,
                    EntityType.BEHAVIORAL_TEST,
                    None,
                    after={
                        "session_id": session_id,
                        "count": len(stored),
                        "ids": [row.id for row in stored],
                    },
                )
            )
            return stored

        return await run_idempotent(
            self.db,
            idempotency,
            work,
            outcome=lambda rows: Outcome.of(_TESTS, [row.id for row in rows]),
            replay=_replay,
        )


_TESTS = "behavioral_tests"  # the stored outcome's result_type (persistence.idempotency)


async def _replay(session: AsyncSession, stored: Outcome) -> list[Record]:
    rows = await BehavioralTestRepository(session).list_by_ids(stored.result_ids)
    return [replayed_row(row) for row in rows]
