"""Alembic's entry point for backchannel's schema.

Migrations run on a connection that :mod:`backchannel.server.schema` hands over (from an
async engine, through ``run_sync``), so one code path serves SQLite and PostgreSQL.
Batch mode lets SQLite, which cannot alter most of a table in place, take the same
migrations.
"""

from __future__ import annotations

from alembic import context

from backchannel.server.schema import target_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `backchannel db upgrade`")

context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
