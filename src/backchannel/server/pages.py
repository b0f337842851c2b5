"""What a browser loads from the server: the call page, and the browser SDK as one ES
module at a stable path (``/sdk/backchannel.js``, built from ``clients/web/``)."""

from __future__ import annotations

import pathlib

from fastapi import APIRouter
from fastapi.responses import Response

_STATIC = pathlib.Path(__file__).parent / "static"


def page_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> Response:
        """The call page: talk to an assistant from a browser (built on the SDK)."""
        return Response((_STATIC / "index.html").read_bytes(), media_type="text/html")

    @router.get("/sdk/backchannel.js", include_in_schema=False)
    async def sdk() -> Response:
        """The browser SDK. Any origin may import it: a web app on its own domain loads
        it from here (the calls themselves still need a token)."""
        return Response(
            (_STATIC / "backchannel.js").read_bytes(),
            media_type="text/javascript",
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"},
        )

    return router
