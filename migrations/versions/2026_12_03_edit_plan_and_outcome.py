"""jobs: the plan of an edit or repair, and what a job made besides its images

Revision ID: 9e4a6c2d8f15
Revises: 3f6a9c2d8e14
Create Date: 2026-12-03 10:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9e4a6c2d8f15"
down_revision: str | None = "9d4a6c2f1e85"  # after the quality loop
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # /edit keeps how an instruction was carried out (for /info's lineage and to reproduce it);
    # /describe keeps its caption and prompts, a repair the path of its mask.
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("plan", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("outcome")
        batch_op.drop_column("plan")
