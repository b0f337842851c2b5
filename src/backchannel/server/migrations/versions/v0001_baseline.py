"""The first schema: the ledger, assistants, calls and the webhook outbox.

Databases made before migrations existed (by ``create_all``) hold exactly these tables;
they are stamped at this revision instead of running it. A ledger table already there
(a store opened by the library on its own) is kept.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _missing(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if _missing("bc_calls"):
        op.create_table(
            "bc_calls",
            sa.Column("call_id", sa.String(64), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("ended_at", sa.Float),
            sa.Column("ended_reason", sa.String(64)),
            sa.Column("version", sa.Integer, nullable=False),
        )
    if _missing("bc_tool_calls"):
        op.create_table(
            "bc_tool_calls",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("call_id", sa.String(64), nullable=False),
            sa.Column("tool_call_id", sa.String(256), nullable=False),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("arguments", sa.JSON, nullable=False),
            sa.Column("route", sa.String(16), nullable=False),
            sa.Column("is_async", sa.Boolean, nullable=False),
            sa.Column("delivery", sa.String(16), nullable=False),
            sa.Column("timeout_seconds", sa.Float, nullable=False),
            sa.Column("cancel_on_interruption", sa.Boolean, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("result", sa.JSON),
            sa.Column("error", sa.Text),
            sa.Column("message", sa.Text),
            sa.Column("metadata", sa.JSON),
            sa.Column("resolved_by", sa.String(16)),
            sa.Column("late", sa.Boolean, nullable=False),
            sa.Column("progress", sa.JSON, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("started_at", sa.Float),
            sa.Column("progress_at", sa.Float),
            sa.Column("resolved_at", sa.Float),
            sa.Column("result_at", sa.Float),
            sa.Column("delivered_at", sa.Float),
            sa.Column("spoken_at", sa.Float),
            sa.Column("version", sa.Integer, nullable=False),
            sa.UniqueConstraint("call_id", "tool_call_id", name="uq_bc_tool_calls_key"),
        )
        op.create_index("ix_bc_tool_calls_call", "bc_tool_calls", ["call_id", "seq"])
    op.create_table(
        "bc_assistants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "bc_server_calls",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("assistant_id", sa.String(64)),
        sa.Column("assistant", sa.JSON, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("client_token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("transcript", sa.JSON),
        sa.Column("messages", sa.JSON),
    )
    op.create_table(
        "bc_outbox",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_bc_outbox_due", "bc_outbox", ["status", "next_at"])


def downgrade() -> None:
    op.drop_table("bc_outbox")
    op.drop_table("bc_server_calls")
    op.drop_table("bc_assistants")
    op.drop_table("bc_tool_calls")
    op.drop_table("bc_calls")
