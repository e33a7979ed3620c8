"""Validation of connection arguments, shared by every paginated field."""

from typing import Annotated

import strawberry

from graph.errors import BadUserInput
from persistence.errors import ValidationFailed
from persistence.pagination import Keyset, check_page_size, decode_cursor

First = Annotated[int, strawberry.argument(description="Page size (0..100).")]
After = Annotated[
    str | None, strawberry.argument(description="Return items after this cursor (endCursor).")
]


def page_args(first: int, after: str | None) -> tuple[int, Keyset | None]:
    """(page size, keyset) or a BAD_USER_INPUT error naming the argument."""
    try:
        size = check_page_size(first)
        return size, None if after is None else decode_cursor(after)
    except ValidationFailed as error:
        raise BadUserInput(error) from None
