"""HQ's own stream, on both backends: gap-free, applied by the merge, rebuilt from the log, once
per idempotency key; points adjustments and hub-issued coupons as the stores' directory shows
them."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from hub.campaigns import coupons
from hub.core import idempotency
from hub.core.db import HubDatabase, Tx
from hub.ledger import audit, hq_events
from hub.ledger.allowances import AllowancePolicy
from hub.ledger.apply import ApplyResult, apply_batch
from hub.ledger.hq_events import Merge
from hub.members import directory
from hub.stores import fleet
from protocol.codec import decode
from protocol.errors import ServiceError
from protocol.events import (
    CouponIssued,
    CouponRedeemed,
    CouponReopened,
    Event,
    EventBatch,
    EventBody,
    MemberRegistered,
    PointsAdjusted,
    PointsEarned,
)
from protocol.hlc import HybridClock
from protocol.ids import is_coupon_code

NO_ALLOWANCE = AllowancePolicy(enabled=False)


class Store:
    """A store's stream, written by hand: consecutive seqs, rising HLCs."""

    def __init__(self, store_id: str) -> None:
        self.store_id, self.seq, self.hlc = store_id, 0, 1 << 40

    def batch(self, *bodies: EventBody) -> EventBatch:
        events = []
        for body in bodies:
            self.seq += 1
            self.hlc += 1
            events.append(Event(event_id=f"e-{self.store_id}-{self.seq}", store_id=self.store_id,
                                epoch=1, seq=self.seq, hlc=self.hlc, body=body))
        return EventBatch(store_id=self.store_id, epoch=1, events=events)


async def _apply(db: HubDatabase, batch: EventBatch,
                 allowance: AllowancePolicy = NO_ALLOWANCE) -> ApplyResult:
    return await db.transaction(lambda tx: apply_batch(tx, batch, 1, allowance=allowance))


async def _member(db: HubDatabase, store: Store, member_id: str, phone: str, points: int,
                  allowance: AllowancePolicy = NO_ALLOWANCE) -> None:
    await _apply(db, store.batch(
        MemberRegistered(member_id=member_id, member_code=f"C-{member_id}", phone=phone),
        PointsEarned(member_id=member_id, lot_id=f"l-{member_id}", points=points)), allowance)


def _merge(allowance: AllowancePolicy = NO_ALLOWANCE) -> Merge:
    return Merge(HybridClock(), 1, None, allowance)


def _change_no(tx: Tx, member_id: str) -> int:
    return int(tx.scalar("SELECT change_no FROM members WHERE member_id = ?", (member_id,)))


async def test_hq_adjustments_are_a_gap_free_stream_the_merge_applies_and_rebuild_matches(
        hub_db: HubDatabase) -> None:
    await _member(hub_db, Store("S001"), "m1", "+8613900000001", 100)
    before = await hub_db.transaction(lambda tx: _change_no(tx, "m1"))
    merge = _merge()
    for delta in (50, -30, 7):
        await hub_db.transaction(functools.partial(
            hq_events.adjust_points, member_id="m1", delta=delta, reason="goodwill",
            actor="li.wei@hq", merge=merge))

    def look(tx: Tx) -> dict[str, Any]:
        return {"log": [(r[0], r[1], r[2], decode(bytes(r[3]), Event)) for r in tx.all(
                    "SELECT epoch, seq, hlc, payload FROM events WHERE store_id = 'HQ'"
                    " ORDER BY seq")],
                "acked": tx.scalar("SELECT acked_seq FROM store_streams WHERE store_id = 'HQ'"),
                "entry": directory.entry(tx, "m1"), "change_no": _change_no(tx, "m1"),
                "compare": audit.compare(tx), "stores": fleet.fleet_status(tx, 1),
                "streams": fleet.hub_streams(tx)}

    seen = await hub_db.transaction(look)
    assert [(epoch, seq) for epoch, seq, _h, _e in seen["log"]] == [(1, 1), (1, 2), (1, 3)]
    assert seen["acked"] == 3
    hlcs = [h for _e, _s, h, _ev in seen["log"]]
    assert hlcs == sorted(set(hlcs))  # rising, as a store's
    body = seen["log"][1][3].body
    assert isinstance(body, PointsAdjusted)
    assert (body.delta, body.reason, body.note, body.actor) == (-30, "manual", "goodwill",
                                                                "li.wei@hq")
    shares = {s.store_id: s.points for s in seen["entry"].shares}
    assert shares == {"S001": 100, "HQ": 27}
    assert seen["change_no"] > before  # the stores hear of it through the directory
    assert seen["compare"]["mismatches"] == [] and seen["compare"]["members"] == 1
    # HQ is a stream the hub writes, not a store: no fleet row, no lag, no alarm.
    assert [s["store_id"] for s in seen["stores"]] == ["S001"]
    assert seen["streams"] == [{"stream": "HQ", "epoch": 1, "seq": 3}]


async def test_a_hub_clock_behind_the_stream_still_stamps_later_events(
        hub_db: HubDatabase) -> None:
    await _member(hub_db, Store("S001"), "m1", "+8613900000001", 100)
    await hub_db.transaction(functools.partial(
        hq_events.adjust_points, member_id="m1", delta=1, reason="r", actor="a",
        merge=Merge(HybridClock(physical_ms=lambda: 10**12), 1)))
    # A restarted hub whose wall clock was set back an hour.
    await hub_db.transaction(functools.partial(
        hq_events.adjust_points, member_id="m1", delta=1, reason="r", actor="a",
        merge=Merge(HybridClock(physical_ms=lambda: 10**12 - 3_600_000), 1)))
    hlcs = await hub_db.transaction(lambda tx: [r[0] for r in tx.all(
        "SELECT hlc FROM events WHERE store_id = 'HQ' ORDER BY seq")])
    assert hlcs[1] > hlcs[0]


async def test_taking_away_more_than_is_free_is_refused_and_changes_nothing(
        hub_db: HubDatabase) -> None:
    policy = AllowancePolicy(fraction=0.5)
    await _member(hub_db, Store("S001"), "m1", "+8613900000001", 100, policy)

    def books(tx: Tx) -> tuple[Any, ...]:
        return (tx.all("SELECT store_id, points_granted FROM grants ORDER BY store_id"),
                audit.balances(tx), tx.scalar("SELECT count(*) FROM events"))

    start = await hub_db.transaction(books)
    assert start[0] == [("S001", 50)]  # the store holds half as its offline allowance
    with pytest.raises(ServiceError) as refused:
        await hub_db.transaction(functools.partial(
            hq_events.adjust_points, member_id="m1", delta=-51, reason="r", actor="a",
            merge=_merge(policy)))
    assert (refused.value.code, refused.value.status) == ("insufficient_balance", 409)
    assert refused.value.details["free"] == 50
    assert await hub_db.transaction(books) == start
    answer = await hub_db.transaction(functools.partial(
        hq_events.adjust_points, member_id="m1", delta=-50, reason="r", actor="a",
        merge=_merge(policy)))
    assert answer["points"] == 50
    # A positive adjustment: HQ holds a share but no allowance; the store's is topped up.
    await hub_db.transaction(functools.partial(
        hq_events.adjust_points, member_id="m1", delta=100, reason="r", actor="a",
        merge=_merge(policy)))
    grants, balances, _n = await hub_db.transaction(books)
    assert grants == [("S001", 75)] and balances == {"m1": (150, 0, 0)}


async def test_unknown_members_are_refused_and_a_merged_id_reaches_its_survivor(
        hub_db: HubDatabase) -> None:
    await _member(hub_db, Store("S001"), "m-a", "+8613900000002", 10)
    await _member(hub_db, Store("S002"), "m-b", "+8613900000002", 20)  # merged into m-a
    with pytest.raises(ServiceError) as unknown:
        await hub_db.transaction(functools.partial(
            hq_events.adjust_points, member_id="nobody", delta=5, reason="r", actor="a",
            merge=_merge()))
    assert (unknown.value.code, unknown.value.status) == ("member_not_found", 404)
    answer = await hub_db.transaction(functools.partial(
        hq_events.adjust_points, member_id="m-b", delta=5, reason="r", actor="a",
        merge=_merge()))
    assert answer["member_id"] == "m-a" and answer["points"] == 35
    assert await hub_db.transaction(audit.balances) == {"m-a": (35, 0, 0)}
    issued = await hub_db.transaction(functools.partial(
        coupons.issue, member_id="m-b", kind="amount_off", value=500, min_spend=0,
        categories=[], expires_on=None, campaign_id=None, merge=_merge()))
    assert issued["member_id"] == "m-a"


async def test_one_key_applies_once_and_answers_the_same(hub_db: HubDatabase) -> None:
    await _member(hub_db, Store("S001"), "m1", "+8613900000001", 100)
    merge = _merge()

    def post(key: str, delta: int) -> Any:
        digest = idempotency.request_hash("points.adjust", "m1", {"delta": delta})
        return hub_db.transaction(lambda tx: idempotency.once(
            tx, key, digest, 1, functools.partial(
                hq_events.adjust_points, member_id="m1", delta=delta, reason="r", actor="a",
                merge=merge)))

    first = await post("k1", 10)
    again = await post("k1", 10)
    assert first.status == again.status == 201 and not first.replayed and again.replayed
    assert again.body == first.body
    with pytest.raises(ServiceError) as reused:
        await post("k1", 11)
    assert (reused.value.code, reused.value.status) == ("idempotency_key_reused", 409)
    # A refusal is the key's answer too, and what it wrote before refusing is rolled back.
    refused = await post("k2", -1_000)
    assert refused.status == 409 and refused.body["error"]["code"] == "insufficient_balance"
    assert (await post("k2", -1_000)).body == refused.body
    with pytest.raises(ServiceError):
        idempotency.raise_refusal(refused)
    assert await hub_db.transaction(audit.balances) == {"m1": (110, 0, 0)}
    assert await hub_db.transaction(lambda tx: tx.scalar(
        "SELECT acked_seq FROM store_streams WHERE store_id = 'HQ'")) == 1


async def test_a_refusal_after_writing_rolls_its_writes_back(hub_db: HubDatabase) -> None:
    def half_done(tx: Tx) -> dict[str, Any]:
        tx.execute("INSERT INTO counters(name, value) VALUES ('half', 1)")
        raise ServiceError("refused", "no", 409)

    answer = await hub_db.transaction(lambda tx: idempotency.once(tx, "k", "d", 1, half_done))
    assert answer.status == 409
    assert await hub_db.transaction(lambda tx: tx.scalar(
        "SELECT count(*) FROM counters WHERE name = 'half'")) == 0


async def test_hub_coupons_travel_with_the_entry_until_redeemed(hub_db: HubDatabase) -> None:
    s1, s2 = Store("S001"), Store("S002")
    await _member(hub_db, s1, "m1", "+8613900000001", 100)
    issued = await hub_db.transaction(functools.partial(
        coupons.issue, member_id="m1", kind="percent_off", value=1_000, min_spend=5_000,
        categories=["grocery"], expires_on=None, campaign_id="wake-up", merge=_merge()))
    code = issued["coupon_code"]
    assert is_coupon_code(code) and issued["qr"] == f"MGC:{code}" and issued["seq"] == 1
    # A coupon a store issued stays that store's: the directory does not carry it.
    await _apply(hub_db, s1.batch(CouponIssued(coupon_code="STORECOUPON01", member_id="m1",
                                               kind="amount_off", value=100)))

    async def entry() -> tuple[list[str], int]:
        def read(tx: Tx) -> tuple[list[str], int]:
            e = directory.entry(tx, "m1")
            assert e is not None
            return [c.coupon_code for c in e.coupons], _change_no(tx, "m1")
        return await hub_db.transaction(read)

    listed, n0 = await entry()
    assert listed == [code]
    full = await hub_db.transaction(lambda tx: directory.entry(tx, "m1"))
    assert full is not None and full.coupons[0].categories == ["grocery"]
    assert full.coupons[0].campaign_id == "wake-up" and full.coupons[0].min_spend == 5_000

    await _apply(hub_db, s2.batch(CouponRedeemed(coupon_code=code, sale_id="x1",
                                                 member_id="m1", amount=600)))
    listed, n1 = await entry()
    assert listed == [] and n1 > n0  # the stores hear it is gone
    await _apply(hub_db, s1.batch(CouponRedeemed(coupon_code=code, sale_id="y1",
                                                 member_id="m1", amount=600)))
    assert [c["store_id"] for c in await hub_db.read(coupons.conflicts)] == ["S001"]
    await _apply(hub_db, s2.batch(CouponReopened(coupon_code=code, sale_id="x1",
                                                 refund_id="r1")))
    listed, n2 = await entry()
    assert listed == [code] and n2 > n1  # refunded: open again
    assert (await hub_db.transaction(audit.compare))["mismatches"] == []


async def test_a_merge_moves_hub_coupons_to_the_survivor(hub_db: HubDatabase) -> None:
    await _member(hub_db, Store("S002"), "m-b", "+8613900000003", 10)
    issued = await hub_db.transaction(functools.partial(
        coupons.issue, member_id="m-b", kind="amount_off", value=500, min_spend=0,
        categories=[], expires_on=None, campaign_id=None, merge=_merge()))
    # The same phone registered earlier at S001 arrives later: m-b becomes its alias.
    s1 = Store("S001")
    s1.hlc = 1 << 30
    await _member(hub_db, s1, "m-a", "+8613900000003", 10)
    survivor = await hub_db.transaction(lambda tx: directory.entry(tx, "m-a"))
    assert survivor is not None and survivor.aliases == ["m-b"]
    assert [c.coupon_code for c in survivor.coupons] == [issued["coupon_code"]]
