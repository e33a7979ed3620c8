"""A validation rule refusing string literals the databases cannot store (NUL, lone
surrogates): they would otherwise reach the driver and fail there. Variables get the
same check when the request body is decoded (graph/schema.py)."""

import re
from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule
from strawberry.extensions import AddValidationRules, SchemaExtension

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class StorableStrings(ValidationRule):
    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if _UNSTORABLE.search(node.value):
            self.report_error(
                GraphQLError(
                    "Strings must not contain NUL (U+0000) or unpaired surrogates",
                    nodes=[node],
                    extensions={"code": "BAD_USER_INPUT"},
                )
            )


def storable_strings() -> SchemaExtension:
    """Extension factory (one per request) adding the rule to validation."""
    return AddValidationRules([StorableStrings])
