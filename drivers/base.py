"""The shape every device module shares, so the edge wires any kind the same way.

A device module (``scanner``, ``card_reader``, ``printer``, ``display``) offers:
- ``discover(...)``: what is attached now, as configs the caller can open;
- a device class used as ``async with`` for its lifetime;
- ``events()``: an async iterator of ``DeviceEvent`` for input devices (scans, cards, health);
- commands as plain async methods for output devices (print, show);
- ``status``: the current ``DeviceStatus``.
Blocking library calls (pyscard, pyserial, sockets to printers) run in a worker thread; the event
loop only ever sees finished events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar


class DeviceKind(StrEnum):
    SCANNER = "scanner"
    CARD_READER = "card_reader"
    PRINTER = "printer"
    DISPLAY = "display"


class Health(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"
    PAPER_LOW = "paper_low"
    PAPER_OUT = "paper_out"


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    kind: DeviceKind
    health: Health
    detail: str = ""
    since: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ScanEvent:
    """A complete scan: the characters the scanner typed, without its terminator."""

    device_id: str
    code: str
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class ScanError:
    """Input that did not make a scan: undecodable bytes, or a scan longer than the limit."""

    device_id: str
    reason: str
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class CardInserted:
    """A card came into the field of a reader. ``uid`` is upper-case hex, first byte first."""

    device_id: str
    uid: str
    atr: str
    member_number: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class CardRemoved:
    device_id: str
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class CardError:
    """A card was there but could not be read (removed mid-read, unknown card, I/O error)."""

    device_id: str
    reason: str
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class HealthChanged:
    status: DeviceStatus


DeviceEvent = ScanEvent | ScanError | CardInserted | CardRemoved | CardError | HealthChanged


E = TypeVar("E")


class EventChannel(Generic[E]):
    """The loop side of a device's event stream: a queue, the last status each device's health
    events carried, and an end marker so ``stream()`` finishes when the device is closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[E | None] = asyncio.Queue()
        self.statuses: dict[str, DeviceStatus] = {}

    def put(self, event: E) -> None:
        if isinstance(event, HealthChanged):
            self.statuses[event.status.device_id] = event.status
        self.queue.put_nowait(event)

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def stream(self) -> AsyncIterator[E]:
        while (event := await self.queue.get()) is not None:
            yield event
