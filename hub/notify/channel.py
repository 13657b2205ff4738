"""The one shape every message channel has (``hub.notify.channels.<name>``), like a driver's.

The outbox (``hub.notify.outbox``) decides *whether* and *when* a message leaves — consent,
quiet hours, the frequency budget, retries; a channel only knows *how*: it renders nothing and
stores nothing, it takes a ready ``Outgoing`` and hands it to its provider once. It says how
that went by returning ``Sent`` or raising ``Retry`` (the provider may take it later: down,
throttled, a timeout) or ``Refused`` (it never will: an invalid number, a template the
provider rejects) — the outbox backs off on the first and dead-letters on the second.

Every channel gives the provider the message's ``key`` where the provider has a place for it
(an ``Idempotency-Key`` header, the SMS ``OutId``, the mail's ``Message-ID``): a hub killed
between the provider's answer and the outbox's record sends again on restart, and the key
lets the other side recognise the repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Purpose = Literal["marketing", "transactional"]


@dataclass(frozen=True)
class Outgoing:
    """One message, ready for its provider."""

    key: str  # the outbox's key: the same on every attempt of this message
    member_id: str
    to: str  # the address on this channel: a phone number, an e-mail address, a member id
    purpose: Purpose
    template: str  # the channel's template: an SMS template code, an e-mail subject line ...
    params: dict[str, str] = field(default_factory=dict)  # the template's placeholders, filled
    text: str = ""  # the whole text as the member reads it (e-mail body, webhook, in store)


@dataclass(frozen=True)
class Sent:
    provider_id: str | None = None  # the provider's id of the message, for delivery receipts


class Retry(Exception):
    """The provider did not take the message this time; it may later."""


class Refused(Exception):
    """The provider will never take this message as it is."""


class Channel(Protocol):
    name: str  # "sms", "email", "webhook", "store": the consent channel it answers to

    async def send(self, message: Outgoing) -> Sent: ...

    async def aclose(self) -> None: ...
