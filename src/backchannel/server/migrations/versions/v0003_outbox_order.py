"""The outbox delivers each call's events in creation order (an index to find, per
call, whether an earlier event is still pending) and records which instance is sending
an event, so a dead instance's claims are released at once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_bc_outbox_call", "bc_outbox", ["call_id", "status", "created_at"])
    with op.batch_alter_table("bc_outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("bc_outbox") as batch:
        batch.drop_column("claimed_by")
    op.drop_index("ix_bc_outbox_call", table_name="bc_outbox")
