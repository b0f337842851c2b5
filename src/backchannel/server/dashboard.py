"""The calls dashboard: a page that lists calls and shows one as it goes, and the one
route it needs beyond the calls API (each event webhook's deliveries).

The page is static; it asks for the API key once (kept in the browser's local
storage) and reads ``GET /calls``, ``GET /calls/{id}`` and
``GET /calls/{id}/deliveries``, every second while a call runs.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.params import Depends
from fastapi.responses import Response

from .outbox import Outbox

_PAGE = pathlib.Path(__file__).parent / "static" / "dashboard.html"
Id = Annotated[str, Path(min_length=1, max_length=256)]


def dashboard_routes(management: Sequence[Depends]) -> APIRouter:
    router = APIRouter()

    @router.get("/dashboard", include_in_schema=False)
    async def page() -> Response:
        """The calls dashboard (it asks for the API key itself)."""
        return Response(_PAGE.read_bytes(), media_type="text/html")

    @router.get("/calls/{call_id}/deliveries", dependencies=list(management), tags=["calls"])
    async def deliveries(request: Request, call_id: Id) -> list[dict[str, Any]]:
        """The call's event webhooks (``serverMessages``): type, URL, state
        (``pending``, ``delivered``, ``dead``), attempts, last error."""
        await request.app.state.host.get(call_id)  # 404 unknown_call
        outbox: Outbox = request.app.state.outbox
        return await outbox.deliveries(call_id)

    return router
