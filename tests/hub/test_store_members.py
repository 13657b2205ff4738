"""Each store's members (``hub.members.store_members``), kept row by row, equal what schema
28's fill makes of the same members from scratch, on both backends, after each path that
changes them: registrations and purchases at other stores (the member-activity projection), a
merge, tier changes in a batch and by the tier job, a lifecycle pass, an erasure, two RFM
runs, and the projection rebuilt from zero."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from typing import Any

from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.core.schema import store_members_rows
from hub.ledger import erasure
from hub.ledger.apply import apply_batch
from hub.members import lifecycle, rfm, tiers
from hub.projections.catalog import projections
from hub.stores import registry
from hub.stores.registry import StoreRecord
from protocol.events import (
    Event,
    EventBatch,
    EventBody,
    MemberRegistered,
    SaleFinalized,
    SaleLine,
    Tender,
)
from protocol.hlc import pack

ZONE = "Asia/Shanghai"
STORES = ("S001", "S002", "S003")
NOW = int(datetime(2026, 7, 15, 2, 0, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000
TIERS = tiers.TierRules(thresholds={"silver": 30_000, "gold": 90_000})
SELECT = ("SELECT store_id, member_id, tier, home_store, registered_hlc, stage, grp"
          " FROM store_members ORDER BY store_id, member_id")


class _Rollback(Exception):
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        super().__init__("read, then undone")
        self.rows = rows


async def held(db: HubDatabase) -> list[tuple[Any, ...]]:
    return await db.read(lambda tx: [tuple(r) for r in tx.all(SELECT)])


async def from_scratch(db: HubDatabase) -> list[tuple[Any, ...]]:
    """The rows schema 28's fill makes now, in a transaction then undone."""
    def fill(tx: Tx) -> None:
        tx.execute("DELETE FROM store_members")
        tx.execute(store_members_rows())
        raise _Rollback([tuple(r) for r in tx.all(SELECT)])
    try:
        await db.transaction(fill)
    except _Rollback as done:
        return done.rows
    raise AssertionError("the fill was not undone")


async def same(db: HubDatabase) -> list[tuple[Any, ...]]:
    rows = await held(db)
    assert rows == await from_scratch(db)
    return rows


class Fleet:
    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.seq: dict[str, int] = {}
        self.runner = ProjectionRunner(db, projections(ZONE))
        self.sales = 0

    async def send(self, store: str, bodies: list[tuple[int, EventBody]],
                   rules: tiers.TierRules | None = None) -> None:
        events = []
        for at, body in bodies:
            seq = self.seq[store] = self.seq.get(store, 0) + 1
            events.append(Event(event_id=f"{store}-{seq}", store_id=store, epoch=1, seq=seq,
                                hlc=pack(at, seq), body=body))
        batch = EventBatch(store_id=store, epoch=1, events=events)
        await self.db.transaction(lambda tx: apply_batch(tx, batch, NOW, rules, zone=ZONE,
                                                         chain_zone=ZONE))

    def sale(self, member: str, total: int) -> SaleFinalized:
        self.sales += 1
        return SaleFinalized(
            sale_id=f"d{self.sales}", terminal_id="T1", member_id=member, currency="CNY",
            lines=[SaleLine(line_no=1, sku="A", name="a", category="x", qty=1,
                            unit_price=total, gross=total, discount=0, net=total, points=0)],
            tenders=[Tender(kind="cash", amount=total)], subtotal=total, discount_total=0,
            total=total, points_earned=0)


async def test_store_members_follow_every_change(hub_db: HubDatabase) -> None:
    db, rng = hub_db, random.Random(28)
    await db.transaction(lambda tx: registry.upsert(tx, [
        StoreRecord(store_id=s, name=s, region="East") for s in STORES]))
    fleet = Fleet(db)
    ids = [f"m{i:02d}" for i in range(30)]
    home = {m: STORES[i % 3] for i, m in enumerate(ids)}
    start = NOW - 200 * DAY_MS
    for store in STORES:
        await fleet.send(store, [(start + i * 60_000, MemberRegistered(
            member_id=m, member_code=f"C-{m}", phone=f"+86139{i:08d}", name=m))
            for i, m in enumerate(ids) if home[m] == store])
    # Purchases at home and elsewhere, over months (the lifecycle and RFM see them).
    for store in STORES:
        await fleet.send(store, [(start + DAY_MS * rng.randrange(1, 150) + k,
                                  fleet.sale(m, rng.randrange(1_000, 20_000)))
                                 for k, m in enumerate(rng.sample(ids, 12))])
    await fleet.runner.catch_up()
    rows = await same(db)
    assert {r[0] for r in rows} == set(STORES)
    assert any(r[0] != r[3] for r in rows)  # a member counted where they bought, not home

    # A merge: the alias (same phone as m01) bought at S003 before the projection read it.
    await fleet.send("S002", [(start + 160 * DAY_MS, MemberRegistered(
        member_id="x01", member_code="C-x01", phone="+86139" + f"{1:08d}", name="别名"))])
    await fleet.send("S003", [(start + 161 * DAY_MS, fleet.sale("x01", 5_000))])
    await fleet.runner.catch_up()
    assert await db.read(lambda tx: tx.scalar(
        "SELECT merged_into FROM members WHERE member_id = 'x01'")) == "m01"
    rows = await same(db)
    assert not [r for r in rows if r[1] == "x01"]
    assert ("S003", "m01") in {(r[0], r[1]) for r in rows}
    # A member the stores know (rows held) merged into one registered earlier elsewhere,
    # whose store sent it late: the merged id counts nowhere at once, before the projection.
    await fleet.send("S002", [(start + 170 * DAY_MS, MemberRegistered(
        member_id="y01", member_code="C-y01", phone="+8613700000001", name="新"))])
    await fleet.runner.catch_up()
    assert ("S002", "y01") in {(r[0], r[1]) for r in await same(db)}
    await fleet.send("S003", [(start + 165 * DAY_MS, MemberRegistered(
        member_id="z01", member_code="C-z01", phone="+8613700000001", name="早"))])
    assert await db.read(lambda tx: tx.scalar(
        "SELECT merged_into FROM members WHERE member_id = 'y01'")) == "z01"
    assert not [r for r in await held(db) if r[1] == "y01"]
    await fleet.runner.catch_up()
    assert ("S002", "z01") not in {(r[0], r[1]) for r in await same(db)}

    # Tiers: a batch that lifts a member (the hot path), then the tier job under new rules.
    await fleet.send("S001", [(NOW - DAY_MS, fleet.sale("m00", 200_000))], TIERS)
    await fleet.runner.catch_up()
    rows = await same(db)
    assert {r[2] for r in rows if r[1] == "m00"} == {"gold"}
    lower = tiers.TierRules(thresholds={"silver": 5_000, "gold": 1_000_000})
    changed = await db.transaction(lambda tx: tiers.recompute(tx, lower, NOW, zone=ZONE))
    assert "m00" in changed
    rows = await same(db)
    assert {r[2] for r in rows if r[1] == "m00"} == {"silver"}
    assert len({r[2] for r in rows}) >= 2

    # Lifecycle stages for everyone, then an erased member's taken away.
    today = date(2026, 7, 15)

    def stages(tx: Tx) -> None:
        after: str | None = ""
        while after is not None:
            _moved, after = lifecycle.update_page(tx, lifecycle.LifecycleRules(), today, ZONE,
                                                  after)
    await db.transaction(stages)
    rows = await same(db)
    assert len({r[5] for r in rows} - {None}) >= 2
    erased = next(r[1] for r in rows if r[5] is not None)

    def erase(tx: Tx) -> None:
        erasure.erase(tx, erased)
        lifecycle.update_members(tx, lifecycle.LifecycleRules(), today, ZONE, [erased])
    await db.transaction(erase)
    rows = await same(db)
    assert {r[5] for r in rows if r[1] == erased} == {None}

    # Two RFM runs, purchases between them moving some members' groups.
    params = rfm.RfmParams(as_of=date(2026, 7, 14))
    await db.transaction(lambda tx: rfm.run(tx, params, NOW))
    first = await same(db)
    assert len({r[6] for r in first} - {None}) >= 2
    for store in STORES:
        await fleet.send(store, [(NOW - DAY_MS + k, fleet.sale(m, 60_000))
                                 for k, m in enumerate(rng.sample(ids[2:], 6))])
    await fleet.runner.catch_up()
    await db.transaction(lambda tx: rfm.run(tx, params, NOW + 1))
    second = await same(db)
    assert {(r[0], r[1], r[6]) for r in second} != {(r[0], r[1], r[6]) for r in first}

    # Rebuilt from zero: the same rows.
    await fleet.runner.rebuild("member_activity")
    assert await held(db) == second
