"""``/ready``: whether this instance can do its work now, not only whether it runs.

Checks that the store answers a query, that Redis (when configured) answers a ping, and
that every supervised background worker is running (not waiting to be restarted). Each
check is bounded in time, so a hung dependency makes the instance not ready instead of
hanging the probe.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from ..ledger.sql import SqlStore
from .router import RedisRouter
from .supervisor import Supervisor

CHECK_SECONDS = 2.0


async def readiness(
    db: SqlStore, router: RedisRouter | None, supervisor: Supervisor
) -> dict[str, Any]:
    """``{"store": "ok"|reason, "redis": "ok"|"off"|reason, "workers": {name: state}}``."""
    return {
        "store": await _check(_select_one(db)),
        "redis": "off" if router is None else await _check(router.ping()),
        "workers": supervisor.status(),
    }


async def _select_one(db: SqlStore) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


async def _check(probe: Any) -> str:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await probe
    except Exception as exc:
        return f"failing: {type(exc).__name__}"
    return "ok"
