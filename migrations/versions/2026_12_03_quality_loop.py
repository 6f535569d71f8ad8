"""quality loop: preference scores on images, best-of and scoring per server, the bandit's variant

Revision ID: 9d4a6c2f1e85
Revises: 3f6a9c2d8e14
Create Date: 2026-12-03 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d4a6c2f1e85"
down_revision: str | None = "3f6a9c2d8e14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("guilds") as batch_op:
        batch_op.add_column(sa.Column("best_of", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("scoring", sa.Boolean(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("learn_variants", sa.Boolean(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("variant_pinned", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("variants_disabled", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("best_of", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("scoring", sa.Boolean(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("variant", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("expansion_guard", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("scorer", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("candidates", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("explanation", sa.JSON(), nullable=True))
    with op.batch_alter_table("images") as batch_op:
        # Rows from before keep None: their seed is the job's seed plus the index, as it was then.
        batch_op.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("alignment", sa.Float(), nullable=True))
    with op.batch_alter_table("moderation_events") as batch_op:
        batch_op.add_column(sa.Column("rule", sa.String(length=120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("moderation_events") as batch_op:
        batch_op.drop_column("rule")
    with op.batch_alter_table("images") as batch_op:
        for name in ("alignment", "score", "seed"):
            batch_op.drop_column(name)
    with op.batch_alter_table("jobs") as batch_op:
        for name in ("explanation", "candidates", "scorer", "expansion_guard", "variant", "scoring", "best_of"):
            batch_op.drop_column(name)
    with op.batch_alter_table("guilds") as batch_op:
        for name in ("variants_disabled", "variant_pinned", "learn_variants", "scoring", "best_of"):
            batch_op.drop_column(name)
