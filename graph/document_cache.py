"""Process-wide LRU caches of parsed documents and of accepted validations.

Parsing and validating (graphql-core's rules plus the query limits) cost more CPU
than serving a planned query, and clients send the same few documents over and over.
Only successes are cached: a document that failed to parse or validate goes through
the whole pipeline again and gets its errors afresh. A validation's outcome depends on
the schema, the document, the operation and the values of the variables it reads
(graph.limits reads those given as ``first``; graphql-core's rules read none), so
all of them are in the key, and no other variable: a bulk write's megabytes of input
neither stop it from being cached nor cost an encoding per request.
"""

import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

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
# (schema, query text, operation name, read variables) -> the accepted operation's
# cost. The schema object itself is in the key (not its id, which a later schema
# could reuse).
ACCEPTED: LRU[tuple[object, str, str | None, str], int] = LRU()
# query text -> the names of the variables its validation reads (graph.limits).
READ_VARIABLES: LRU[str, frozenset[str]] = LRU()


def validation_key(
    schema: object,
    query: str,
    operation: str | None,
    variables: dict[str, object] | None,
    read: frozenset[str],
) -> tuple[object, str, str | None, str] | None:
    """The ACCEPTED key of a request whose validation reads the variables named in
    ``read``, or None when it should not be cached (their values are too large or
    not JSON)."""
    given = variables or {}
    try:
        # Absent and null differ (an absent variable takes its default).
        encoded = json.dumps([[name, name in given, given.get(name)] for name in sorted(read)])
    except (TypeError, ValueError):
        return None
    if len(encoded) > MAX_VARIABLES_CHARS:
        return None
    return (schema, query, operation, encoded)
