"""The database schema's version: Alembic migrations, run by a command, checked at start.

``backchannel db upgrade`` brings a database (SQLite or PostgreSQL) to the newest
revision. A server checks the revision when it starts: on SQLite, the embedded default
with one server per file, it upgrades on its own; on a shared database it refuses to
start on an old schema (``schema_out_of_date``), so that one deliberate command, not
whichever instance starts first, changes a schema other instances are using.

Databases made before migrations existed hold the first revision's tables without
Alembic's version table; they are stamped at that revision, then upgraded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigError
from ..ledger import sql as ledger_tables
from . import db as server_tables

log = logging.getLogger("backchannel.schema")

_MIGRATIONS = Path(__file__).parent / "migrations"
#: Tables that mark a database made by ``create_all`` before migrations existed.
_BASELINE_MARK, _BASELINE = "bc_assistants", "0001"


def target_metadata() -> sa.MetaData:
    """Every table the server uses: the ledger's and its own, in one collection."""
    combined = sa.MetaData()
    for part in (ledger_tables.metadata, server_tables.metadata):
        for table in part.tables.values():
            table.to_metadata(combined)
    return combined


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: sa.Connection, revision: str) -> tuple[str | None, str | None]:
    config = _config(connection)
    before = _current(connection)
    if before is None and sa.inspect(connection).has_table(_BASELINE_MARK):
        log.info("database made before migrations; stamping it at %s", _BASELINE)
        command.stamp(config, _BASELINE)
        before = _BASELINE
    command.upgrade(config, revision)
    return before, _current(connection)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to ``revision`` (the newest by default); the revisions before
    and after."""
    async with engine.begin() as conn:
        return await conn.run_sync(_upgrade, revision)


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def ensure(engine: AsyncEngine, *, migrate: bool) -> None:
    """Make sure the schema is the newest before serving: upgrade if ``migrate``, else
    refuse an older one with the command that fixes it."""
    if migrate:
        before, after = await upgrade(engine)
        if before != after:
            log.info("database schema upgraded from %s to %s", before or "nothing", after)
        return
    found, wanted = await current(engine), head()
    if found != wanted:
        raise ConfigError(
            f"the database schema is at {found or 'no revision'}, this server needs "
            f"{wanted}; run `backchannel db upgrade` with the same database URL",
            code="schema_out_of_date",
        )


def differences(connection: sa.Connection) -> list[Any]:
    """What the database lacks or has beyond the tables the code declares (empty when
    the migrations and the code agree)."""
    from alembic.autogenerate import compare_metadata

    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, target_metadata()))
