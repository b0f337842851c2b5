"""Twilio's REST API through the ``twilio`` SDK: place outbound calls, redirect a live
call (transfer). One async HTTP client per server, closed with it."""

from __future__ import annotations

from typing import Any

from ..errors import ProviderError


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, *, base_url: str | None = None):
        from twilio.http.async_http_client import AsyncTwilioHttpClient
        from twilio.rest import Client

        self._http = AsyncTwilioHttpClient()
        self.client: Any = Client(account_sid, auth_token, http_client=self._http)
        if base_url:  # a proxy, or a stand-in in tests
            self.client.api.base_url = base_url.rstrip("/")

    async def place_call(self, to: str, from_: str, twiml: str) -> str:
        """Dial ``to`` from ``from_``; when answered, Twilio runs ``twiml``. The call SID."""
        try:
            call = await self.client.calls.create_async(to=to, from_=from_, twiml=twiml)
        except Exception as exc:  # TwilioRestException, transport errors
            raise ProviderError(
                f"Twilio could not place the call: {exc}", code="twilio_error"
            ) from exc
        return str(call.sid)

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace what a live call is doing (its media stream ends) with ``twiml``."""
        try:
            await self.client.calls(call_sid).update_async(twiml=twiml)
        except Exception as exc:
            raise ProviderError(
                f"Twilio could not update the call: {exc}", code="twilio_error"
            ) from exc

    async def aclose(self) -> None:
        await self._http.close()
