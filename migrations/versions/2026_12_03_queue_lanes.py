"""jobs: an index per queue lane (status, model, member, age), for a claim whose cost is flat in depth

Revision ID: 3f6a9c2d8e14
Revises: 5b8e0f3c21d7
Create Date: 2026-12-03 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "3f6a9c2d8e14"
down_revision: str | None = "5b8e0f3c21d7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The fair claim ranked every queued row inside the write lock; with this index it reads only the
    # first few jobs of each (model, member) lane.
    op.create_index("ix_jobs_lane", "jobs", ["status", "model", "user_id", "created_at", "id", "available_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_lane", table_name="jobs")
