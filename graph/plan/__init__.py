"""Compiled execution plans for read queries (ADR 0008).

A validated query document of a supported shape compiles once into a plan that
fetches one loader batch per level and writes leaf values straight into the response,
instead of resolving every field of every object through graphql-core. Anything the
compiler does not support, and any failure while running a plan, falls back to
standard Strawberry execution, which stays the reference: the differential tests
check that both give byte-identical responses.

- ``fields``: how each planned relation reaches its rows (loader and key).
- ``compiler``: document -> plan (or None: not supported).
- ``runner``: plan + variables + loaders -> response data.
- ``extension``: the schema extension that uses plans (MIGVAL_EXECUTION_PLANS).
"""
