"""A journey's effect report on both backends: a birthday journey with a 50 % holdout (and a
10 % chain control group) over 200 members, entered by the real engine; treated members buy
more than held-out ones inside their 30-day window, with purchases before and after it, a
refund inside it, a member merged into a treated one, coupons redeemed and messages sent. The
figures are checked against a computation written out here from the purchases planned, the
uplift and its intervals against the textbook formulas (a Student t quantile integrated here
numerically, not the report's), the ROI against exact fractions; a window not yet ended is
open; a store manager sees only their members and their stores' purchases; the route answers
404 for an unknown journey and prices with the hub's ``[automation]`` settings."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.api.app import create_app
from hub.app import Hub
from hub.auth import roles, users
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.automation import journeys
from hub.automation.engine import JourneyEngine
from hub.config import HubConfig
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.ledger.apply import apply_batch
from hub.ledger.hq_events import Merge
from hub.notify import outbox
from hub.projections.catalog import projections
from hub.reports import journey_effect
from hub.reports.journey_effect import effect
from protocol.errors import ServiceError
from protocol.events import (
    Event,
    EventBatch,
    EventBody,
    MemberRegistered,
    RefundCompleted,
    RefundLine,
    SaleFinalized,
    SaleLine,
    Tender,
)
from protocol.hlc import HybridClock, pack

ZONE = "Asia/Shanghai"
NOW = int(datetime(2026, 12, 5, 2, 0, tzinfo=UTC).timestamp() * 1000)  # 10:00 in Shanghai
TODAY = date(2026, 12, 5)
DAY = 86_400_000
WINDOW = 30 * DAY
LATE = NOW + 14 * DAY  # 2026-12-19: members with a birthday on the 25th enter then
AFTER = NOW + 31 * DAY  # every first-cohort window has ended, the late ones are open
Z = 1.959963984540054  # the normal 0.975 quantile
MARGIN, SMS = 25, 7
COUPON_VALUE = 2000
TOKEN = "hq-effect-token-0001"

JOURNEY: dict[str, Any] = {
    "name": "生日礼", "trigger": {"kind": "birthday", "days_before": 7},
    "holdout_percent": 50,
    "actions": [
        {"kind": "coupon", "coupon_kind": "amount_off", "value": COUPON_VALUE,
         "min_spend": 5000, "valid_days": 30},
        {"kind": "message", "channel": "sms", "template": "SMS_1",
         "text": "{name}，生日快乐！{coupon_value}元券 {coupon_code}。回T退订"}]}


def _ok(channel: str, purpose: str, text: str) -> None:
    """Every channel is configured here."""


@dataclass
class Buy:
    """A planned purchase (or refund: negative) as the store writes it."""

    member: str  # the id the store wrote
    store: str
    at_ms: int
    amount: int
    doc: str
    refund_of: str | None = None


class Stores:
    """Each store's events applied to the hub straight, in order, each at its own time."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.seq: dict[str, int] = {}
        self.last_ms: dict[str, int] = {}

    async def send(self, store: str, bodies: list[EventBody], at_ms: int) -> None:
        events = []
        for body in bodies:
            seq = self.seq[store] = self.seq.get(store, 0) + 1
            events.append(Event(event_id=f"{store}-{seq}", store_id=store, epoch=1, seq=seq,
                                hlc=pack(at_ms, seq), body=body))
        self.last_ms[store] = at_ms
        batch = EventBatch(store_id=store, epoch=1, events=events)
        await self.db.transaction(lambda tx: apply_batch(tx, batch, at_ms))


def _phone(i: int) -> str:
    return f"+86139{i:08d}"


def _sale(b: Buy) -> EventBody:
    if b.refund_of is not None:
        return RefundCompleted(
            refund_id=b.doc, sale_id=b.refund_of, terminal_id="T1", member_id=b.member,
            currency="CNY", lines=[RefundLine(line_no=1, qty=1, amount=-b.amount,
                                              points_reversed=0)],
            amount=-b.amount, tenders=[Tender(kind="cash", amount=-b.amount)],
            points_reversed=0, points_shortfall=0, points_returned=0)
    return SaleFinalized(
        sale_id=b.doc, member_id=b.member, terminal_id="T1", currency="CNY",
        lines=[SaleLine(line_no=1, sku="A", name="a", category="x", qty=1,
                        unit_price=b.amount, gross=b.amount, discount=0, net=b.amount,
                        points=0)],
        tenders=[Tender(kind="cash", amount=b.amount)], subtotal=b.amount, discount_total=0,
        total=b.amount, points_earned=0)


def _home(member: str) -> str:
    return "S001" if member < "m100" or member >= "m200" else "S002"


@dataclass
class World:
    journey_id: str
    treated: list[str]  # first cohort, by id
    held: list[str]
    kinds: dict[str, int]  # held_out of every entry
    late: list[str]
    buys: list[Buy]
    alias_of: dict[str, str]  # the merged id -> the member it now is
    redeemed: dict[str, int]  # member -> discount given
    message_state: dict[str, tuple[str, str]]  # member -> (state, reason)
    stores: Stores


async def build(db: HubDatabase) -> World:
    stores = Stores(db)
    first = [f"m{i:03d}" for i in range(200)]
    late = [f"m{i:03d}" for i in range(200, 204)]
    for store in ("S001", "S002"):
        await stores.send(store, [MemberRegistered(
            member_id=m, member_code=f"C{m[1:]}", phone=_phone(int(m[1:])), name=f"会员{m[1:]}",
            birthday=date(1990, 12, 25 if m in late else 5))
            for m in first + late if _home(m) == store], NOW - 10 * DAY)
    await db.transaction(lambda tx: [users.add(
        tx, username=name, role=role, password_hash=None, now_ms=NOW, stores=where)
        for name, role, where in (("boss", "hq_admin", []),
                                  ("s1.mgr", "store_manager", ["S001"]))])
    journey = (await db.transaction(lambda tx: journeys.create(
        tx, JOURNEY, by="mkt", now_ms=NOW, today=TODAY, zone=ZONE,
        check_message=_ok)))["journey_id"]
    now = [NOW]
    clock = HybridClock()
    engine = JourneyEngine(db, ZONE, dict, lambda at: Merge(clock, at, zone=ZONE),
                           control_percent=10, now_ms=lambda: now[0])
    assert (await engine.run())["entered"] == 200
    now[0] = LATE
    assert (await engine.run())["entered"] == 4
    kinds = {str(m): int(h) for m, h in await db.read(lambda tx: tx.all(
        "SELECT member_id, held_out FROM journey_entries WHERE journey_id = ?", (journey,)))}
    treated = sorted(m for m in first if kinds[m] == 0)
    held = sorted(m for m in first if kinds[m] > 0)

    # Purchases. Treated: three in four buy in the window (1000-1400), one in four twice (+700);
    # held out: one in two (800-900). Outside the window: before the entry, at its very end
    # (excluded: the window is half-open), after it; a refund inside it (of a sale in it, and
    # of one before it); a merged id buying for a treated member; a treated member of S002
    # buying at S001 too; the late (open) members buy as well.
    buys: list[Buy] = []
    for k, m in enumerate(treated):
        if k % 4 != 3:
            buys.append(Buy(m, _home(m), NOW + (1 + k % 20) * DAY, 1000 + 100 * (k % 5),
                            f"t{k}a"))
        if k % 4 == 0:
            buys.append(Buy(m, _home(m), NOW + 25 * DAY, 700, f"t{k}b"))
    for k, m in enumerate(held):
        if k % 2 == 0:
            buys.append(Buy(m, _home(m), NOW + 2 * DAY, 800 + 50 * (k % 3), f"h{k}a"))
    for k, m in enumerate(treated[:6] + held[:6]):
        buys.append(Buy(m, _home(m), NOW - 2 * DAY, 50_000, f"o{k}before"))
        buys.append(Buy(m, _home(m), NOW + WINDOW, 60_000, f"o{k}end"))
        buys.append(Buy(m, _home(m), NOW + WINDOW + DAY, 70_000, f"o{k}after"))
    t0, h0 = treated[0], held[0]
    buys.append(Buy(t0, _home(t0), NOW, 300, "t0first"))  # the window's first moment
    buys.append(Buy(h0, _home(h0), NOW + WINDOW - 1, 90, "h0last"))  # its last
    buys.append(Buy(t0, _home(t0), NOW + 3 * DAY, -400, "r1", refund_of="t0a"))
    buys.append(Buy(h0, _home(h0), NOW + 5 * DAY, -300, "r2", refund_of="o6before"))
    t3 = treated[3]  # no purchase in the window, only a refund: spends -1000, no visit
    buys.append(Buy(t3, _home(t3), NOW + 7 * DAY, -1000, "r3", refund_of="o3before"))
    other = next(m for m in treated if _home(m) == "S002")
    buys.append(Buy(other, "S001", NOW + 6 * DAY, 2500, "x1"))
    alias, target = "x001", treated[1]
    buys.append(Buy(alias, "S002", NOW + 4 * DAY, 500, "x2"))
    for k, m in enumerate(late):
        buys.append(Buy(m, _home(m), LATE + DAY, 9_000, f"l{k}"))
    timeline: list[tuple[int, str, EventBody]] = [
        (b.at_ms, b.store, _sale(b)) for b in buys]
    # The merged id registers at S002 a day after the journey, with the treated member's phone:
    # the earlier registration stays the member, this id becomes a pointer to them.
    timeline.append((NOW + DAY, "S002", MemberRegistered(
        member_id=alias, member_code="CX001", phone=_phone(int(target[1:])), name="别名")))
    for at, store, body in sorted(timeline, key=lambda x: (x[0], x[1], str(x[2]))):
        await stores.send(store, [body], at)
    await ProjectionRunner(db, projections(ZONE)).catch_up()
    assert await db.read(lambda tx: tx.scalar(
        "SELECT merged_into FROM members WHERE member_id = ?", (alias,))) == target

    # Coupons redeemed: three of the compared treated members' and one late member's (it
    # counts among the redeemed but not in the compared members' costs).
    codes = {str(m): str(c) for m, c in await db.read(lambda tx: tx.all(
        "SELECT member_id, coupon_code FROM coupons WHERE campaign_id = ?", (journey,)))}
    late_treated = [m for m in late if kinds[m] == 0]
    redeemed = {m: COUPON_VALUE for m in [treated[0], treated[2], treated[5]]}
    redeemed |= {m: 1500 for m in late_treated[:1]}
    await db.transaction(lambda tx: tx.executemany(
        "INSERT INTO coupon_redemptions(coupon_code, store_id, sale_id, hlc, amount)"
        " VALUES (?, ?, ?, ?, ?)",
        [(codes[m], _home(m), f"cpn-{m}", pack(NOW + 2 * DAY, 1), d)
         for m, d in redeemed.items()]))
    # The messages' fates, as the dispatcher and the provider's receipts would leave them.
    fates = [("delivered", ""), ("sent", ""), ("sent", ""), ("suppressed", "no_consent"),
             ("failed", ""), ("delivered", ""), ("sent", ""), ("pending", ""),
             ("suppressed", "no_consent"), ("suppressed", "budget")]
    states = {m: fates[k % len(fates)] for k, m in enumerate(treated)}
    states |= {m: ("sent", "") for m in late_treated}
    await db.transaction(lambda tx: tx.executemany(
        "UPDATE outbox SET state = ?, reason = ? WHERE member_id = ? AND journey_id = ?",
        [(st, reason, m, journey) for m, (st, reason) in states.items()]))
    return World(journey, treated, held, kinds, late, buys, {alias: target}, redeemed,
                 states, stores)


# -- what the report must say, computed here from the plan ------------------------------------


def window_spend(w: World, members: list[str], stores: set[str]) -> dict[str, tuple[bool, int]]:
    """Member -> (bought in the window, spend net of refunds in it), at ``stores``."""
    out = {m: (False, 0) for m in members}
    for b in w.buys:
        m = w.alias_of.get(b.member, b.member)
        if m in out and b.store in stores and NOW <= b.at_ms < NOW + WINDOW:
            visited, spend = out[m]
            out[m] = (visited or b.refund_of is None, spend + b.amount)
    return out


def t_quantile_by_integration(p: float, df: float) -> float:
    """The Student t quantile from its density, integrated with Simpson's rule."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t: float) -> float:
        n = 20_000
        h = t / n
        f = [c * math.pow(1 + (i * h) ** 2 / df, -(df + 1) / 2) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def expected(w: World, treated: list[str], held: list[str], stores: set[str]
             ) -> dict[str, Any]:
    spend = window_spend(w, treated + held, stores)
    n1, n0 = len(treated), len(held)
    v1 = sum(1 for m in treated if spend[m][0])
    v0 = sum(1 for m in held if spend[m][0])
    x1 = [spend[m][1] for m in treated]
    x0 = [spend[m][1] for m in held]
    p1, p0 = v1 / n1, v0 / n0
    se_p = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    var1, var0 = statistics.variance(x1), statistics.variance(x0)
    se_s = math.sqrt(var1 / n1 + var0 / n0)
    df = (var1 / n1 + var0 / n0) ** 2 / ((var1 / n1) ** 2 / (n1 - 1) + (var0 / n0) ** 2 / (n0 - 1))
    t = t_quantile_by_integration(0.975, df)
    d_s = statistics.mean(x1) - statistics.mean(x0)
    incremental = int((Fraction(sum(x1), n1) - Fraction(sum(x0), n0)) * n1)  # towards zero
    margin = int(Fraction(incremental * MARGIN, 100))
    coupon_cost = sum(d for m, d in w.redeemed.items() if m in treated)
    sent = sum(1 for m in treated if w.message_state[m][0] in ("sent", "delivered", "failed"))
    costs = coupon_cost + SMS * sent
    return {"n1": n1, "n0": n0, "v1": v1, "v0": v0, "s1": sum(x1), "s0": sum(x0),
            "visit": (p1 - p0, p1 - p0 - Z * se_p, p1 - p0 + Z * se_p),
            "spend": (d_s, d_s - t * se_s, d_s + t * se_s), "df": df,
            "incremental": incremental, "margin": margin, "coupon_cost": coupon_cost,
            "sent": sent, "costs": costs, "roi": (margin - costs) / costs}


def check(got: dict[str, Any], want: dict[str, Any]) -> None:
    t, h = got["groups"]["treated"], got["groups"]["held_out"]
    assert (t["members"], t["visitors"], t["spend"]) == (want["n1"], want["v1"], want["s1"])
    assert (h["members"], h["visitors"], h["spend"]) == (want["n0"], want["v0"], want["s0"])
    assert t["visit_rate"] == pytest.approx(want["v1"] / want["n1"], rel=1e-12)
    assert t["spend_per_member"] == pytest.approx(want["s1"] / want["n1"], rel=1e-12)
    assert h["spend_per_member"] == pytest.approx(want["s0"] / want["n0"], rel=1e-12)
    visit, spend = got["uplift"]["visit_rate"], got["uplift"]["spend_per_member"]
    assert (visit["difference"], visit["ci_low"], visit["ci_high"]) == pytest.approx(
        want["visit"], rel=1e-9)
    assert spend["df"] == pytest.approx(want["df"], rel=1e-9)
    assert (spend["difference"], spend["ci_low"], spend["ci_high"]) == pytest.approx(
        want["spend"], rel=1e-6)
    assert visit["significant"] == (want["visit"][1] > 0 or want["visit"][2] < 0)
    assert spend["significant"] == (want["spend"][1] > 0 or want["spend"][2] < 0)
    r = got["roi"]
    assert (r["incremental_spend"], r["incremental_margin"], r["coupon_cost"],
            r["messages_sent"], r["message_cost"], r["costs"]) == (
        want["incremental"], want["margin"], want["coupon_cost"], want["sent"],
        SMS * want["sent"], want["costs"])
    assert r["roi"] == pytest.approx(want["roi"], rel=1e-12)


async def test_effect_of_a_journey_with_a_holdout(hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    got = await hub_db.read(lambda tx: effect(
        tx, _scope(tx, "boss"), w.journey_id, window_days=30, margin_percent=MARGIN,
        message_cost={"sms": SMS, "email": 3}, now_ms=AFTER))

    # Who entered and what they were given.
    held_all = [m for m, k in w.kinds.items() if k > 0]
    assert (got["entries"], got["entered"], got["open"]) == (204, 204, 4)
    assert got["treated"] + got["held_out"] == 204 and got["held_out"] == len(held_all)
    assert got["held_out_by_kind"] == {
        "journey": sum(1 for k in w.kinds.values() if k == 1),
        "control": sum(1 for k in w.kinds.values() if k == 2)}
    assert got["held_out_by_kind"]["control"] > 0 and got["held_out_by_kind"]["journey"] > 0
    # A 50 % holdout of what the 10 % control group leaves: 90 expected, sd 7 (each run draws
    # for a new journey id); the bounds are 5 sd out, so the check never flakes.
    assert 55 < len(w.treated) < 125
    late_treated = [m for m in w.late if w.kinds[m] == 0]
    assert got["coupons_issued"] == len(w.treated) + len(late_treated)
    assert got["coupons_redeemed"] == 3 + (1 if late_treated else 0)
    assert got["redemption_rate"] == pytest.approx(
        got["coupons_redeemed"] / got["coupons_issued"])
    fates = list(w.message_state.values())
    assert got["sent"] == sum(1 for st, _r in fates if st in ("sent", "delivered", "failed"))
    assert got["delivered"] == sum(1 for st, _r in fates if st == "delivered")
    assert got["suppressed"] == {
        "budget": sum(1 for f in fates if f == ("suppressed", "budget")),
        "no_consent": sum(1 for f in fates if f == ("suppressed", "no_consent"))}
    assert got["messages"]["pending"] == sum(1 for st, _r in fates if st == "pending")
    assert got["groups"]["treated"]["open"] + got["groups"]["held_out"]["open"] == 4

    # The comparison, from the plan: the 200 members of the first cohort.
    want = expected(w, w.treated, w.held, {"S001", "S002"})
    check(got, want)
    # A few figures by hand: the first treated member bought 300 at the window's first
    # moment, 1000 (400 refunded) and 700; the first held-out one 800 and 90 at its last
    # moment, and 300 back of a purchase before the window; the merged id's 500 is the second
    # treated member's, on top of their 1100; the fourth only had 1000 back.
    spend = window_spend(w, [*w.treated[:4], w.held[0]], {"S001", "S002"})
    assert spend == {w.treated[0]: (True, 1600), w.treated[1]: (True, 1600),
                     w.treated[2]: (True, 1200), w.treated[3]: (False, -1000),
                     w.held[0]: (True, 590)}
    assert want["v1"] / want["n1"] > 0.74 and want["v0"] / want["n0"] == pytest.approx(
        0.5, abs=0.01)
    assert got["uplift"]["visit_rate"]["significant"] is True
    assert got["uplift"]["note"] is None
    assert got["roi"]["coupon_cost"] == 3 * COUPON_VALUE

    # How complete: each store merged up to its last event; the facts have read everything.
    assert got["completeness"] == {
        "stores": [{"store_id": s, "merged_to_ms": w.stores.last_ms[s], "lag_events": 0}
                   for s in ("S001", "S002")],
        "sales_facts_behind": 0, "windows_end_ms": NOW + WINDOW}

    # Ten days in, every window is open: nothing is compared yet, and the report says why.
    early = await hub_db.read(lambda tx: effect(
        tx, _scope(tx, "boss"), w.journey_id, now_ms=NOW + 10 * DAY))
    assert early["open"] == 204 and early["groups"]["treated"]["members"] == 0
    assert early["uplift"]["visit_rate"]["ci_low"] is None
    assert "nothing to compare" in early["uplift"]["note"]
    assert early["roi"]["incremental_spend"] is None and early["roi"]["roi"] is None
    # The default window (30 days) ends exactly at NOW + 30 days.
    edge = await hub_db.read(lambda tx: effect(
        tx, _scope(tx, "boss"), w.journey_id, now_ms=NOW + WINDOW))
    assert edge["open"] == 4

    with pytest.raises(ServiceError) as missing:
        await hub_db.read(lambda tx: effect(tx, _scope(tx, "boss"), "no-such-journey",
                                            now_ms=AFTER))
    assert (missing.value.status, missing.value.code) == (404, "journey_not_found")


async def test_a_store_manager_sees_their_members_and_their_stores_purchases(
        hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    scope = await hub_db.read(lambda tx: _scope(tx, "s1.mgr"))
    # As the API reads: on PostgreSQL row-level security binds the read to the scope too.
    got = await Access(hub_db, scope, None).read(lambda tx, s: effect(
        tx, s, w.journey_id, margin_percent=MARGIN, message_cost={"sms": SMS}, now_ms=AFTER))
    # S001's members: registered there, or who bought there (the S002 member who did).
    bought_here = {b.member for b in w.buys if b.store == "S001"}
    seen = {m for m in w.kinds if _home(m) == "S001" or m in bought_here}
    assert any(_home(m) == "S002" for m in seen)
    treated = [m for m in w.treated if m in seen]
    held = [m for m in w.held if m in seen]
    assert got["entered"] == len(seen) and got["open"] == 4
    assert got["treated"] + got["held_out"] == len(seen)
    assert got["coupons_issued"] == sum(1 for m in seen if w.kinds[m] == 0)
    want = expected(w, treated, held, {"S001"})
    check(got, want)
    # The merged id bought at S002: not S001's figure (the member's 1100 here only).
    assert window_spend(w, [w.treated[1]], {"S001"})[w.treated[1]] == (True, 1100)
    assert [s["store_id"] for s in got["completeness"]["stores"]] == ["S001"]


def test_intervals_need_two_members_a_side_and_rounding_is_towards_zero() -> None:
    unit = journey_effect._Unit
    treated = [unit(NOW, 0, True, 1000), unit(NOW, 0, False, 0), unit(NOW, 0, True, 500)]
    got = journey_effect.uplift(treated, [unit(NOW, 1, True, 300)])
    assert got["visit_rate"]["difference"] == pytest.approx(2 / 3 - 1)
    assert got["spend_per_member"]["difference"] == pytest.approx(500 - 300)
    assert got["visit_rate"]["ci_low"] is None and got["spend_per_member"]["ci_high"] is None
    assert "fewer than 2" in got["note"]
    assert journey_effect.toward_zero(-127, 10) == -12 and journey_effect.toward_zero(127, 10) == 12
    # ROI: (500 - 300) x 3 = 600 incremental; 30 % of it 180; costs 200: (180 - 200) / 200.
    r = journey_effect.roi(treated, [unit(NOW, 1, True, 300)], margin_percent=30,
                           coupon_cost=186, sent=["sms", "sms", "email"], prices={"sms": 7})
    assert (r["incremental_spend"], r["incremental_margin"], r["costs"]) == (600, 180, 200)
    assert r["roi"] == pytest.approx(-0.1)
    # A loss is rounded towards zero too: (0 - 333) x 1 ... -333 x 30 % = -99.9 -> -99.
    r = journey_effect.roi([unit(NOW, 0, False, 0)], [unit(NOW, 1, True, 333)],
                           margin_percent=30, coupon_cost=0, sent=[], prices={})
    assert (r["incremental_spend"], r["incremental_margin"], r["roi"]) == (-333, -99, None)
    # The Student quantile against the printed tables.
    for df, t in ((1, 12.7062047), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725),
                  (120, 1.9799304)):
        assert journey_effect.t_quantile(0.975, df) == pytest.approx(t, abs=1e-6)


def _scope(tx: Tx, username: str) -> Scope:
    user = users.get(tx, username)
    return Scope(Principal(user, roles.load(tx)[user.role], None))


async def test_the_route_prices_with_the_hubs_settings_and_404s_unknown_journeys(
        tmp_path: Path, hub_url: str) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": hub_url, "data_dir": str(tmp_path / "hub"), "validate_workers": 0},
        "broker": {"embedded_port": 0}, "api": {"token": TOKEN},
        "automation": {"every_s": 3600, "margin_percent": 40,
                       "message_cost": {"sms": 9, "webhook": 1}}})
    async with Hub(cfg) as hub:
        now = now_ms()
        stores = Stores(hub.db)
        await stores.send("S001", [MemberRegistered(
            member_id=f"a{i}", member_code=f"A{i}", phone=_phone(900 + i), name=f"a{i}")
            for i in range(4)], now - 50 * DAY)
        journey = (await hub.db.transaction(lambda tx: journeys.create(
            tx, {**JOURNEY, "trigger": {"kind": "registered"}}, by="mkt", now_ms=now,
            today=TODAY, zone=ZONE, check_message=_ok)))["journey_id"]

        # Four members entered 40 days ago: two treated (each sent a text), two held out.
        def entries(tx: Tx) -> None:
            tx.executemany(
                "INSERT INTO journey_entries(journey_id, member_id, occasion, version,"
                " entered_ms, held_out, step, due_ms, state) VALUES (?, ?, 'registered', 1,"
                " ?, ?, 2, 0, ?)", [(journey, f"a{i}", now - 40 * DAY, int(i >= 2),
                                     "held_out" if i >= 2 else "done") for i in range(4)])
            outbox.enqueue(tx, [outbox.Message(
                key=f"k{i}", member_id=f"a{i}", channel="sms", purpose="marketing",
                template="SMS_1", params={}, text="hi", journey_id=journey)
                for i in range(2)], now - 40 * DAY)
            tx.execute("UPDATE outbox SET state = 'sent'")

        await hub.db.transaction(entries)
        transport = httpx.ASGITransport(app=create_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hq",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            r = await c.get(f"/v1/journeys/{journey}/effect")
            assert r.status_code == 200, r.text
            got = r.json()
            assert (got["entered"], got["treated"], got["held_out"], got["open"]) == (4, 2, 2, 0)
            assert got["window_days"] == 30
            # Nobody bought: no incremental spend, 40 % of nothing, two texts at 9 each.
            assert got["roi"] == {
                "margin_percent": 40, "incremental_spend": 0, "incremental_margin": 0,
                "coupon_cost": 0, "messages_sent": 2, "message_cost": 18, "costs": 18,
                "roi": -1.0, "note": None}
            assert got["uplift"]["visit_rate"]["difference"] == 0
            r = await c.get(f"/v1/journeys/{journey}/effect", params={"window_days": 45})
            assert r.json()["open"] == 4 and r.json()["roi"]["incremental_spend"] is None
            r = await c.get("/v1/journeys/nope/effect")
            assert r.status_code == 404 and r.json()["error"]["code"] == "journey_not_found"
            assert (await c.get(f"/v1/journeys/{journey}/effect",
                                params={"window_days": 0})).status_code == 422
            assert (await c.get(f"/v1/journeys/{journey}/effect",
                                headers={"Authorization": "Bearer nope"})).status_code == 401
