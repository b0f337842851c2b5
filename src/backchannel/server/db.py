"""The server's own tables, beside the ledger's: assistants, calls, phone numbers, the
webhook outbox, and the instances that share the database.

The schema is created and changed by the Alembic migrations in ``migrations/``; a test
checks that they build exactly these tables.
"""

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

#: Standalone tools (Vapi's ``/tool``), used by assistants through ``model.toolIds``.
tools = sa.Table(
    "bc_tools",
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
    #: Each answered turn's latency by stage (``turn-latency`` events), stored with the
    #: transcript.
    sa.Column("turns", sa.JSON),
    #: The instance running the call (its media connection); set when the call starts.
    sa.Column("owner", sa.String(64)),
)

sa.Index("ix_bc_server_calls_owner", server_calls.c.owner)

#: Which assistant answers each phone number (Twilio's ``To``).
phone_numbers = sa.Table(
    "bc_phone_numbers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("number", sa.String(32), nullable=False, unique=True),
    sa.Column("assistant_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: The phone side of a phone call: Twilio's call SID, the customer's number and ours.
phone_calls = sa.Table(
    "bc_phone_calls",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("call_sid", sa.String(64), nullable=False),
    sa.Column("customer_number", sa.String(32)),
    sa.Column("our_number", sa.String(32)),
    sa.Column("stream_sid", sa.String(64)),
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
    #: The instance sending it right now (its lease is ``next_at``); released when the
    #: attempt ends, or when that instance is found dead, so nothing waits out a lease.
    sa.Column("claimed_by", sa.String(64)),
)

sa.Index("ix_bc_outbox_due", outbox.c.status, outbox.c.next_at)
#: A call's events go out in creation order: is an earlier one of its call still pending?
sa.Index("ix_bc_outbox_call", outbox.c.call_id, outbox.c.status, outbox.c.created_at)

#: Every server process sharing the database. An instance that stops heartbeating is
#: declared lost by another, which ends the calls it owned.
instances = sa.Table(
    "bc_instances",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("stopped_at", sa.Float),
    sa.Column("stop_reason", sa.String(32)),
)

#: Control messages for a call live on another instance: written here first, then the
#: owner is told through Redis; the owner claims each row once and writes its answer.
routed_controls = sa.Table(
    "bc_routed_controls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("applied_at", sa.Float),
    sa.Column("answer", sa.JSON),
)
