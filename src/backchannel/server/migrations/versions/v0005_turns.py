"""Each call's turn latencies, stored with its transcript (the calls dashboard).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bc_server_calls", sa.Column("turns", sa.JSON))


def downgrade() -> None:
    op.drop_column("bc_server_calls", "turns")
