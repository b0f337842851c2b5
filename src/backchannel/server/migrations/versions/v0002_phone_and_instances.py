"""Phone numbers and phone calls; instances, call ownership and routed control messages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bc_phone_numbers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("assistant_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "bc_phone_calls",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("customer_number", sa.String(32)),
        sa.Column("our_number", sa.String(32)),
        sa.Column("stream_sid", sa.String(64)),
    )
    op.create_table(
        "bc_instances",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("stopped_at", sa.Float),
        sa.Column("stop_reason", sa.String(32)),
    )
    op.create_table(
        "bc_routed_controls",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("applied_at", sa.Float),
        sa.Column("answer", sa.JSON),
    )
    with op.batch_alter_table("bc_server_calls") as batch:
        batch.add_column(sa.Column("owner", sa.String(64)))
        batch.create_index("ix_bc_server_calls_owner", ["owner"])


def downgrade() -> None:
    with op.batch_alter_table("bc_server_calls") as batch:
        batch.drop_index("ix_bc_server_calls_owner")
        batch.drop_column("owner")
    op.drop_table("bc_routed_controls")
    op.drop_table("bc_instances")
    op.drop_table("bc_phone_calls")
    op.drop_table("bc_phone_numbers")
