"""Server settings read from the environment: the mode (development or production)
and what it implies for authentication, GraphiQL, introspection and binding.

| mode          | no Authorization header             | GraphiQL | introspection | suggestions |
| ------------- | ----------------------------------- | -------- | ------------- | ----------- |
| development   | actor "anonymous" with              | yes      | yes           | yes         |
|               | ``MIGVAL_ANONYMOUS_ROLE`` (admin)   |          |               |             |
| production    | HTTP 401                            | no       | no            | no          |

In both modes a bad, expired or revoked token is refused with HTTP 401.
"""

import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, SchemaExtension

from persistence.enums import Role
from persistence.errors import ConfigurationError
from persistence.settings import env_choice

# Set by `migval serve` for its server processes, workers included (they inherit it):
# they tune the cyclic garbage collector once the app is loaded (graph.app); tests and
# other embedders keep Python's defaults.
SERVER_PROCESS_ENV = "MIGVAL_SERVER_PROCESS"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class PlanMode(StrEnum):
    """MIGVAL_EXECUTION_PLANS: how read queries run (graph.plan). ``on``: compiled
    plans where the document allows, standard execution otherwise; ``off``: standard
    execution only; ``verify``: both, the standard answer served and any difference
    logged as an error (the test suite runs this way)."""

    ON = "on"
    OFF = "off"
    VERIFY = "verify"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "PlanMode":
        e = os.environ if env is None else env
        return env_choice(e, "MIGVAL_EXECUTION_PLANS", cls, cls.ON)


# MIGVAL_ANONYMOUS_ROLE=none: requests without a token get no role at all.
NO_ROLE = "none"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class AppSettings:
    """The defaults are development mode with anonymous admin access (local use)."""

    env: Environment = Environment.DEVELOPMENT
    # Role of requests without an Authorization header (development only); None: none.
    anonymous_role: Role | None = Role.ADMIN
    allow_insecure_bind: bool = False
    # Production: GET /metrics without a viewer token (graph.observability).
    metrics_public: bool = False
    # Compiled execution plans for reads; the default follows MIGVAL_EXECUTION_PLANS.
    execution_plans: PlanMode = field(default_factory=PlanMode.from_env)

    @property
    def production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def auth_required(self) -> bool:
        """Whether a request without a token is refused (HTTP 401)."""
        return self.production

    @property
    def anonymous_access(self) -> bool:
        """Whether a request without a token can do anything at all."""
        return not self.auth_required and self.anonymous_role is not None

    @property
    def graphiql(self) -> bool:
        return not self.production

    @property
    def introspection(self) -> bool:
        return not self.production

    @property
    def field_suggestions(self) -> bool:
        return not self.production

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AppSettings":
        """Settings from ``env`` (default ``os.environ``); a malformed value raises
        ConfigurationError naming the variable."""
        e = os.environ if env is None else env
        mode = _environment(e.get("MIGVAL_ENV", ""))
        anonymous = _anonymous_role(e.get("MIGVAL_ANONYMOUS_ROLE", ""), mode)
        return cls(
            env=mode,
            anonymous_role=anonymous,
            allow_insecure_bind=_bool(e, "MIGVAL_ALLOW_INSECURE_BIND"),
            metrics_public=_bool(e, "MIGVAL_METRICS_PUBLIC"),
            execution_plans=PlanMode.from_env(e),
        )

    def check_bind(self, host: str) -> None:
        """Development mode stays on this machine: it lets requests without a token in
        and serves GraphiQL and introspection, so binding a non-loopback address needs
        an explicit override."""
        if is_loopback(host) or self.production or self.allow_insecure_bind:
            return
        role = self.anonymous_role.value if self.anonymous_role else NO_ROLE
        raise ConfigurationError(
            "--host",
            f"refusing to bind {host} in development mode: requests without a token get "
            f"the {role!r} role (MIGVAL_ANONYMOUS_ROLE), so anyone who can reach this "
            "address could use the API. Use MIGVAL_ENV=production with API tokens "
            "(migval token create), or bind 127.0.0.1, or override with "
            "MIGVAL_ALLOW_INSECURE_BIND=1 / --allow-insecure-bind",
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False


def _environment(raw: str) -> Environment:
    value = raw.strip().lower()
    if not value:
        return Environment.DEVELOPMENT
    for member in Environment:
        if member.value == value:
            return member
    allowed = ", ".join(m.value for m in Environment)
    raise ConfigurationError("MIGVAL_ENV", f"must be one of {allowed}, got {raw!r}")


def _anonymous_role(raw: str, mode: Environment) -> Role | None:
    value = raw.strip().lower()
    if mode is Environment.PRODUCTION:
        if value and value != NO_ROLE:
            raise ConfigurationError(
                "MIGVAL_ANONYMOUS_ROLE",
                "has no effect in production (every request needs a token); unset it",
            )
        return None
    if not value:
        return Role.ADMIN
    if value == NO_ROLE:
        return None
    for role in Role:
        if role.value == value:
            return role
    allowed = ", ".join([*(r.value for r in Role), NO_ROLE])
    raise ConfigurationError("MIGVAL_ANONYMOUS_ROLE", f"must be one of {allowed}, got {raw!r}")


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "")
    value = raw.strip().lower()
    if not value or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ConfigurationError(name, f"must be true or false (1/0), got {raw!r}")


# --- what production mode adds to the schema (graph.schema.production_schema) -----

_SUGGESTION = re.compile(r"\s*Did you mean .*$", re.DOTALL)


class HideSuggestions(SchemaExtension):
    """Strip graphql-core's "Did you mean ...?" hints (field, argument, type and enum
    value names) from every error, so errors do not reveal the schema."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context
        errors: list[GraphQLError] = list(context.pre_execution_errors or [])
        if context.result is not None and context.result.errors:
            errors.extend(context.result.errors)
        for error in errors:
            error.message = _SUGGESTION.sub("", error.message)


PRODUCTION_EXTENSIONS: tuple[type[SchemaExtension] | Callable[[], SchemaExtension], ...] = (
    DisableIntrospection,
    HideSuggestions,
)
