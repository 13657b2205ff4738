"""Stopping a background task for good.

``task.cancel(); with suppress(CancelledError): await task`` can wait forever: a cancellation
that lands while the task is itself waiting for a helper it has just cancelled (the same
``suppress`` around ``await helper``) is taken for the helper's and swallowed, and the task goes
on — reconnecting, sleeping, serving — while its stopper waits. Under load a store's and a
hub's shutdown hung like this for the whole 300 s of a test's timeout. ``stop`` cancels again
until the task has ended, and never swallows the stopper's own cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

AGAIN_AFTER_S = 5.0  # a task's own clean-up after a cancel (a DISCONNECT's grace) fits in this


async def stop(task: asyncio.Task[Any] | asyncio.Future[Any], *,
               again_after_s: float = AGAIN_AFTER_S) -> None:
    """Cancel ``task`` and return once it has ended; an error it ended with is raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=again_after_s)
    if not task.cancelled():
        task.result()
