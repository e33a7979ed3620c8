"""Database maintenance: the logic behind ``migval db init|stats|cleanup|optimize|
validate|backup|restore|export|import|import-legacy`` and ``migval maintenance``.

One module per task; each takes a ``DatabaseManager`` (or settings) and returns a
report dataclass the CLI prints (text or JSON). Nothing here imports the GraphQL layer.

- ``tables``: table order (parents first), row counts, the SQLite file of a URL
- ``init``: create the database if missing, then migrate to the head
- ``stats``: row counts, sizes, pool figures, oldest/newest session
- ``cleanup``: retention (delete old sessions, children by cascade), in batches
- ``optimize``: VACUUM/ANALYZE (and SQLite's PRAGMA optimize, WAL checkpoint)
- ``integrity``: orphans, foreign keys, CHECK ranges, enum values, schema revision
- ``backup``: physical backup/restore (SQLite backup API, pg_dump/pg_restore)
- ``export`` / ``importer``: portable logical export (JSON lines + manifest) and import
- ``legacy``: import sessions exported from the old in-memory store
- ``routine``: the ``migval maintenance`` sequence for cron
"""


class MaintenanceError(Exception):
    """An expected failure of a maintenance task, with a message for the operator
    (the CLI prints it and exits with 1)."""
