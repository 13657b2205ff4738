"""The webhook channel: an HMAC-signed HTTPS POST to the chain's own bridge (WeChat official
account, WeCom, the mini-program), which knows how to reach the member there.

The body is JSON; the signature is ``X-Membergate-Signature: sha256=<hex>`` over
``<timestamp>.<body>`` with the shared secret, the timestamp in ``X-Membergate-Timestamp``
(seconds), so the bridge can refuse a replay older than a few minutes. ``Idempotency-Key``
carries the message's key: the bridge dedupes a re-send after a crash on it.

A 2xx is taken; 408, 425, 429 and 5xx, timeouts and refused connections are tried again later;
any other 4xx is the bridge saying never (a member it cannot reach, a body it rejects).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hub.notify.channel import Outgoing, Refused, Retry, Sent

RETRIED = {408, 425, 429}


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    secret: SecretStr
    timeout_s: float = Field(10.0, gt=0, le=120)
    ca_file: Path | None = None  # a private CA the bridge's certificate chains to
    # Plain http only to this box (a bridge beside the hub, the tests): the body is personal.
    allow_http_loopback: bool = False

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        return url

    @model_validator(mode="after")
    def _https(self) -> WebhookSettings:
        parsed = urlparse(self.url)
        loopback = parsed.hostname in ("127.0.0.1", "localhost", "::1")
        if parsed.scheme != "https" and not (self.allow_http_loopback and loopback):
            raise ValueError(f"the webhook URL {self.url!r} must be https (messages carry"
                             " personal data); plain http only to this box with"
                             " allow_http_loopback")
        return self


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def body_of(message: Outgoing) -> bytes:
    return json.dumps({"key": message.key, "member_id": message.member_id, "to": message.to,
                       "purpose": message.purpose, "template": message.template,
                       "params": message.params, "text": message.text},
                      ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        verify: bool | str = str(settings.ca_file) if settings.ca_file else True
        self._client = httpx.AsyncClient(timeout=settings.timeout_s, verify=verify,
                                         limits=httpx.Limits(max_connections=16))

    async def send(self, message: Outgoing) -> Sent:
        body = body_of(message)
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Idempotency-Key": message.key, "X-Membergate-Timestamp": stamp,
                   "X-Membergate-Signature": signature(
                       self.settings.secret.get_secret_value(), stamp, body)}
        try:
            answer = await self._client.post(self.settings.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Retry(f"webhook unreachable: {type(exc).__name__}") from None
        if answer.is_success:
            return Sent(provider_id=answer.headers.get("X-Message-Id"))
        if answer.status_code >= 500 or answer.status_code in RETRIED:
            raise Retry(f"webhook answered {answer.status_code}")
        raise Refused(f"webhook answered {answer.status_code}: {answer.text[:200]}")

    @staticmethod
    def check(purpose: str, text: str) -> None:
        if not text.strip():
            raise ValueError("the message is empty")

    async def aclose(self) -> None:
        await self._client.aclose()
