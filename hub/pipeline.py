"""The uplink's way through the hub: decode on the event loop, apply in groups on the database
thread, ack after commit.

Two things make this faster than taking batches one at a time, without giving up any
guarantee:

* Overlap: while the database thread applies and commits (SQLite's fsync and statement work
  release the GIL), the loop already decodes and validates the next batches.
* Group commit: the batches that queued up meanwhile are applied in one transaction, so the
  fsync a commit costs is paid once per group instead of once per batch. Every batch is still
  applied whole and in arrival order, and no ack leaves before the commit that holds it.

If a group's transaction fails, nothing of it is kept and its batches are applied again one
transaction each, so one batch that cannot be applied does not hold back the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from hub.db import HubDatabase, Tx
from hub.facts import Decoded
from hub.ingest import ApplyResult, apply_facts
from hub.tiers import TierRules

log = logging.getLogger("membergate.hub.pipeline")

MAX_GROUP_BATCHES = 8  # 8 x 500 events: one fsync for ~4,000 events under load
MAX_QUEUED = 16  # decoded batches waiting for the database; beyond, the reader waits


Applied = Callable[[list[ApplyResult]], Awaitable[None]]


class IngestPipeline:
    """``put`` decoded batches; ``on_applied`` gets each group's results after its commit."""

    def __init__(self, db: HubDatabase, tiers: TierRules | None, now_ms: Callable[[], int],
                 on_applied: Applied, *, max_group: int = MAX_GROUP_BATCHES,
                 max_queued: int = MAX_QUEUED) -> None:
        self.db = db
        self.tiers = tiers
        self.now_ms = now_ms
        self.on_applied = on_applied
        self.max_group = max_group
        self.group_sizes: list[int] = []  # batches per transaction, for the bench and status
        self._queue: asyncio.Queue[Decoded] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> IngestPipeline:
        self._task = asyncio.create_task(self._run(), name="hub-ingest")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def put(self, item: Decoded) -> None:
        await self._queue.put(item)

    async def drained(self) -> None:
        """Returns once everything put so far is applied and handed to ``on_applied``."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                await self._apply(group)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("applying %d batches failed", len(group))
            finally:
                for _ in group:
                    self._queue.task_done()

    async def _apply(self, group: list[Decoded]) -> None:
        tiers, now = self.tiers, self.now_ms()

        def apply_all(tx: Tx) -> list[ApplyResult]:
            return [apply_facts(tx, d, now, tiers) for d in group]

        try:
            results = await self.db.transaction(apply_all)
        except Exception:
            if len(group) == 1:
                raise
            log.warning("a group of %d batches failed; applying them one by one", len(group))
            for d in group:
                try:
                    await self._apply([d])
                except Exception:  # not acked: the store sends it again after its timeout
                    log.exception("a batch of store %s could not be applied", d.store_id)
            return
        self.group_sizes.append(len(group))
        await self.on_applied(results)
