"""Standing offline allowances at the hub (``hub.ledger.allowances``), on both backends: the
policy's share at the home store and every store with activity, top-ups as spending is acknowledged,
online authorisation out of what is left free, the directory carrying the grants, the escrow
never exceeding the balance (property test), and a store following its grant end to end."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.checkout import TenderRequest
from edge.errors import EdgeError
from hub.app import Hub
from hub.config import HubConfig
from hub.core.db import HubDatabase, Tx
from hub.core.schema import migrate
from hub.ledger import allowances, audit
from hub.ledger.allowances import AllowancePolicy, MemberBooks
from hub.ledger.apply import apply_batch
from hub.ledger.authority import authorize
from hub.members import directory
from protocol.events import (
    Event,
    EventBatch,
    LotDraw,
    MemberRegistered,
    PointsAdjusted,
    PointsEarned,
    PointsRedeemed,
    StoredValueRefunded,
    StoredValueSpent,
    StoredValueToppedUp,
)
from protocol.ids import uuid7
from protocol.sync import RpcReply, RpcRequest, StoreGrant
from tests.edge.conftest import register, sell
from tests.hub.test_sync_e2e import drained, hub, start_store, wait_for  # noqa: F401
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

POLICY = AllowancePolicy()
_lots = itertools.count(1)


# --- building batches as stores send them ---------------------------------------------------


class Fleet:
    """One gap-free event stream per store (epoch 1)."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.hlc = 1 << 20

    def batch(self, store_id: str, *bodies: Any) -> EventBatch:
        events = []
        for body in bodies:
            seq = self.seq[store_id] = self.seq.get(store_id, 0) + 1
            self.hlc += 1
            events.append(Event(event_id=uuid7(), store_id=store_id, epoch=1, seq=seq,
                                hlc=self.hlc, body=body))
        return EventBatch(store_id=store_id, epoch=1, events=events)


def registered(mid: str) -> MemberRegistered:
    return MemberRegistered(member_id=mid, member_code=f"C{mid}")


def earned(mid: str, points: int) -> PointsEarned:
    return PointsEarned(member_id=mid, lot_id=f"L{next(_lots)}", points=points)


def redeemed(mid: str, points: int) -> PointsRedeemed:
    return PointsRedeemed(member_id=mid, points=points, sale_id=uuid7(),
                          lots=[LotDraw(lot_id="L0", points=points)])


def topped_up(mid: str, amount: int) -> StoredValueToppedUp:
    return StoredValueToppedUp(member_id=mid, topup_id=uuid7(), currency="CNY",
                               principal=amount, bonus=0)


def sv_spent(mid: str, amount: int) -> StoredValueSpent:
    return StoredValueSpent(member_id=mid, sale_id=uuid7(), currency="CNY", principal=amount,
                            bonus=0)


def ingest(tx: Tx, batch: EventBatch, policy: AllowancePolicy = POLICY) -> set[str]:
    """Apply ``batch``, then what ``apply_batch`` is to call after its ledger effects:
    ``allowances.refresh`` for the batch's members, whose change numbers then move. Returns
    the members whose grants changed (whether or not ``apply_batch`` refreshed them itself)."""
    members = {m for e in batch.events if (m := getattr(e.body, "member_id", None))}
    before = {m: grants(tx, m) for m in members}
    apply_batch(tx, batch, 1)
    allowances.mark_changed(tx, allowances.refresh(tx, policy, members))
    return {m for m in members if grants(tx, m) != before[m]}


def grants(tx: Tx, mid: str) -> dict[str, tuple[int, int, int, int]]:
    """store -> (points granted, points spent, sv granted, sv spent)."""
    return {s: (int(a), int(b), int(c), int(d)) for s, a, b, c, d in tx.all(
        "SELECT store_id, points_granted, points_spent, sv_granted, sv_spent FROM grants"
        " WHERE member_id = ?", (mid,))}


def books(tx: Tx, mid: str) -> MemberBooks:
    return allowances.load(tx, [mid])[mid]


def ask(tx: Tx, mid: str, store: str, points: int = 0, sv: int = 0) -> RpcReply:
    return authorize(tx, RpcRequest(request_id=uuid7(), store_id=store, kind="authorize",
                                    member_id=mid, points=points, stored_value=sv))


# --- the policy ------------------------------------------------------------------------------


def test_target_is_the_fraction_of_the_balance_per_active_store_within_the_cap() -> None:
    p = AllowancePolicy()
    assert p.target(allowances.POINTS, 6_000, 2) == 1_500
    assert p.target(allowances.POINTS, 6_001, 4) == 750  # floor(3000.5 / 4)
    assert p.target(allowances.POINTS, 1_000_000, 1) == 5_000  # max_points
    assert p.target(allowances.STORED_VALUE, 1_000_000, 1) == 50_000  # max_stored_value
    assert p.target(allowances.POINTS, -10, 1) == 0  # points debt: nothing stands
    # 0.1 is one tenth exactly (a binary float would make 0.1 * 30 = 3.0000000000000004).
    assert AllowancePolicy(fraction=0.1).target(allowances.POINTS, 30, 1) == 3
    assert AllowancePolicy(fraction=0.3).target(allowances.POINTS, 10, 1) == 3
    assert AllowancePolicy(enabled=False).target(allowances.POINTS, 6_000, 1) == 0
    cfg = HubConfig.model_validate({"allowance": {"fraction": 0.25, "max_points": 100,
                                                  "max_stored_value": 7, "enabled": True}})
    assert cfg.allowance == AllowancePolicy(fraction=0.25, max_points=100, max_stored_value=7)
    with pytest.raises(ValueError):
        HubConfig.model_validate({"allowance": {"fraction": 1.5}})


# --- on both backends ------------------------------------------------------------------------


async def test_earning_grants_the_store_and_the_home_store_their_share_and_spending_tops_up(
        hub_db: HubDatabase) -> None:
    f, mid = Fleet(), "m1"
    assert await hub_db.transaction(lambda tx: ingest(tx, f.batch("S001", registered(mid)))) \
        == set()  # nothing to stand on yet
    changed = await hub_db.transaction(lambda tx: ingest(
        tx, f.batch("S002", earned(mid, 6_000), topped_up(mid, 80_000))))
    assert changed == {mid}
    # Active stores: S001 (home) and S002 (where it earned). Points: 0.5 * 6000 / 2 = 1500;
    # stored value: 0.5 * 80000 / 2 = 20000.
    assert await hub_db.transaction(lambda tx: grants(tx, mid)) == {
        "S001": (1_500, 0, 20_000, 0), "S002": (1_500, 0, 20_000, 0)}
    entry = await hub_db.transaction(lambda tx: directory.entry(tx, mid))
    assert entry is not None and entry.grants == [
        StoreGrant(store_id="S001", points_granted=1_500, sv_granted=20_000),
        StoreGrant(store_id="S002", points_granted=1_500, sv_granted=20_000)]

    # S002 spends 1000 points and 15000 stored value; once acknowledged the balance is 5000
    # points and 65000, the target 1250 and 16250, and S002 is topped up to it again.
    before = await hub_db.transaction(lambda tx: directory.page(tx, "r", 0, 10).upto)
    changed = await hub_db.transaction(lambda tx: ingest(
        tx, f.batch("S002", redeemed(mid, 1_000), sv_spent(mid, 15_000))))
    assert changed == {mid}
    g = await hub_db.transaction(lambda tx: grants(tx, mid))
    assert g["S002"] == (1_500 + 750, 1_000, 20_000 + 11_250, 15_000)
    assert g["S001"] == (1_500, 0, 20_000, 0)  # above the new target already: nothing taken
    b = await hub_db.transaction(lambda tx: books(tx, mid))
    assert b.points.outstanding("S002") == 1_250 and b.stored_value.outstanding("S002") == 16_250
    # The member's entry moved in the change log, so stores catch up with the new grant.
    page = await hub_db.transaction(lambda tx: directory.page(tx, "r", before, 10))
    assert [e.member_id for e in page.members] == [mid]
    assert {gr.store_id: gr.points_granted for gr in page.members[0].grants} == {
        "S001": 1_500, "S002": 2_250}
    # Nothing more to do for the same books: refresh is idempotent.
    assert await hub_db.transaction(lambda tx: allowances.refresh(tx, POLICY, [mid])) == set()


async def test_online_authorisation_gets_what_is_left_free_and_no_more(
        hub_db: HubDatabase) -> None:
    f, mid = Fleet(), "m2"
    await hub_db.transaction(lambda tx: ingest(
        tx, f.batch("S001", registered(mid), earned(mid, 6_000), topped_up(mid, 10_000))))
    # One active store: 3000 points and 5000 stored value stand at S001, the rest is free.
    b = await hub_db.transaction(lambda tx: books(tx, mid))
    assert (b.points.free(), b.stored_value.free()) == (3_000, 5_000)
    refused = await hub_db.transaction(lambda tx: ask(tx, mid, "S003", points=3_001))
    assert not refused.ok and refused.error == "insufficient_balance"
    refused = await hub_db.transaction(lambda tx: ask(tx, mid, "S003", sv=5_001))
    assert not refused.ok and refused.error == "insufficient_balance"
    reply = await hub_db.transaction(lambda tx: ask(tx, mid, "S003", points=2_000, sv=5_000))
    assert reply.ok and (reply.granted_points, reply.granted_stored_value) == (2_000, 5_000)
    assert (reply.points_granted_total, reply.sv_granted_total) == (2_000, 5_000)
    # At the store with a standing allowance the reply carries the cumulative figure.
    reply = await hub_db.transaction(lambda tx: ask(tx, mid, "S001", points=1_000))
    assert reply.ok and (reply.points_granted_total, reply.sv_granted_total) == (4_000, 5_000)
    # Now nothing is free: neither another authorisation nor a top-up can be made.
    assert not (await hub_db.transaction(lambda tx: ask(tx, mid, "S002", points=1))).ok
    assert not (await hub_db.transaction(lambda tx: ask(tx, mid, "S001", sv=1))).ok
    assert await hub_db.transaction(lambda tx: allowances.refresh(tx, POLICY, [mid])) == set()
    # The authorisation moved the member in the change log too (a lost reply catches up).
    entry = await hub_db.transaction(lambda tx: directory.entry(tx, mid))
    assert entry is not None
    assert {g.store_id: g.points_granted for g in entry.grants} == {"S001": 4_000, "S003": 2_000}


async def test_a_store_that_overspent_under_its_default_is_topped_up_past_it(
        hub_db: HubDatabase) -> None:
    f, mid = Fleet(), "m3"
    await hub_db.transaction(lambda tx: ingest(
        tx, f.batch("S001", registered(mid), earned(mid, 20_000))))
    # S002 spent 3000 before it heard of any grant (under its configured default): its books
    # show spending without a grant. The spending is already out of the balance.
    await hub_db.transaction(lambda tx: apply_batch(tx, f.batch("S002", redeemed(mid, 3_000)), 1))
    await hub_db.transaction(lambda tx: tx.execute(
        "INSERT INTO grants(member_id, store_id, points_spent) VALUES (?, 'S002', 3000)"
        " ON CONFLICT(member_id, store_id) DO UPDATE SET points_spent = 3000", (mid,)))
    await hub_db.transaction(lambda tx: allowances.refresh(tx, POLICY, [mid]))
    b = await hub_db.transaction(lambda tx: books(tx, mid))
    target = POLICY.target(allowances.POINTS, 17_000, 2)
    assert b.points.outstanding("S002") == target == 4_250
    assert b.points.granted["S002"] == 3_000 + target
    assert b.points.held() <= b.points.balance


async def test_a_disabled_policy_grants_nothing(hub_db: HubDatabase) -> None:
    f, mid = Fleet(), "m4"
    off = AllowancePolicy(enabled=False)
    await hub_db.transaction(lambda tx: apply_batch(
        tx, f.batch("S001", registered(mid), earned(mid, 6_000)), 1))
    await hub_db.transaction(lambda tx: tx.execute("DELETE FROM grants"))  # none granted yet
    assert await hub_db.transaction(lambda tx: allowances.refresh(tx, off, [mid])) == set()
    assert await hub_db.transaction(lambda tx: grants(tx, mid)) == {}
    # ... until it is switched on: a refresh of every member grants and moves it.
    changed, last = await hub_db.transaction(lambda tx: allowances.refresh_page(tx, POLICY))
    assert (changed, last) == ({mid}, mid)
    assert await hub_db.transaction(lambda tx: grants(tx, mid)) == {"S001": (3_000, 0, 0, 0)}


async def test_refresh_handles_many_members_in_chunks(hub_db: HubDatabase) -> None:
    f = Fleet()
    mids = [f"n{i:04d}" for i in range(1_100)]  # more than two chunks of 500
    bodies = [b for m in mids for b in (registered(m), earned(m, 1_000))]
    await hub_db.transaction(lambda tx: apply_batch(tx, f.batch("S001", *bodies), 1))
    await hub_db.transaction(lambda tx: tx.execute("DELETE FROM grants"))  # none granted yet
    changed = await hub_db.transaction(lambda tx: allowances.refresh(tx, POLICY, mids))
    assert changed == set(mids)
    total = await hub_db.transaction(lambda tx: tx.one(
        "SELECT count(*), min(points_granted), max(points_granted) FROM grants"))
    assert tuple(int(v) for v in total) == (1_100, 500, 500)


async def test_record_spent_counts_spending_and_refunds_give_it_back(hub_db: HubDatabase) -> None:
    mid = "m5"
    used = [allowances.escrow_used(b) for b in (
        redeemed(mid, 300), sv_spent(mid, 700), earned(mid, 5),
        PointsAdjusted(member_id=mid, delta=100, reason="refund_return"),
        PointsAdjusted(member_id=mid, delta=-40, reason="refund_reversal"),
        StoredValueRefunded(member_id=mid, sale_id="s", refund_id="r", currency="CNY",
                            principal=200, bonus=50))]
    assert used == [(300, 0), (0, 700), (0, 0), (-100, 0), (0, 0), (0, -250)]
    spent = (sum(u[0] for u in used), sum(u[1] for u in used))
    await hub_db.transaction(lambda tx: allowances.record_spent(tx, {(mid, "S002"): spent}))
    await hub_db.transaction(lambda tx: allowances.record_spent(tx, {(mid, "S002"): (1, 1)}))
    assert await hub_db.transaction(lambda tx: grants(tx, mid)) == {"S002": (0, 201, 0, 451)}


async def test_ingest_counts_all_spending_at_a_store_and_refunds_give_it_back(
        hub_db: HubDatabase) -> None:
    f, mid = Fleet(), "m6"
    await hub_db.transaction(lambda tx: ingest(
        tx, f.batch("S001", registered(mid), earned(mid, 10_000))))
    # The member's first activity at S002 is spending (points from S001): the hub has granted
    # S002 nothing yet, but S002 counts it in its ``used``, so the hub must count it too.
    await hub_db.transaction(lambda tx: ingest(tx, f.batch("S002", redeemed(mid, 400))))
    assert (await hub_db.transaction(lambda tx: grants(tx, mid)))["S002"][1] == 400
    await hub_db.transaction(lambda tx: ingest(tx, f.batch("S002", PointsAdjusted(
        member_id=mid, delta=150, reason="refund_return"))))
    assert (await hub_db.transaction(lambda tx: grants(tx, mid)))["S002"][1] == 250


# --- the guarantee, over random histories ------------------------------------------------------

STORES = ["S001", "S002", "S003"]
_op = st.one_of(
    st.tuples(st.just("earn"), st.sampled_from(STORES), st.integers(1, 30_000)),
    st.tuples(st.just("top_up"), st.sampled_from(STORES), st.integers(1, 300_000)),
    st.tuples(st.just("spend_points"), st.sampled_from(STORES), st.integers(1, 30_000)),
    st.tuples(st.just("spend_sv"), st.sampled_from(STORES), st.integers(1, 300_000)),
    st.tuples(st.just("authorize"), st.sampled_from(STORES), st.integers(0, 30_000),
              st.integers(0, 300_000)),
)


def _memory_hub() -> Tx:
    tx = Tx(sqlite3.connect(":memory:", isolation_level=None), "sqlite")
    migrate(tx)
    return tx


def _run(ops: list[tuple[Any, ...]], policy: AllowancePolicy, *, within_escrow: bool) -> None:
    """Replay ``ops`` for one member; after every step the books must hold the guarantee.

    ``within_escrow``: a store spends only what the hub holds for it (what a store does once
    the hub has granted it anything). Otherwise a store may spend any of the balance (as under
    its configured default), and the guarantee is the one at grant time: a grant never takes
    what is held beyond the balance, or beyond what was held before it.
    """
    tx, f, mid = _memory_hub(), Fleet(), "m"
    ingest(tx, f.batch("S001", registered(mid)), policy)
    granted_before: dict[tuple[str, int], int] = {}
    for op in ops:
        kind, store = op[0], op[1]
        b = books(tx, mid)
        bodies: list[Any] = []
        if kind == "earn":
            bodies = [earned(mid, op[2])]
        elif kind == "top_up":
            bodies = [topped_up(mid, op[2])]
        elif kind in ("spend_points", "spend_sv"):
            ledger = b.points if kind == "spend_points" else b.stored_value
            cap = ledger.outstanding(store) if within_escrow else ledger.balance
            amount = min(op[2], cap, ledger.balance)
            if amount > 0:
                bodies = [redeemed(mid, amount) if kind == "spend_points"
                          else sv_spent(mid, amount)]
        if bodies:
            batch = f.batch(store, *bodies)
            apply_batch(tx, batch, 1)
            held = {d: books(tx, mid).ledger(d).held() for d in (0, 1)}
            allowances.refresh(tx, policy, [mid])
        elif kind == "authorize":
            held = {d: b.ledger(d).held() for d in (0, 1)}
            ask(tx, mid, store, points=op[2], sv=op[3])
        else:
            continue
        after = books(tx, mid)
        for dim in (0, 1):
            ledger = after.ledger(dim)
            if within_escrow:
                assert ledger.held() <= max(0, ledger.balance), (op, ledger)
            else:
                assert ledger.held() <= max(ledger.balance, held[dim]), (op, ledger)
            for s, g in ledger.granted.items():  # grants only ever grow
                assert g >= granted_before.get((s, dim), 0)
                granted_before[(s, dim)] = g


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, max_size=25), fraction=st.sampled_from([0.5, 0.25, 1.0]))
def test_outstanding_escrow_never_exceeds_the_balance(ops: list[tuple[Any, ...]],
                                                      fraction: float) -> None:
    _run(ops, AllowancePolicy(fraction=fraction), within_escrow=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, max_size=25))
def test_a_grant_never_takes_what_is_not_free(ops: list[tuple[Any, ...]]) -> None:
    _run(ops, AllowancePolicy(fraction=1.0), within_escrow=False)


# --- end to end: the store follows its grant -----------------------------------------------------


async def test_a_store_spends_its_standing_allowance_offline_and_asks_beyond_it(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        assert a.sync is not None
        await a.sync.mqtt.wait_connected(10)
        mid = (await register(a, "13800004444"))["member_id"]
        await sell(a, [("A", "grocery", 1, 100_000)], member_id=mid)  # earns points
        await wait_for(lambda: drained(a), "store A drained")
        balance = (await hub.db.transaction(audit.balances))[mid][0]
        target = min(5_000, balance // 2)
        assert target > 100
        # (what ingest does for the batch's members once it calls allowances.refresh)
        await hub.refresh_allowances()
        await register(a, "13800004445")  # a batch that changes members: stores catch up

        async def row() -> Any:
            return await a.db.read(lambda c: c.execute(
                "SELECT * FROM allowances WHERE member_id = ?", (mid,)).fetchone())

        async def granted() -> bool:
            r = await row()
            return r is not None and r["hub_points_granted"] == target

        await wait_for(granted, "the standing allowance to reach store A")
        r = await row()
        assert r["points_limit"] == target  # the default (20,000) no longer applies
        assert r["sv_limit"] == a.config.allowance.stored_value  # no stored value granted

        # Cut off, the store spends within the allowance and is refused beyond it.
        mosquitto.kill()
        await sell(a, [("B", "grocery", 1, 2_000)], member_id=mid,
                   tenders=[TenderRequest(kind="points", points=target - 100),
                            TenderRequest(kind="cash", amount=2_000 - (target - 100))])
        with pytest.raises(EdgeError) as err:
            await sell(a, [("C", "grocery", 1, 2_000)], member_id=mid,
                       tenders=[TenderRequest(kind="points", points=150),
                                TenderRequest(kind="cash", amount=1_850)])
        assert err.value.code == "allowance_exceeded"
        assert err.value.details["allowed"] == 100
        assert err.value.details["online_request"] == 50
        # Back online, the hub authorises the rest out of what is free.
        mosquitto.start()
        await wait_for(lambda: drained(a), "store A drained after the outage (the hub is back)")
        await sell(a, [("C", "grocery", 1, 2_000)], member_id=mid,
                   tenders=[TenderRequest(kind="points", points=150),
                            TenderRequest(kind="cash", amount=1_850)])
        r = await row()
        assert r["points_used"] == target + 50 <= r["points_limit"]
        await wait_for(lambda: drained(a), "store A drained again")
        b = await hub.db.transaction(lambda tx: books(tx, mid))
        assert b.points.granted["S001"] >= target + 50
        assert b.points.held() <= b.points.balance
        # The store never holds more than the hub granted it.
        r = await row()
        assert r["points_limit"] - r["points_base"] <= b.points.granted["S001"]
    finally:
        await a.close()


async def test_a_batch_that_merges_a_member_puts_all_its_effects_on_the_survivor(
        hub_db: HubDatabase) -> None:
    """Effects arrive summed per member as the store named them and are mapped to the member
    each id now is after the batch's registrations: a member registered, earning and spending
    in the batch that merges it lands whole on the survivor — balance, spend and escrow."""
    f, first, second = Fleet(), "m-first", "m-second"
    phone = "+8613900000077"
    await hub_db.transaction(lambda tx: ingest(tx, f.batch(
        "S001", MemberRegistered(member_id=first, member_code="C1", phone=phone),
        earned(first, 1_000))))
    result = await hub_db.transaction(lambda tx: apply_batch(tx, f.batch(
        "S002", earned(second, 5), MemberRegistered(member_id=second, member_code="C2",
                                                    phone=phone),
        earned(second, 200), redeemed(second, 50), topped_up(second, 3_000),
        sv_spent(second, 1_000)), 1, allowance=POLICY))
    assert result.merged == [(second, first)]

    def state(tx: Tx) -> tuple[Any, ...]:
        shares = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in tx.all(
            "SELECT store_id, points, sv_principal, sv_bonus FROM shares WHERE member_id = ?",
            (first,))}
        alias_rows = tx.scalar("SELECT count(*) FROM shares WHERE member_id = ?", (second,))
        return shares, alias_rows, grants(tx, first), grants(tx, second)

    shares, alias_rows, survivor_books, alias_books = await hub_db.transaction(state)
    assert shares == {"S001": (1_000, 0, 0), "S002": (155, 2_000, 0)}
    assert alias_rows == 0 and alias_books == {}
    assert survivor_books["S002"][1] == 50 and survivor_books["S002"][3] == 1_000
    assert (await hub_db.transaction(audit.compare))["mismatches"] == []


async def test_escrow_granted_under_a_merged_id_moves_to_the_survivor_and_is_used_up_there(
        hub_db: HubDatabase) -> None:
    """S001 registers a member, who earns and is granted a standing allowance there. Then an
    earlier registration of the same phone arrives from S002: the S001 member becomes its
    alias, and its escrow books move onto the survivor's, per store. S001 may still spend that
    escrow under the old id until it hears of the merge; the hub counts such spending against
    the survivor's S001 books, so it uses the escrow up instead of leaving it held for good."""
    f, survivor, alias = Fleet(), "m-earlier", "m-later"
    phone = "+8613900000078"
    earlier = f.batch("S002", MemberRegistered(member_id=survivor, member_code="C-e",
                                               phone=phone))
    later = f.batch("S001", MemberRegistered(member_id=alias, member_code="C-l", phone=phone),
                    earned(alias, 1_000))
    await hub_db.transaction(lambda tx: apply_batch(tx, later, 1, allowance=POLICY))
    held_for_alias = (await hub_db.transaction(lambda tx: grants(tx, alias)))["S001"][0]
    assert held_for_alias == 500  # half the balance, at its one active store
    result = await hub_db.transaction(lambda tx: apply_batch(tx, earlier, 1, allowance=POLICY))
    assert result.merged == [(alias, survivor)]

    def outstanding(tx: Tx) -> tuple[int, int]:
        total = sum(max(0, granted - spent) for mid in (survivor, alias)
                    for granted, spent, _g, _s in grants(tx, mid).values())
        return total, books(tx, survivor).points.balance

    assert await hub_db.transaction(lambda tx: grants(tx, alias)) == {}
    assert (await hub_db.transaction(lambda tx: grants(tx, survivor)))["S001"][:2] == (500, 0)
    total, balance = await hub_db.transaction(outstanding)
    assert (balance, total) == (1_000, 500)

    # S001, not yet told of the merge, spends its 500 under the old id. It comes off the
    # survivor's S001 escrow, and what the balance has left stands at stores again: a quarter
    # at each of the two active ones. (Held under the old id for good, that escrow left
    # nothing free: 500 held of a balance of 500, and no allowance anywhere.)
    spend = f.batch("S001", redeemed(alias, 500))
    await hub_db.transaction(lambda tx: apply_batch(tx, spend, 1, allowance=POLICY))
    rows = await hub_db.transaction(lambda tx: grants(tx, survivor))
    assert {s: r[:2] for s, r in rows.items()} == {"S001": (625, 500), "S002": (125, 0)}
    total, balance = await hub_db.transaction(outstanding)
    assert (balance, total) == (500, 250)
    free = (await hub_db.transaction(lambda tx: books(tx, survivor))).points.free()
    assert free == balance - total == 250
    # What is left free, and no more, can still be authorised online at a third store.
    refused = await hub_db.transaction(lambda tx: ask(tx, survivor, "S003", points=free + 1))
    assert not refused.ok and refused.error == "insufficient_balance"
    granted = await hub_db.transaction(lambda tx: ask(tx, alias, "S003", points=free))
    assert granted.ok  # asked under the old id: granted to the member it became
    # The member's entry goes with the grant, so a store that has not heard of the merge
    # yet folds the old id's allowance in before it takes the total.
    assert granted.member is not None and granted.member.member_id == survivor
    assert granted.member.aliases == [alias]
    assert {g.store_id: g.points_granted for g in granted.member.grants}["S003"] == free
    total, balance = await hub_db.transaction(outstanding)
    assert total == balance == 500


async def test_a_partly_resent_batch_applies_only_its_new_events(hub_db: HubDatabase) -> None:
    """A store may resend from its ack with other batch boundaries: the part already applied
    is skipped, and the sums of the rest are what is applied."""
    f, mid = Fleet(), "m-resent"
    bodies = [registered(mid), *(earned(mid, 10 * (i + 1)) for i in range(6))]
    whole = f.batch("S001", *bodies)
    head = EventBatch(store_id="S001", epoch=1, events=whole.events[:3])
    await hub_db.transaction(lambda tx: apply_batch(tx, head, 1, allowance=POLICY))
    result = await hub_db.transaction(lambda tx: apply_batch(tx, whole, 1, allowance=POLICY))
    assert (result.duplicates, result.applied, result.ack.seq) == (3, 4, 7)
    held = await hub_db.transaction(audit.balances)
    assert held[mid] == (sum(10 * (i + 1) for i in range(6)), 0, 0)
    assert (await hub_db.transaction(audit.compare))["mismatches"] == []


async def test_a_policy_changed_while_the_hub_was_down_reaches_every_member_at_start(
        tmp_path: Path) -> None:
    """Batches top up only the members they touch. A hub started with a larger ``[allowance]``
    share pages through every member (a transaction a page) and the stores hear the new grants
    with the members' new change numbers; members nobody has touched since get theirs too."""
    db_path = tmp_path / "hub.db"
    f = Fleet()
    mids = [f"m-{i:03d}" for i in range(5)]
    async with HubDatabase(f"sqlite:///{db_path}") as db:
        await db.transaction(migrate)
        for mid in mids:
            batch = f.batch("S001", registered(mid), earned(mid, 1_000))
            await db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1, allowance=POLICY))
        before = await db.transaction(lambda tx: {m: grants(tx, m)["S001"][0] for m in mids})
        change_before = await db.transaction(lambda tx: tx.scalar(
            "SELECT max(change_no) FROM members"))
    assert before == dict.fromkeys(mids, 500)  # half of 1,000 at the one active store

    cfg = HubConfig.model_validate({
        "hub": {"database": str(db_path), "data_dir": str(tmp_path), "validate_workers": 0},
        "broker": {"embedded_port": 0},
        "allowance": {"fraction": 0.8}})
    async with Hub(cfg) as hub_service:
        async def raised() -> bool:
            got = await hub_service.db.transaction(
                lambda tx: {m: grants(tx, m)["S001"][0] for m in mids})
            return got == dict.fromkeys(mids, 800)

        await wait_for(raised, "every member's grant raised to the new share at start")
        moved = await hub_service.db.transaction(lambda tx: [r[0] for r in tx.all(
            "SELECT member_id FROM members WHERE change_no > ? ORDER BY member_id",
            (change_before,))])
        assert moved == mids  # each goes down to the stores again
        assert await hub_service.refresh_allowances() == 0  # nothing left to top up


async def test_refresh_pages_through_members_by_id(hub_db: HubDatabase) -> None:
    f = Fleet()
    mids = [f"m-{i}" for i in range(5)]
    off = AllowancePolicy(enabled=False)
    for mid in mids:
        batch = f.batch("S001", registered(mid), earned(mid, 100))
        await hub_db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1, allowance=off))
    pages: list[tuple[set[str], str | None]] = []
    after: str | None = ""
    while after is not None:
        page = await hub_db.transaction(
            lambda tx, a=after: allowances.refresh_page(tx, POLICY, a, limit=2))
        pages.append(page)
        after = page[1]
    assert [p for p, _last in pages] == [{"m-0", "m-1"}, {"m-2", "m-3"}, {"m-4"}, set()]
    # A second pass finds nothing left to top up.
    assert await hub_db.transaction(
        lambda tx: allowances.refresh_page(tx, POLICY, limit=10)) == (set(), "m-4")
