"""Business operations: each is one transaction (DatabaseManager.run_write) and
raises domain exceptions from persistence.errors."""

from persistence.services.behavioral_tests import BehavioralTestService
from persistence.services.discrepancies import DiscrepancyService
from persistence.services.results import ResultService
from persistence.services.sessions import CreateOutcome, SessionService

__all__ = [
    "BehavioralTestService",
    "CreateOutcome",
    "DiscrepancyService",
    "ResultService",
    "SessionService",
]
