"""created_at indexes for the live metrics.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

The metrics listing aggregates live, from raw rows, every period after the newest
rollup (the open day, week and month at least), with a created_at window on each
table. Sessions had an index leading with created_at; results, discrepancies and
behavioral tests had none, so each listing read those tables whole (40 ms on the
bench's 240,000 rows, growing with the history; 7 ms with these indexes).

Self-contained on purpose (no imports from persistence/), like the others.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_validation_results_created_at", "validation_results"),
    ("ix_validation_discrepancies_created_at", "validation_discrepancies"),
    ("ix_behavioral_test_results_created_at", "behavioral_test_results"),
)


def upgrade() -> None:
    for name, table in INDEXES:
        op.create_index(name, table, ["created_at"])


def downgrade() -> None:
    for name, table in reversed(INDEXES):
        op.drop_index(name, table_name=table)
