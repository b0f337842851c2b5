"""The migrations build exactly the tables the code declares, on SQLite and PostgreSQL;
old databases are stamped and upgraded; a server will not run on an old schema it may
not upgrade."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backchannel import ConfigError
from backchannel.server import schema
from backchannel.server.db import assistants

from .peers import POSTGRES_URL, fresh_postgres

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=pytest.mark.skipif(POSTGRES_URL is None, reason="no PostgreSQL configured"),
        ),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (the PostgreSQL one is created, migrated, then emptied)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/schema.db"
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:  # start empty, whatever the fixture made
        await conn.run_sync(schema.target_metadata().drop_all)
        await conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    yield engine
    await engine.dispose()


async def test_the_migrations_build_the_declared_tables(engine: AsyncEngine) -> None:
    assert await schema.current(engine) is None
    before, after = await schema.upgrade(engine)
    assert (before, after) == (None, schema.head())
    async with engine.connect() as conn:
        assert await conn.run_sync(schema.differences) == []
    assert await schema.upgrade(engine) == (schema.head(), schema.head())  # idempotent


async def test_a_database_from_before_migrations_is_stamped_then_upgraded(
    engine: AsyncEngine,
) -> None:
    await schema.upgrade(engine, "0001")
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE alembic_version"))  # as create_all left it
        await conn.execute(
            assistants.insert().values(id="kept", config={}, created_at=1.0, updated_at=1.0)
        )
    assert await schema.current(engine) is None
    assert await schema.upgrade(engine) == ("0001", schema.head())
    async with engine.connect() as conn:
        assert await conn.run_sync(schema.differences) == []
        assert (await conn.execute(sa.select(assistants.c.id))).scalars().all() == ["kept"]


async def test_start_up_refuses_an_old_schema_unless_it_may_upgrade(engine: AsyncEngine) -> None:
    await schema.upgrade(engine, "0001")
    with pytest.raises(ConfigError) as refused:
        await schema.ensure(engine, migrate=False)
    assert refused.value.code == "schema_out_of_date"
    assert "backchannel db upgrade" in refused.value.message
    await schema.ensure(engine, migrate=True)
    await schema.ensure(engine, migrate=False)
    assert await schema.current(engine) == schema.head()
