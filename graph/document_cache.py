"""Process-wide LRU caches of parsed documents and of accepted validations.

Parsing and validating (graphql-core's rules plus the query limits) cost more CPU
than serving a planned query, and clients send the same few documents over and over.
Only successes are cached: a document that failed to parse or validate goes through
the whole pipeline again and gets its errors afresh. A validation's outcome depends on
the schema, the document, the operation and the variables (``first`` can come from
one), so all of them are in the key; requests with large variables (mutation inputs)
are not cached.
"""

import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

import orjson
from graphql import DocumentNode

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CACHE_SIZE = 512
MAX_VARIABLES_CHARS = 4096


class LRU(Generic[K, V]):
    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)


# (query text, token limit) -> parsed document (graphql-core never mutates it).
PARSED: LRU[tuple[str, int], DocumentNode] = LRU()
# (schema, query text, operation name, variables) -> the accepted operation's cost. The
# schema object itself is in the key (not its id, which a later schema could reuse).
ACCEPTED: LRU[tuple[object, str, str | None, str], int] = LRU()


def validation_key(
    schema: object, query: str, operation: str | None, variables: dict[str, object] | None
) -> tuple[object, str, str | None, str] | None:
    """The ACCEPTED key of a request, or None when it should not be cached."""
    try:
        # Size first, with orjson: a bulk write's variables are megabytes, and stdlib
        # json took ~20 ms to encode them only to find them too large to cache.
        # orjson's output is not longer than the stdlib's (no spaces, UTF-8 rather
        # than \u escapes) but for one char per NaN: at worst a missed cache entry.
        if len(orjson.dumps(variables or {})) > MAX_VARIABLES_CHARS:
            return None
    except TypeError:  # orjson.JSONEncodeError included
        pass  # the stdlib encoding below decides
    try:
        encoded = json.dumps(variables or {}, sort_keys=True)
    except (TypeError, ValueError):
        return None
    if len(encoded) > MAX_VARIABLES_CHARS:
        return None
    return (schema, query, operation, encoded)
