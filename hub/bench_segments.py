"""What 1,000 active segments cost the keeper (issue 16: "1,000 active segments work"): on
``members`` members with a year of sales, activity, consents and an RFM run (the RFM bench's
data), 1,000 segments of mixed conditions are created and evaluated whole by the keeper
(``segments_whole_s``), then a pass looks at ``PASS_MEMBERS`` changed members for all of them
(``segments_pass_s``: what every batch's members cost, once the projections have them)."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from typing import Any

from hub.bench_rfm import AS_OF, _load, _segment_inputs
from hub.core.db import HubDatabase
from hub.members import lifecycle, rfm, segments
from hub.members.segment_keeper import SegmentKeeper, mark

SEGMENTS = 1000
PASS_MEMBERS = 2000


def definitions(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` segment definitions of the kinds a chain writes, with varied parameters."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(count):
        kind = i % 6
        if kind == 0:
            d: dict[str, Any] = {"all": [
                {"field": "tier", "in": rng.sample(["gold", "silver", "standard"], 2)},
                {"field": "days_since_purchase", "gte": rng.randrange(7, 180)}]}
        elif kind == 1:
            d = {"field": "spend", "window_days": rng.choice([30, 90, 180, 365]),
                 "gte": rng.randrange(1, 50) * 1000}
        elif kind == 2:
            d = {"all": [{"field": "rfm_m", "gte": rng.randrange(1, 6)},
                         {"field": "consent", "in": ["sms"]}]}
        elif kind == 3:
            d = {"field": "purchases", "gte": rng.randrange(1, 6)}
        elif kind == 4:
            d = {"any": [{"field": "rfm_group", "in": ["HHH", "HLH"]},
                         {"all": [{"field": "tier", "in": ["gold"]},
                                  {"field": "items", "gte": rng.randrange(1, 10)}]}]}
        else:
            d = {"not": {"field": "lifecycle_stage", "in": ["lost"]}}
        out.append(d)
    return out


async def _measure(url: str, members: int, count: int) -> dict[str, Any]:
    async with HubDatabase(url) as db:
        await db.transaction(lambda tx: _load(tx, members))
        await db.transaction(_segment_inputs)
        await db.transaction(lambda tx: rfm.run(tx, rfm.RfmParams(as_of=AS_OF), 0))
        keeper = SegmentKeeper(db, "Asia/Shanghai", lifecycle.LifecycleRules(),
                               today=lambda: AS_OF)
        await keeper.nightly()  # stages first, as the running hub has them
        t = time.perf_counter()
        for i, tree in enumerate(definitions(count)):
            await db.transaction(functools.partial(
                segments.create, name=f"bench {i:04d}", definition=tree,
                for_tills=i % 10 == 0, tag=None, by="bench", now_ms=0, today=AS_OF,
                zone="Asia/Shanghai"))
        created_s = time.perf_counter() - t
        t = time.perf_counter()
        whole = await keeper.run()
        whole_s = time.perf_counter() - t
        held = await db.read(lambda tx: int(tx.scalar(
            "SELECT count(*) FROM segment_members", default=0)))
        picked = [f"m{i:07d}" for i in random.Random(2).sample(range(members),
                                                               min(PASS_MEMBERS, members))]
        await db.transaction(lambda tx: mark(tx, picked))
        t = time.perf_counter()
        done = await keeper.run()
        pass_s = time.perf_counter() - t
        return {"segments_active": count, "segments_members": members,
                "segments_create_s": round(created_s, 2),
                "segments_whole_s": round(whole_s, 2),
                "segments_whole_rows": held, "segments_whole_evaluated": whole["segments"],
                "segments_pass_members": done["members"],
                "segments_pass_s": round(pass_s, 2)}


def measure_segments(url: str, members: int = 100_000, count: int = SEGMENTS) -> dict[str, Any]:
    return asyncio.run(_measure(url, members, count))
