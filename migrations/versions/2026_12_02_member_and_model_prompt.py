"""jobs: the member's words and the model's text named apart

Revision ID: 7c1d2e9a4b30
Revises: 4578540e625e
Create Date: 2026-12-02 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "7c1d2e9a4b30"
down_revision: str | None = "4578540e625e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # "prompt" meant the member's words here and the expanded text elsewhere: one name for each.
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("prompt", new_column_name="member_prompt")
        batch_op.alter_column("expanded_prompt", new_column_name="model_prompt")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("member_prompt", new_column_name="prompt")
        batch_op.alter_column("model_prompt", new_column_name="expanded_prompt")
