"""The hub's ingest pipeline: groups of batches in one commit, acks only after it, and one batch
that cannot be applied does not hold back the others."""

from __future__ import annotations

import asyncio

import pytest

from hub.bench import make_workload
from hub.core.db import HubDatabase, Tx
from hub.ledger import pipeline as pipeline_mod
from hub.ledger.apply import ApplyResult, apply_facts
from hub.ledger.facts import Decoded, decode
from hub.ledger.pipeline import Applied, IngestPipeline
from protocol.codec import DEFAULT_MAX_BYTES


def _now() -> int:
    return 1_700_000_000_000


async def _queued_then_run(db: HubDatabase, applied: Applied, payloads: list[bytes]
                           ) -> IngestPipeline:
    """Every batch validated and queued before the pipeline's worker runs (it finds them all
    waiting), then run until drained."""
    pipe = IngestPipeline(db, None, _now, applied, max_group=8, max_queued=64)
    for payload in payloads:
        await pipe.put(decode(payload, max_bytes=DEFAULT_MAX_BYTES))
    pipe.start()
    try:
        await asyncio.wait_for(pipe.drained(), 60)
    finally:
        await pipe.close()
    return pipe


async def test_queued_batches_commit_together_and_are_acked_after(hub_db: HubDatabase) -> None:
    work = make_workload(4, 2_000, batch_events=100)
    seen: list[list[ApplyResult]] = []
    committed_at_callback: list[int] = []

    async def applied(results: list[ApplyResult]) -> None:
        # What the results say was applied must already be readable: committed, not pending.
        committed_at_callback.append(await hub_db.transaction(
            lambda tx: int(tx.scalar("SELECT count(*) FROM events", default=0))))
        seen.append(results)

    pipe = await _queued_then_run(hub_db, applied, work.payloads)
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

    def flaky(tx: Tx, batch: Decoded, *args: object, **kwargs: object) -> ApplyResult:
        if batch.store_id == "S002":
            raise RuntimeError("this store's batches break the database")
        return apply_facts(tx, batch, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_mod, "apply_facts", flaky)
    acked: dict[str, int] = {}

    async def applied(results: list[ApplyResult]) -> None:
        for r in results:
            acked[r.ack.store_id] = r.ack.seq

    await _queued_then_run(hub_db, applied, work.payloads)
    # S002 is never acked (it resends later); S001 and S003 are whole, nothing of S002 stayed.
    assert acked == {"S001": 200, "S003": 200}
    stores = await hub_db.transaction(lambda tx: dict(tx.all(
        "SELECT store_id, count(*) FROM events GROUP BY store_id")))
    assert stores == {"S001": 200, "S003": 200}


async def test_submitted_payloads_are_validated_in_a_worker_refused_or_applied_in_order(
        hub_db: HubDatabase) -> None:
    from hub.ledger.pipeline import Validators

    work = make_workload(2, 400, batch_events=100)  # S001 and S002, 2 batches each
    refusals: list[tuple[str, str]] = []
    acks: list[tuple[str, int]] = []

    async def applied(results: list[ApplyResult]) -> None:
        acks.extend((r.ack.store_id, r.ack.seq) for r in results)

    async def refused(store_id: str, reason: str, detail: str) -> None:
        refusals.append((store_id, reason))

    validators = Validators(1, DEFAULT_MAX_BYTES)
    await validators.start()
    pipe = IngestPipeline(hub_db, None, _now, applied, validators=validators,
                          on_refused=refused).start()
    try:
        await pipe.submit("S001", b"\xc1 not msgpack")  # refused in the worker: malformed
        await pipe.submit("S002", work.payloads[0])  # S001's batch on S002's topic
        for store, payload in zip(work.stores, work.payloads, strict=True):
            await pipe.submit(store, payload)
        await asyncio.wait_for(pipe.drained(), 60)
    finally:
        await pipe.close()
        validators.close()
    assert refusals == [("S001", "malformed"), ("S002", "wrong_store")]
    # Each store's batches applied in the order they arrived (a gap would show as resend).
    assert [a for a in acks if a[0] == "S001"] == [("S001", 100), ("S001", 200)]
    assert [a for a in acks if a[0] == "S002"] == [("S002", 100), ("S002", 200)]


async def test_a_batch_only_the_pydantic_fallback_accepts_is_applied_and_counted(
        hub_db: HubDatabase) -> None:
    """The compiled validator is stricter than pydantic in a few places (here: an event id
    sent as msgpack bin, which pydantic's lax str accepts): such a batch is still applied, and
    the hub's status counts it, since each one costs a slow decode."""
    import msgpack

    from hub.ledger.pipeline import Validators

    work = make_workload(1, 200, batch_events=100)
    data = msgpack.unpackb(work.payloads[0])
    data["events"][0]["event_id"] = data["events"][0]["event_id"].encode()
    odd = msgpack.packb(data, use_bin_type=True)
    acks: list[int] = []

    async def applied(results: list[ApplyResult]) -> None:
        acks.extend(r.ack.seq for r in results)

    validators = Validators(1, DEFAULT_MAX_BYTES)
    await validators.start()
    pipe = IngestPipeline(hub_db, None, _now, applied, validators=validators).start()
    try:
        await pipe.submit("S001", odd)
        await pipe.submit("S001", work.payloads[1])
        await asyncio.wait_for(pipe.drained(), 60)
    finally:
        await pipe.close()
        validators.close()
    assert acks == [100, 200]
    assert pipe.slow_validations == 1  # the second batch took the compiled path


async def test_a_dead_validation_worker_is_replaced_and_nothing_is_lost(
        hub_db: HubDatabase) -> None:
    import os
    import signal

    from hub.ledger.pipeline import Validators

    work = make_workload(1, 300, batch_events=100)
    acks: list[int] = []

    async def applied(results: list[ApplyResult]) -> None:
        acks.extend(r.ack.seq for r in results)

    async def refused(store_id: str, reason: str, detail: str) -> None:
        raise AssertionError(f"refused {store_id}: {reason} {detail}")

    validators = Validators(1, DEFAULT_MAX_BYTES)
    await validators.start()
    pipe = IngestPipeline(hub_db, None, _now, applied, validators=validators,
                          on_refused=refused).start()
    try:
        await pipe.submit("S001", work.payloads[0])
        await asyncio.wait_for(pipe.drained(), 60)
        # What the OOM killer would do to the worker between two batches.
        pool = validators._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        for payload in work.payloads[1:]:
            await pipe.submit("S001", payload)
        await asyncio.wait_for(pipe.drained(), 60)
    finally:
        await pipe.close()
        validators.close()
    assert validators.restarts == 1
    assert acks == [100, 200, 300]


async def test_other_work_gives_way_to_queued_batches(hub_db: HubDatabase) -> None:
    """What gives way (HQ's reads, projection pages) starts only once the queued batches are
    applied, when it may wait long enough; and goes ahead when nothing is queued."""
    work = make_workload(2, 1_000, batch_events=100)
    applied: list[int] = []

    async def count(results: list[ApplyResult]) -> None:
        applied.extend(r.applied for r in results)

    pipe = IngestPipeline(hub_db, None, _now, count, max_group=2, max_queued=64)
    assert not pipe.busy(0)
    await pipe.give_way(60)  # nothing queued: no wait at all
    for payload in work.payloads:
        await pipe.put(decode(payload, max_bytes=DEFAULT_MAX_BYTES))
    assert pipe.busy(0)
    pipe.start()
    try:
        await pipe.give_way(60)
        assert sum(applied) == work.events  # every queued batch went first
        assert pipe.busy(60) and not pipe.busy(0)  # one was applied just now; none waits
    finally:
        await pipe.close()
