"""The hub's merge, on both backends: exactly-once, gaps, LWW profiles, phone merges, coupons."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from edge import demo, uplink
from edge.checkout import TenderRequest
from edge.gateway import open_gateway
from edge.service import EdgeService
from hub.core.db import HubDatabase, Tx
from hub.ledger import audit
from hub.ledger.apply import apply_batch
from hub.members import directory
from protocol.codec import decode_batch
from protocol.events import EventBatch
from tests.edge.conftest import key, make_config, register, sell


def batches(db_path: str, store_id: str, size: int) -> list[EventBatch]:
    out = []
    with sqlite3.connect(db_path) as conn:
        after = 0
        while (b := uplink.build(conn, store_id, 1, after, max_events=size)) is not None:
            out.append(decode_batch(b.payload))
            after = b.last_seq
    return out


async def _store(tmp_path: Path, store_id: str, number: int) -> EdgeService:
    cfg = make_config(tmp_path / store_id, store={"store_id": store_id, "store_number": number})
    (tmp_path / store_id).mkdir(exist_ok=True)
    svc = await open_gateway(cfg)
    await svc.apply_bundle(demo.demo_bundle())
    return svc


async def _apply(db: HubDatabase, batch: EventBatch) -> Any:
    return await db.transaction(lambda tx: apply_batch(tx, batch, 1))


async def _replayed(svc: EdgeService) -> dict[str, tuple[int, int, int]]:
    from tests.edge import invariants
    return invariants.replayed_balances(svc.config.database.path)


async def test_batches_apply_once_in_order_whatever_the_delivery(hub_db: HubDatabase,
                                                                tmp_path: Path) -> None:
    svc = await _store(tmp_path, "S001", 1)
    try:
        rng = random.Random(3)
        members = [await register(svc, f"1380013{i:04d}") for i in range(5)]
        for m in members:
            await svc.top_up(terminal_id="POS-1", idem_key=key(), member_id=m["member_id"],
                             amount=50_000, paid_by="cash")
        for _ in range(20):
            m = rng.choice(members)
            qty, price = rng.randint(1, 3), rng.randint(100, 9_000)
            # Half the sales pay partly from stored value, so both ledgers move.
            sv = [TenderRequest(kind="stored_value", amount=qty * price // 2)] \
                if rng.random() < 0.5 else []
            await sell(svc, [("A", "household", qty, price)], member_id=m["member_id"],
                       tenders=[*sv, TenderRequest(kind="cash", amount=qty * price)])
        all_batches = batches(svc.config.database.path, "S001", 7)
        assert len(all_batches) > 3
        # Deliver with duplicates, out of order, and a gap that must be resent.
        order = [*all_batches[:2], all_batches[3], *all_batches[:3], *all_batches[2:], *all_batches]
        seen_gap = False
        for b in order:
            r = await _apply(hub_db, b)
            seen_gap |= r.gap
            assert r.ack.seq >= 0
        assert seen_gap
        last = all_batches[-1].events[-1].seq
        held = await hub_db.transaction(audit.balances)
        assert held == {m: v for m, v in (await _replayed(svc)).items() if v != (0, 0, 0)}
        check = await hub_db.transaction(audit.compare)
        assert check["mismatches"] == [] and check["events"] == last
    finally:
        await svc.close()


async def test_same_phone_in_two_stores_becomes_one_member(hub_db: HubDatabase,
                                                           tmp_path: Path) -> None:
    a = await _store(tmp_path, "S001", 1)
    b = await _store(tmp_path, "S002", 2)
    try:
        ma = await register(a, "13900000001", card="04A00001")
        await sell(a, [("A", "grocery", 1, 10_000)], member_id=ma["member_id"])
        mb = await register(b, "13900000001", card="04B00001")
        await sell(b, [("B", "grocery", 1, 5_000)], member_id=mb["member_id"])
        for batch in batches(a.config.database.path, "S001", 100):
            await _apply(hub_db, batch)
        for batch in batches(b.config.database.path, "S002", 100):
            r = await _apply(hub_db, batch)
        assert r.merged == [(mb["member_id"], ma["member_id"])]
        held = await hub_db.transaction(audit.balances)
        assert held == {ma["member_id"]: (150, 0, 0)}
        page = await hub_db.transaction(lambda tx: directory.page(tx, "r1", 0, 100))
        entries = {e.member_id: e for e in page.members}
        survivor = entries[ma["member_id"]]
        assert survivor.cards == ["04A00001", "04B00001"]
        assert survivor.aliases == [mb["member_id"]]
        assert entries[mb["member_id"]].merged_into == ma["member_id"]
        assert {s.store_id: s.points for s in survivor.shares} == {"S001": 100, "S002": 50}
        assert (await hub_db.transaction(audit.compare))["mismatches"] == []
    finally:
        await a.close()
        await b.close()


async def test_a_member_merged_into_a_later_arrival_reaches_stores_as_an_alias(
        hub_db: HubDatabase, tmp_path: Path) -> None:
    """Store B's member arrives first; store A's earlier registration of the same phone
    arrives later and stands. A store that caught up in between learns that B's member is
    now an alias: its entry gets a new change number."""
    a = await _store(tmp_path, "S001", 1)
    b = await _store(tmp_path, "S002", 2)
    try:
        ma = await register(a, "13900000002", card="04A00002")
        mb = await register(b, "13900000002", card="04B00002")
        for batch in batches(b.config.database.path, "S002", 100):
            await _apply(hub_db, batch)
        checkpoint = await hub_db.transaction(directory.head)
        for batch in batches(a.config.database.path, "S001", 100):
            r = await _apply(hub_db, batch)
        assert r.merged == [(mb["member_id"], ma["member_id"])]
        page = await hub_db.transaction(lambda tx: directory.page(tx, "r2", checkpoint, 100))
        entries = {e.member_id: e for e in page.members}
        assert entries[mb["member_id"]].merged_into == ma["member_id"]
        assert entries[ma["member_id"]].aliases == [mb["member_id"]]
    finally:
        await a.close()
        await b.close()


async def test_profile_fields_merge_last_writer_wins(hub_db: HubDatabase, tmp_path: Path) -> None:
    from protocol.events import Event, MemberProfileChanged

    a = await _store(tmp_path, "S001", 1)
    try:
        m = await register(a, "13900000002", name="Old")
        for batch in batches(a.config.database.path, "S001", 100):
            await _apply(hub_db, batch)
        mid = m["member_id"]

        def change(store: str, seq: int, hlc: int, name: str) -> EventBatch:
            body = MemberProfileChanged(member_id=mid, name=name, changed=["name"])
            return EventBatch(store_id=store, epoch=1, events=[
                Event(event_id=f"e{store}{seq}", store_id=store, epoch=1, seq=seq, hlc=hlc,
                      body=body)])

        base = (await hub_db.transaction(
            lambda tx: tx.scalar("SELECT registered_hlc FROM members"))) + 1000
        await _apply(hub_db, change("S002", 1, base + 50, "Newer"))
        await _apply(hub_db, change("S003", 1, base + 10, "Older"))  # arrives later, is older
        name = await hub_db.transaction(
            lambda tx: tx.scalar("SELECT name FROM members WHERE member_id = ?", (mid,)))
        assert name == "Newer"
        # Same HLC: the store id breaks the tie, the same way on every hub.
        await _apply(hub_db, change("S009", 1, base + 50, "Tie"))
        name = await hub_db.transaction(
            lambda tx: tx.scalar("SELECT name FROM members WHERE member_id = ?", (mid,)))
        assert name == "Tie"
    finally:
        await a.close()


async def test_coupon_redeemed_in_two_stores_is_a_conflict(hub_db: HubDatabase) -> None:
    from protocol.events import CouponRedeemed, Event

    def redeemed(store: str, hlc: int) -> EventBatch:
        body = CouponRedeemed(coupon_code="CPN0000000001", sale_id=f"sale-{store}", amount=500)
        return EventBatch(store_id=store, epoch=1, events=[
            Event(event_id=f"c{store}", store_id=store, epoch=1, seq=1, hlc=hlc, body=body)])

    await _apply(hub_db, redeemed("S002", 2_000))  # the later one arrives first
    await _apply(hub_db, redeemed("S001", 1_000))

    def rows(tx: Tx) -> tuple[Any, Any]:
        return (tx.all("SELECT store_id, sale_id FROM coupon_redemptions"),
                tx.all("SELECT store_id, kept_store FROM coupon_conflicts"))

    kept, conflicts = await hub_db.transaction(rows)
    assert [tuple(r) for r in kept] == [("S001", "sale-S001")]
    assert [tuple(r) for r in conflicts] == [("S002", "S001")]


async def test_edge_batches_are_what_the_codec_accepts(tmp_path: Path) -> None:
    svc = await _store(tmp_path, "S001", 1)
    try:
        m = await register(svc, "13900000003")
        q = await sell(svc, [("A", "grocery", 2, 1_000)], member_id=m["member_id"],
                       tenders=[TenderRequest(kind="cash", amount=2_000)])
        assert q["points_earned"] == 20
        with sqlite3.connect(svc.config.database.path) as conn:
            big = uplink.build(conn, "S001", 1, 0)
            small = uplink.build(conn, "S001", 1, 0, max_bytes=1)
            none = uplink.build(conn, "S001", 1, 3)
        assert big is not None and big.count == 3 and big.first_seq == 1
        assert [e.seq for e in decode_batch(big.payload).events] == [1, 2, 3]
        assert small is not None and small.count == 1  # at least one, even if over the limit
        assert none is None
    finally:
        await svc.close()


async def test_tiers_rise_and_fall_with_spend_in_the_window(hub_db: HubDatabase,
                                                           tmp_path: Path) -> None:
    import time

    from hub.members.tiers import TierRules, recompute

    rules = TierRules()
    svc = await _store(tmp_path, "S001", 1)
    try:
        m = await register(svc, "13900000077")
        mid = m["member_id"]
        receipt = await sell(svc, [("A", "household", 1, 120_000)], member_id=mid)
        assert receipt["total"] >= rules.thresholds["silver"]
        now = int(time.time() * 1000)
        seen = 0

        async def feed() -> None:
            nonlocal seen
            for batch in batches(svc.config.database.path, "S001", 100):
                if batch.events[-1].seq > seen:
                    await hub_db.transaction(lambda tx, b=batch: apply_batch(tx, b, now, rules))
                    seen = batch.events[-1].seq

        async def tier() -> str:
            page = await hub_db.transaction(lambda tx: directory.page(tx, "t", 0, 100))
            return next(e.tier for e in page.members if e.member_id == mid)

        await feed()
        assert await tier() == "silver"
        await svc.refund(terminal_id="POS-1", idem_key=key(), sale_id=receipt["sale_id"],
                         lines=None)
        await feed()
        assert await tier() == "standard"
        await sell(svc, [("A", "household", 1, 120_000)], member_id=mid)
        await feed()
        assert await tier() == "silver"
        # Thirteen months on, with no spend since, the tier falls by time alone.
        later = now + 400 * 24 * 3600 * 1000
        changed = await hub_db.transaction(lambda tx: recompute(tx, rules, later))
        assert changed == [mid] and await tier() == "standard"
    finally:
        await svc.close()


async def test_the_batch_path_leaves_tiers_and_allowances_as_a_full_recompute_would(
        hub_db: HubDatabase) -> None:
    """The apply reads each member once before its writes and works out tiers and top-ups
    from what it read plus the batch's sums. Recomputed afterwards from the tables alone, no
    tier differs and no allowance has anything left to top up."""
    import time

    from hub import bench
    from hub.ledger import allowances
    from hub.ledger.allowances import AllowancePolicy
    from hub.ledger.apply import apply_facts
    from hub.ledger.facts import decode
    from hub.members.tiers import TierRules, tier_changes
    from protocol.codec import DEFAULT_MAX_BYTES

    # Low thresholds, so members cross tiers within a few sales; a small cap, so some
    # allowances stop at it and others follow the balance.
    rules = TierRules(thresholds={"silver": 8_000, "gold": 30_000})
    policy = AllowancePolicy(max_points=150, max_stored_value=20_000)
    work = bench.make_workload(4, 6_000, batch_events=250, seed=7)
    now = int(time.time() * 1000)
    registered: dict[str, str] = {}  # member -> tier it registered with
    for payload in work.payloads:
        batch = decode(payload, max_bytes=DEFAULT_MAX_BYTES)
        registered.update((f.member_id, f.detail["tier"]) for f in batch.facts
                          if f.type == "member.registered" and f.member_id is not None)
        result = await hub_db.transaction(
            lambda tx, b=batch: apply_facts(tx, b, now, rules, policy))
        assert result.applied == len(batch.rows)

    def recomputed(tx: Tx) -> tuple[list[tuple[str, str]], set[str], dict[str, str], int]:
        spenders = [r[0] for r in tx.all("SELECT DISTINCT member_id FROM spend_months")]
        tiers = dict(tx.all("SELECT member_id, tier FROM members"))
        granted = int(tx.scalar("SELECT count(*) FROM grants WHERE points_granted > 0"
                                " OR sv_granted > 0"))
        return (tier_changes(tx, rules, now, spenders), allowances.refresh(tx, policy, tiers),
                tiers, granted)

    changes, topped_up, tiers, granted = await hub_db.transaction(recomputed)
    assert changes == []
    assert topped_up == set()
    # The workload did move both: tiers away from the ones members registered with, and
    # standing grants.
    assert sum(tiers[m] != t for m, t in registered.items()) > 50
    assert granted > 100


async def test_card_states_pins_and_gifts_merge_last_writer_wins(hub_db: HubDatabase,
                                                                tmp_path: Path) -> None:
    from protocol.events import (
        BirthdayGiftGiven,
        CardBound,
        CardStateChanged,
        Event,
        EventBody,
        MemberRegistered,
        PaymentPinLocked,
        PaymentPinSet,
    )

    a = await _store(tmp_path, "S001", 1)
    try:
        mid = (await register(a, "13900000003", card="04AA0001"))["member_id"]
        other = (await register(a, "13900000004"))["member_id"]
        for batch in batches(a.config.database.path, "S001", 100):
            await _apply(hub_db, batch)
        base = (await hub_db.transaction(
            lambda tx: tx.scalar("SELECT max(registered_hlc) FROM members"))) + 1000
        seqs: dict[str, int] = {}

        async def send(store: str, hlc: int, body: EventBody) -> None:
            seqs[store] = seqs.get(store, 0) + 1
            await _apply(hub_db, EventBatch(store_id=store, epoch=1, events=[Event(
                event_id=f"e{store}{seqs[store]}", store_id=store, epoch=1, seq=seqs[store],
                hlc=hlc, body=body)]))

        def entry() -> Any:
            return hub_db.transaction(lambda tx: directory.entry(tx, mid))

        def lost(hlc: int, state: str) -> CardStateChanged:
            return CardStateChanged(member_id=mid, card_uid="04AA0001", state=state,  # type: ignore[arg-type]
                                    reason=f"at {hlc}")

        await send("S002", base + 50, lost(50, "lost"))
        await send("S003", base + 10, lost(10, "active"))  # older: the loss stands
        e = await entry()
        assert e.cards == [] and [(c.state, c.reason, c.hlc) for c in e.card_states] == [
            ("lost", "at 50", base + 50)]
        # Bound elsewhere while held: the holder keeps it. Unbound, then bound again: moves.
        await send("S002", base + 60, CardBound(member_id=other, card_uid="04AA0001"))
        assert [c.card_uid for c in (await entry()).card_states] == ["04AA0001"]
        await send("S002", base + 70, lost(70, "unbound"))
        await send("S003", base + 80, CardBound(member_id=other, card_uid="04AA0001"))
        assert (await entry()).card_states == []
        taken = await hub_db.transaction(lambda tx: directory.entry(tx, other))
        assert taken is not None and taken.cards == ["04AA0001"]
        # Unbound again, then registered with a new member: the card is theirs.
        await send("S003", base + 85, CardStateChanged(member_id=other, card_uid="04AA0001",
                                                       state="unbound"))
        await send("S003", base + 86, MemberRegistered(
            member_id="new1", member_code="000300000017", card_uid="04AA0001"))
        newcomer = await hub_db.transaction(lambda tx: directory.entry(tx, "new1"))
        assert newcomer is not None and newcomer.cards == ["04AA0001"]

        h = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"
        await send("S002", base + 100, PaymentPinSet(member_id=mid, pin_hash=h))
        await send("S003", base + 90, PaymentPinLocked(member_id=mid, failures=5))  # older
        e = await entry()
        assert (e.pin_hash, e.pin_locked, e.pin_hlc) == (h, False, base + 100)
        await send("S003", base + 110, PaymentPinLocked(member_id=mid, failures=5))
        e = await entry()
        assert (e.pin_hash, e.pin_locked, e.pin_hlc) == (h, True, base + 110)

        await send("S002", base + 120, BirthdayGiftGiven(member_id=mid, year=2026))
        await send("S003", base + 130, BirthdayGiftGiven(member_id=mid, year=2025))
        assert (await entry()).birthday_gift_year == 2026
        # The rebuild check still reads every event of these new kinds.
        assert (await hub_db.transaction(audit.compare))["mismatches"] == []
    finally:
        await a.close()


async def test_a_repriced_refund_adds_up_in_the_projections(hub_db: HubDatabase,
                                                            tmp_path: Path) -> None:
    """A refund that took back a lost 满减 (v3): the refund's lines in the sales facts and the
    day's rollup add up to the money that went back, not to the lines' shares."""
    from hub.core.projections import ProjectionRunner
    from hub.projections.catalog import projections

    a = await _store(tmp_path, "S001", 1)
    try:
        sale = await sell(a, [("A", "grocery", 1, 25_000), ("B", "grocery", 1, 6_000)])
        r = await a.refund(terminal_id="POS-1", idem_key="r1", sale_id=sale["sale_id"],
                           lines=[(2, 1)])
        assert (r["amount"], r["discounts_reversed"]) == (3_000, 2_419)
        for batch in batches(a.config.database.path, "S001", 100):
            await _apply(hub_db, batch)
    finally:
        await a.close()
    runner = ProjectionRunner(hub_db, projections("Asia/Shanghai"), page=1)
    await runner.catch_up()  # event by event, as batches arrive

    def rows(tx: Tx) -> list[Any]:
        return [sorted(tuple(r) for r in tx.all(f"SELECT * FROM {t}"))
                for t in ("sales_facts", "daily_rollups")]

    incremental = await hub_db.read(rows)
    for name in runner.names:  # and rebuilt from zero: the same rows
        await hub_db.transaction(lambda tx, n=name: runner.reset(tx, n))
    await runner.catch_up()
    assert await hub_db.read(rows) == incremental
    lines, doc = await hub_db.read(lambda tx: (
        tx.scalar("SELECT sum(amount) FROM sales_facts WHERE kind = 'refund_line'"),
        tx.scalar("SELECT sum(amount) FROM sales_facts WHERE kind = 'refund'")))
    assert lines == doc == -3_000
    refunded = await hub_db.read(lambda tx: tx.scalar(
        "SELECT sum(refund_amount) FROM daily_rollups"))
    assert refunded == 3_000
