"""Serving ASGI apps on loopback inside this process: the demo's and the evals' server
and tool server run beside their caller, on free ports."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

from .server.settings import Settings


def private_server(workdir: Path, name: str, db_url: str | None = None) -> Settings:
    """Settings for a server of this process's own, on a free port: its SQLite file
    and secrets in ``workdir`` (named for ``name``), fresh keys, tool servers on
    loopback allowed."""
    settings = Settings(
        port=free_port(),
        database_url=db_url or f"sqlite+aiosqlite:///{workdir / f'{name}.db'}",
        secrets_file=workdir / f"{name}.secrets.json",
        api_key=f"bc_{secrets.token_urlsafe(24)}",
        webhook_secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        allow_private_webhooks=True,
    )
    assert settings.api_key and settings.webhook_secret
    return settings


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[None]:
    """Serve ``app`` on ``127.0.0.1:port`` for the block; stopped when it exits."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False
        )
    )
    async with asyncio.TaskGroup() as group:
        task = group.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    raise RuntimeError(f"the server on port {port} did not start")
                await asyncio.sleep(0.02)
            yield
        finally:
            server.should_exit = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
