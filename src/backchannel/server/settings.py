"""Server settings: flags and ``BACKCHANNEL_*`` environment variables, with embedded defaults.

With nothing set, the server keeps its ledger in ``./backchannel.db``, listens on
127.0.0.1:8000, and creates an API key and a webhook signing secret on first start,
kept in ``./backchannel.secrets.json`` and printed once.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKCHANNEL_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite+aiosqlite:///backchannel.db"
    #: The management API key; generated and kept in ``secrets_file`` when unset.
    api_key: str | None = None
    #: ``whsec_…`` secret that signs every outgoing webhook (Standard Webhooks).
    webhook_secret: str | None = None
    secrets_file: Path = Path("backchannel.secrets.json")
    #: Base URL clients use to reach this server (for the URLs a new call returns).
    public_url: str | None = None
    #: Allow webhook URLs that resolve to private or loopback addresses (local development).
    allow_private_webhooks: bool = False
    #: OpenAI-compatible model server used when an assistant names no ``model.url``.
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    #: Speech-to-speech models (``model.provider: "openai-realtime"``): the key, and the
    #: Realtime server's WebSocket base URL when it is not OpenAI's (an assistant's
    #: ``model.url`` overrides it per assistant).
    openai_api_key: str | None = None
    openai_realtime_url: str | None = None
    #: Gemini Live (``model.provider: "google-live"``): the Gemini API key, and the
    #: server's base URL when it is not Google's.
    google_api_key: str | None = None
    google_live_url: str | None = None
    #: Vendor keys: an assistant whose transcriber is Deepgram, or whose voice is
    #: ElevenLabs, uses them when set (else the offline stack). The URLs override the
    #: vendors' own (a proxy, a self-hosted Deepgram).
    deepgram_api_key: str | None = None
    deepgram_url: str | None = None
    elevenlabs_api_key: str | None = None
    elevenlabs_url: str | None = None
    #: Twilio: the auth token checks ``X-Twilio-Signature`` on ``/twilio/voice``;
    #: with the account SID it also lets the server call Twilio's REST API.
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    #: Twilio's REST API base URL (a proxy, or a stand-in in tests).
    twilio_api_url: str | None = None
    max_body_bytes: int = 1_000_000
    #: Several instances on one PostgreSQL database: Redis carries results and control
    #: messages to the instance running their call. Unset: one instance, nothing routed.
    redis_url: str | None = None
    #: This instance's name among those sharing the database (random when unset).
    instance_id: str | None = None
    #: Instances beat this often; one silent for ``heartbeat_timeout_seconds`` is lost,
    #: and another instance ends its calls.
    heartbeat_seconds: float = 2.0
    heartbeat_timeout_seconds: float = 10.0
    #: How long a control message routed to another instance waits for its answer.
    routed_answer_timeout_seconds: float = 5.0
    #: Upgrade the database schema at start-up. Unset: yes on SQLite (one server per
    #: file), no on a shared database, where `backchannel db upgrade` does it once.
    migrate: bool | None = None
    #: At start-up, end calls a previous run left in progress (it crashed), so results
    #: that arrive for them are kept as late and reported. Unset: yes when this is the
    #: only instance (no Redis); with several, lost instances' calls are ended by
    #: heartbeat instead.
    end_orphaned_calls: bool | None = None
    #: How long a tool server's reply is still awaited after the tool's own timeout,
    #: so a slow reply still lands (late) instead of being lost.
    tool_reply_limit_seconds: float = 300.0
    #: Event webhooks are retried with backoff until delivered or this old.
    outbox_max_age_seconds: float = 24 * 3600.0
    outbox_max_backoff_seconds: float = 300.0
    #: Event webhooks in flight at once per receiver URL; one that hangs holds only these.
    outbox_per_receiver: int = 4
    #: How long an SQLite write waits for a lock held by another process, then fails
    #: (a request then answers ``503 store_unavailable``; a live call retries).
    sqlite_busy_timeout_seconds: float = 30.0
    #: WebSocket keepalive: a ping this often; a client that has not answered within the
    #: timeout is gone (its call then ends), so a dead client is found within their sum.
    ws_ping_interval_seconds: float = 5.0
    ws_ping_timeout_seconds: float = 10.0
    #: A client whose socket drops (not a clean close) may reconnect with its token
    #: within this many seconds and the call goes on; 0 ends the call at once.
    client_grace_seconds: float = 10.0

    @property
    def clustered(self) -> bool:
        return self.redis_url is not None

    @property
    def migrates(self) -> bool:
        if self.migrate is not None:
            return self.migrate
        return self.database_url.startswith("sqlite")

    @property
    def ends_orphans(self) -> bool:
        if self.end_orphaned_calls is not None:
            return self.end_orphaned_calls
        return not self.clustered

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


@dataclass(frozen=True, slots=True)
class Secrets:
    api_key: str
    webhook_secret: str
    created: bool


def load_secrets(settings: Settings) -> Secrets:
    """The API key and webhook secret: from settings, else the secrets file, else new ones."""
    stored: dict[str, str] = {}
    if settings.secrets_file.exists():
        stored = json.loads(settings.secrets_file.read_text())
    api_key = settings.api_key or stored.get("apiKey")
    webhook_secret = settings.webhook_secret or stored.get("webhookSecret")
    created = False
    if api_key is None or webhook_secret is None:
        api_key = api_key or f"bc_{secrets.token_urlsafe(32)}"
        webhook_secret = (
            webhook_secret or "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        )
        data = {"apiKey": api_key, "webhookSecret": webhook_secret}
        settings.secrets_file.write_text(json.dumps(data, indent=2))
        os.chmod(settings.secrets_file, 0o600)
        created = True
    return Secrets(api_key, webhook_secret, created)
