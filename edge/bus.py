"""In-process publish/subscribe for the POS WebSocket stream.

A slow or vanished subscriber must never hold up a checkout: each has a bounded queue and loses
its oldest events (with a ``dropped`` count it can see) rather than blocking the publisher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

QUEUE_LIMIT = 256


@dataclass(eq=False)  # identity hash: kept in a set
class Subscription:
    terminal_id: str | None  # None: every terminal (store dashboards)
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )
    dropped: int = 0


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._seq = 0

    def publish(self, kind: str, terminal_id: str | None, **data: Any) -> None:
        self._seq += 1
        event = {"seq": self._seq, "type": kind, "terminal_id": terminal_id, "at": time.time(),
                 **data}
        for sub in list(self._subs):
            if sub.terminal_id is not None and terminal_id is not None \
                    and sub.terminal_id != terminal_id:
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(event)

    async def subscribe(self, terminal_id: str | None) -> AsyncIterator[dict[str, Any]]:
        sub = Subscription(terminal_id)
        self._subs.add(sub)
        try:
            while True:
                yield await sub.queue.get()
        finally:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
