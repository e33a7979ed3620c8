"""Repositories: all SQL lives here, one module per entity."""

from persistence.repositories.behavioral_tests import BehavioralTestRepository
from persistence.repositories.discrepancies import DiscrepancyRepository
from persistence.repositories.metrics import MetricRepository
from persistence.repositories.results import ResultRepository
from persistence.repositories.sessions import SessionRepository

__all__ = [
    "BehavioralTestRepository",
    "DiscrepancyRepository",
    "MetricRepository",
    "ResultRepository",
    "SessionRepository",
]
