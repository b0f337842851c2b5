"""Serving ASGI apps on loopback inside this process: the demo's and the evals' server
and tool server run beside their caller, on free ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


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
