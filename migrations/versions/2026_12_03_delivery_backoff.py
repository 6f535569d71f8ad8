"""jobs: delivery attempts, the time of the next one, and the last delivery error

Revision ID: 5b8e0f3c21d7
Revises: 7c1d2e9a4b30
Create Date: 2026-12-03 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b8e0f3c21d7"
down_revision: str | None = "7c1d2e9a4b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A result Discord keeps refusing backs off per job, then stops as "undeliverable" instead of being
    # retried four times a second for ever.
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("next_delivery_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("delivery_error")
        batch_op.drop_column("next_delivery_at")
        batch_op.drop_column("delivery_attempts")
