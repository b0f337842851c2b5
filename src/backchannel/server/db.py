"""The server's own tables, beside the ledger's: assistants, calls, the webhook outbox."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

assistants = sa.Table(
    "bc_assistants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

server_calls = sa.Table(
    "bc_server_calls",
    metadata,
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

outbox = sa.Table(
    "bc_outbox",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
    sa.Column("last_error", sa.Text),
)

sa.Index("ix_bc_outbox_due", outbox.c.status, outbox.c.next_at)
