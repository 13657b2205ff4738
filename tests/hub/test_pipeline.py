"""The hub's ingest pipeline: groups of batches in one commit, acks only after it, and one batch
that cannot be applied does not hold back the others."""

from __future__ import annotations

import asyncio

import pytest

from hub import pipeline as pipeline_mod
from hub.bench import make_workload
from hub.db import HubDatabase, Tx
from hub.facts import Decoded, decode
from hub.ingest import ApplyResult, apply_facts
from hub.pipeline import IngestPipeline
from protocol.codec import DEFAULT_MAX_BYTES


def _now() -> int:
    return 1_700_000_000_000


async def test_queued_batches_commit_together_and_are_acked_after(hub_db: HubDatabase) -> None:
    work = make_workload(4, 2_000, batch_events=100)
    seen: list[list[ApplyResult]] = []
    committed_at_callback: list[int] = []

    async def applied(results: list[ApplyResult]) -> None:
        # What the results say was applied must already be readable: committed, not pending.
        committed_at_callback.append(await hub_db.transaction(
            lambda tx: int(tx.scalar("SELECT count(*) FROM events", default=0))))
        seen.append(results)

    pipe = IngestPipeline(hub_db, None, _now, applied, max_group=8, max_queued=64)
    for payload in work.payloads:  # queued before the worker runs: it finds them waiting
        await pipe.put(decode(payload, max_bytes=DEFAULT_MAX_BYTES))
    pipe.start()
    try:
        await asyncio.wait_for(pipe.drained(), 60)
    finally:
        await pipe.close()
    assert sum(r.applied for group in seen for r in group) == 2_000
    assert pipe.group_sizes and max(pipe.group_sizes) == 8  # grouped, never beyond the cap
    assert sum(pipe.group_sizes) == len(work.payloads)
    running = 0
    for group, count in zip(seen, committed_at_callback, strict=True):
        running += sum(r.applied for r in group)
        assert count == running
    last = {r.ack.store_id: r.ack.seq for group in seen for r in group}
    assert last == {"S001": 500, "S002": 500, "S003": 500, "S004": 500}


async def test_a_failing_batch_is_retried_alone_and_the_rest_still_apply(
        hub_db: HubDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    work = make_workload(3, 600, batch_events=100)

    def flaky(tx: Tx, batch: Decoded, *args: object) -> ApplyResult:
        if batch.store_id == "S002":
            raise RuntimeError("this store's batches break the database")
        return apply_facts(tx, batch, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_mod, "apply_facts", flaky)
    acked: dict[str, int] = {}

    async def applied(results: list[ApplyResult]) -> None:
        for r in results:
            acked[r.ack.store_id] = r.ack.seq

    pipe = IngestPipeline(hub_db, None, _now, applied, max_group=8, max_queued=64)
    for payload in work.payloads:
        await pipe.put(decode(payload, max_bytes=DEFAULT_MAX_BYTES))
    pipe.start()
    try:
        await asyncio.wait_for(pipe.drained(), 60)
    finally:
        await pipe.close()
    # S002 is never acked (it resends later); S001 and S003 are whole, nothing of S002 stayed.
    assert acked == {"S001": 200, "S003": 200}
    stores = await hub_db.transaction(lambda tx: dict(tx.all(
        "SELECT store_id, count(*) FROM events GROUP BY store_id")))
    assert stores == {"S001": 200, "S003": 200}
