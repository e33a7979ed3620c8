"""Domain exceptions raised by persistence services; the API layer maps them to
typed user errors. Messages never contain SQL."""


class MigvalError(Exception):
    """Base of every error persistence raises on purpose."""

    code = "INTERNAL"

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class ConfigurationError(MigvalError):
    """A setting (environment variable) is missing or malformed."""

    code = "CONFIGURATION"


class ValidationFailed(MigvalError):
    """Input breaks a rule of the data model (range, length, enum, required)."""

    code = "INVALID"


class NotFound(MigvalError):
    """The addressed row does not exist."""

    code = "NOT_FOUND"


class Conflict(MigvalError):
    """The write contradicts existing data (different payload for an existing
    request_id, a stale version)."""

    code = "CONFLICT"


class InvalidTransition(MigvalError):
    """A session status change that the lifecycle does not allow."""

    code = "INVALID_TRANSITION"


class StaleVersion(Conflict):
    """Optimistic concurrency: the row changed since the caller read it."""

    code = "STALE_VERSION"


class IdempotencyMismatch(MigvalError):
    """An idempotency key already recorded the outcome of a different request (another
    input, or another operation) by the same actor: nothing was written."""

    code = "IDEMPOTENCY_MISMATCH"


class ServiceUnavailable(MigvalError):
    """The database could not be reached or stayed busy past the retry budget; the
    write was not committed and is safe to retry."""

    code = "SERVICE_UNAVAILABLE"


class CommitOutcomeUnknown(ServiceUnavailable):
    """The connection dropped while COMMIT was in flight: the write may or may not
    have landed. Never retried automatically (a retry could write twice)."""

    code = "COMMIT_OUTCOME_UNKNOWN"
