"""The uplink's way through the hub: validated in worker processes, applied in groups on the
database thread, acked after commit.

Three things make this faster than taking batches one at a time, without giving up any
guarantee:

* Two cores: strict validation (``protocol.fastcodec``) of the next batches runs in a worker
  process (``Validators``) while this process applies the previous ones; each batch comes back
  reduced to its log rows and per-member sums (``hub.ledger.facts``). Results are taken in arrival
  order, so a store's batches are applied in the order they came, and a batch the codec
  refuses is reported in that order too.
* Overlap: SQLite's statement work and fsync release the GIL, so this process's event loop keeps
  reading the broker meanwhile.
* Group commit: the batches that queued up meanwhile are applied in one transaction, so the
  fsync a commit costs is paid once per group instead of once per batch. Every batch is still
  applied whole and in arrival order, and no ack leaves before the commit that holds it.

If a group's transaction fails, nothing of it is kept and its batches are applied again one
transaction each, so one batch that cannot be applied does not hold back the others.

Workers are spawned: a script that starts a hub needs the usual ``if __name__ == "__main__":``
guard (the console scripts and ``python -m hub.cli`` have it).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from hub.core.db import HubDatabase, Tx
from hub.ledger.allowances import AllowancePolicy
from hub.ledger.apply import ApplyResult, apply_facts
from hub.ledger.facts import Decoded, decode
from hub.members.tiers import DEFAULT_ZONE, TierRules
from protocol import tasks
from protocol.codec import CodecError
from protocol.runtime import tune_gc

log = logging.getLogger("membergate.hub.pipeline")

MAX_GROUP_BATCHES = 8  # 8 x 500 events: one fsync for ~4,000 events under load
MAX_QUEUED = 16  # decoded batches waiting for the database; beyond, the reader waits
VALIDATING_AHEAD = 3  # batches in the validation workers' hands at once


class Validators:
    """Strict validation of uplink batches, in worker processes.

    Validating and reducing a batch hold the GIL, so in one process they take turns with the
    apply on one core. A worker process validates the next batch (and reduces it to
    ``hub.ledger.facts``) while this process applies the previous one; what comes back is plain
    tuples, dicts and bytes, cheap to unpickle. Since validation runs compiled
    (``protocol.fastcodec``, ~7 µs an event against ~35 µs for the apply on the bench machine)
    the worker gains less than it did with pydantic (~45 µs) — within noise of ``workers=0``,
    which validates inline and saves the process.
    Workers are spawned, not forked: the hub has threads (database, MQTT) by the time they
    start."""

    def __init__(self, workers: int, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.workers = workers
        self.restarts = 0  # pools replaced after a worker died (OOM killer, kill -9)
        self._pool: ProcessPoolExecutor | None = self._new_pool() if workers > 0 else None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_worker_init)

    async def __aenter__(self) -> Validators:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def start(self) -> None:
        if self._pool is not None:  # pay the worker's start (imports, schemas) now, not on
            await asyncio.wrap_future(self._pool.submit(_warm))  # the first batch

    async def decode(self, payload: bytes, zone: str = DEFAULT_ZONE) -> Decoded:
        """Raises ``CodecError`` (from the worker) for a payload the hub refuses; ``zone`` is
        the sending store's time zone (its spend months)."""
        if self._pool is None:
            return decode(payload, max_bytes=self.max_bytes, zone=zone)
        for attempt in (1, 2):
            pool = self._pool
            try:
                return await asyncio.wrap_future(
                    pool.submit(partial(decode, payload, max_bytes=self.max_bytes, zone=zone)))
            except BrokenProcessPool:
                # A dead worker breaks its pool for good: start a new one (once per broken
                # pool, however many batches were in flight) and validate this batch again.
                if self._pool is pool:
                    log.warning("a validation worker died; starting a new pool")
                    self.restarts += 1
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
                if attempt == 2:  # not acked: the store sends it again after its timeout
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _warm() -> bool:
    return True


def _worker_init() -> None:
    tune_gc()
    # A hub killed with SIGKILL cannot stop its workers, and a worker blocked waiting for work
    # would outlive it; under systemd the unit's cgroup is killed whole, elsewhere this is it.
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


Applied = Callable[[list[ApplyResult]], Awaitable[None]]


Refused = Callable[[str, str, str], Awaitable[None]]  # (store_id, reason, detail)


class IngestPipeline:
    """``submit`` raw uplink payloads; they are validated (several at once, by ``validators``),
    refused through ``on_refused`` or applied in arrival order, and ``on_applied`` gets each
    group's results after its commit. ``put`` takes an already validated batch."""

    def __init__(self, db: HubDatabase, tiers: TierRules | None, now_ms: Callable[[], int],
                 on_applied: Applied, *, allowance: AllowancePolicy | None = None,
                 validators: Validators | None = None,
                 on_refused: Refused | None = None, max_group: int = MAX_GROUP_BATCHES,
                 max_queued: int = MAX_QUEUED, validating: int = VALIDATING_AHEAD,
                 chain_zone: str = DEFAULT_ZONE,
                 zone_of: Callable[[str], str] | None = None) -> None:
        self.db = db
        # Each store's spend counts in its own calendar months, the tier window in the chain's.
        self.chain_zone = chain_zone
        self.zone_of = zone_of or (lambda _store: chain_zone)
        self.tiers = tiers
        self.allowance = allowance
        self.now_ms = now_ms
        self.on_applied = on_applied
        self.on_refused = on_refused
        self.validators = validators
        self.max_group = max_group
        self.group_sizes: list[int] = []  # batches per transaction, for the bench and status
        self.slow_validations = 0  # batches only the pydantic fallback accepted (status)
        self.last_applied = float("-inf")  # time.monotonic() of the last group's commit
        self._applying = 0  # batches in the transaction being applied now
        self.applied_events = 0  # events applied, duplicates resent, gaps seen (status)
        self.duplicate_events = 0
        self.gaps = 0
        self._queue: asyncio.Queue[Decoded] = asyncio.Queue(max_queued)
        # Batches being validated, in arrival order: the worker always has the next one while
        # this process unpickles the last, and order is kept by awaiting them in turn.
        self._validating: asyncio.Queue[tuple[str, asyncio.Future[Decoded]]] = asyncio.Queue(
            validating)
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> IngestPipeline:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> IngestPipeline:
        self._tasks = [asyncio.create_task(self._run(), name="hub-ingest"),
                       asyncio.create_task(self._in_order(), name="hub-validated")]
        return self

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await tasks.stop(task)
        while not self._validating.empty():  # nothing left running for a closed hub
            self._validating.get_nowait()[1].cancel()

    async def submit(self, store_id: str, payload: bytes) -> None:
        """Queue a payload from ``store_id``'s topic; waits while enough are being validated."""
        assert self.validators is not None, "submit needs validators"
        future = asyncio.ensure_future(self.validators.decode(payload, self.zone_of(store_id)))
        await self._validating.put((store_id, future))

    async def give_way(self, max_wait_s: float, quiet_s: float = 0.0) -> None:
        """Wait while ingest is ``busy`` (batches queued, or one applied within
        ``quiet_s``), for at most ``max_wait_s``: other work on the hub's two cores (HQ's
        reads, projection pages) lets the stores' batches go first."""
        deadline = time.monotonic() + max_wait_s
        while self.busy(quiet_s) and time.monotonic() < deadline:  # noqa: ASYNC110 - a figure
            await asyncio.sleep(0.01)

    def busy(self, quiet_s: float) -> bool:
        """Uplink batches are waiting or being applied, or a group was applied within
        ``quiet_s``: a store is sending (other work gives way)."""
        waiting = self._queue.qsize() + self._validating.qsize() + self._applying
        return bool(waiting) or time.monotonic() - self.last_applied < quiet_s

    async def put(self, item: Decoded) -> None:
        await self._queue.put(item)

    async def drained(self) -> None:
        """Returns once everything submitted or put so far is refused or applied and handed
        to ``on_applied``."""
        await self._validating.join()
        await self._queue.join()

    async def _in_order(self) -> None:
        while True:
            store_id, future = await self._validating.get()
            try:
                decoded = await future
            except CodecError as exc:
                await self._refuse(store_id, exc.code, exc.message)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a worker died: the store resends after its timeout
                log.exception("validating a batch of store %s failed", store_id)
                await self._refuse(store_id, "validation_failed", repr(exc))
                continue
            else:
                if decoded.store_id != store_id:
                    await self._refuse(store_id, "wrong_store",
                                       f"batch for {decoded.store_id} on the topic of {store_id}")
                    continue
                self.slow_validations += decoded.slow
                await self._queue.put(decoded)
            finally:
                self._validating.task_done()

    async def _refuse(self, store_id: str, reason: str, detail: str) -> None:
        if self.on_refused is not None:
            await self.on_refused(store_id, reason, detail)

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            self._applying = len(group)
            try:
                await self._apply(group)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("applying %d batches failed", len(group))
            finally:
                self._applying = 0
                for _ in group:
                    self._queue.task_done()

    async def _apply(self, group: list[Decoded]) -> None:
        tiers, allowance, now, zone = self.tiers, self.allowance, self.now_ms(), self.chain_zone

        def apply_all(tx: Tx) -> list[ApplyResult]:
            return [apply_facts(tx, d, now, tiers, allowance, chain_zone=zone) for d in group]

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
        self.last_applied = time.monotonic()
        self.group_sizes.append(len(group))
        del self.group_sizes[:-10_000]  # the recent ones are what status reports
        for result in results:
            self.applied_events += result.applied
            self.duplicate_events += result.duplicates
            if result.gap:
                self.gaps += 1
                log.info("gap from %s: have %d; asking to resend", result.ack.store_id,
                         result.ack.seq)
        await self.on_applied(results)
