"""Role checks for fields: deny by default. Every root field and mutation carries one
of these; a test walks the schema to keep it so."""

from typing import Any, ClassVar

import strawberry
from graphql import GraphQLErrorExtensions
from strawberry.permission import BasePermission

from graph.context import Context
from persistence.enums import Role


class RolePermission(BasePermission):
    """Allows the request when its actor has at least ``role``."""

    role: ClassVar[Role]
    message = "FORBIDDEN"
    error_extensions: GraphQLErrorExtensions | None = {"code": "FORBIDDEN"}  # noqa: RUF012

    def has_permission(
        self, source: Any, info: strawberry.Info[Context, None], **kwargs: Any
    ) -> bool:
        return info.context.actor.has_role(self.role)


class IsViewer(RolePermission):
    role = Role.VIEWER
    message = "FORBIDDEN: requires the viewer role"


class IsWriter(RolePermission):
    role = Role.WRITER
    message = "FORBIDDEN: requires the writer role"


class IsAdmin(RolePermission):
    role = Role.ADMIN
    message = "FORBIDDEN: requires the admin role"
