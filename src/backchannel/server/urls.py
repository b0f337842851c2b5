"""Where webhooks may go: public addresses only, unless the operator allows private ones."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from ..errors import Forbidden, InvalidInput


async def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s) or resolves to a private, loopback or link-local
    address (unless ``allow_private``): a webhook must not become a way into the
    operator's own network."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"webhook URL {url!r} is not an http(s) URL", code="invalid_webhook_url")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM,
        )
    except OSError as exc:
        raise InvalidInput(
            f"webhook host {parts.hostname!r} does not resolve", code="invalid_webhook_url"
        ) from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise Forbidden(
                f"webhook URL {url!r} resolves to a non-public address ({address}); "
                "set BACKCHANNEL_ALLOW_PRIVATE_WEBHOOKS=true to allow it",
                code="webhook_url_not_allowed",
            )
