"""The outbox delivers each call's events in creation order: an index to find, per
call, whether an earlier event is still pending.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_bc_outbox_call", "bc_outbox", ["call_id", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_bc_outbox_call", table_name="bc_outbox")
