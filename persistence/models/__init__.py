"""The five tables of the data model (see docs/decisions for departures from the design),
plus api_tokens, audit_log and idempotency_keys."""

from persistence.models.api_token import ApiToken
from persistence.models.audit_log import AuditLogEntry
from persistence.models.base import metadata
from persistence.models.behavioral_test_result import BehavioralTestResult
from persistence.models.idempotency_key import IdempotencyKey
from persistence.models.validation_discrepancy import ValidationDiscrepancy
from persistence.models.validation_metric import ValidationMetric
from persistence.models.validation_result import ValidationResult
from persistence.models.validation_session import ValidationSession

__all__ = [
    "ApiToken",
    "AuditLogEntry",
    "BehavioralTestResult",
    "IdempotencyKey",
    "ValidationDiscrepancy",
    "ValidationMetric",
    "ValidationResult",
    "ValidationSession",
    "metadata",
]
