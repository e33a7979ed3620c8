"""Who is acting: set once per request by the API layer, read by services when they
write the audit trail in the same transaction as the change."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from persistence.enums import ROLE_RANK, Role


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated token, or anonymous (token_id None, role None)."""

    name: str
    role: Role | None
    token_id: int | None = None
    request_id: str | None = None
    client_address: str | None = None

    def has_role(self, needed: Role) -> bool:
        return self.role is not None and ROLE_RANK[self.role] >= ROLE_RANK[needed]


ANONYMOUS = Actor(name="anonymous", role=None)
SYSTEM = Actor(name="system", role=Role.ADMIN)  # CLI and maintenance jobs

_current: ContextVar[Actor] = ContextVar("migval_actor", default=SYSTEM)


def current_actor() -> Actor:
    return _current.get()


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def set_actor(actor: Actor) -> None:
    """Bind ``actor`` for the rest of the current task (a request's handler task)."""
    _current.set(actor)
