"""A campaign's effect report on both backends: a 满减 campaign pushed to region R1 (stores S001
and S002) with a 50 % holdout and an audience of tags (a store's tag, an HQ tag, a rule's tag),
limited to two tiers; 80 members registered at S001, S002 and S003 (region R2) by real events,
one of them erased and one id merged into another; sales at the tills, the treated members'
carrying the campaign's discount (and one a coupon it issued), inside and outside the window
(store-local days), at the campaign's stores and elsewhere, and refunds. The figures are checked
against a computation written out here from the purchases planned: who is in the audience and
held out (``protocol.holdout.held_out``), spend by hand, the intervals from the textbook
formulas (the Student quantile integrated here numerically), the ROI with exact fractions. A
chain-wide campaign without a holdout reports its treated members and says it cannot be
measured; an unknown campaign is 404, a reversed window 422; a store manager counts their
members and their store's purchases; the route answers with the hub's margin."""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from hub.api.app import create_app
from hub.app import Hub
from hub.auth import roles, users
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.campaigns.bundles import store_bundle
from hub.config import HubConfig
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.core.schema import migrate
from hub.ledger.apply import apply_batch
from hub.members import segments, tags
from hub.members.lifecycle import LifecycleRules
from hub.members.segment_keeper import SegmentKeeper
from hub.projections.catalog import projections
from hub.reports.campaign_effect import effect
from hub.stores import registry
from protocol import signing
from protocol.campaigns import CampaignBundle
from protocol.errors import ServiceError
from protocol.events import (
    CouponIssued,
    Event,
    EventBatch,
    EventBody,
    MemberRegistered,
    RefundCompleted,
    RefundLine,
    SaleDiscount,
    SaleFinalized,
    SaleLine,
    Tender,
)
from protocol.hlc import pack
from protocol.holdout import held_out
from tests.hub.test_journey_effect import t_quantile_by_integration

ZONE = "Asia/Shanghai"
TODAY = date(2026, 12, 25)
START, END = date(2026, 12, 1), date(2026, 12, 20)  # the campaign's own dates
CAMPAIGN, CHAIN_WIDE, HALF = "vip-mj", "all-earn", "all-half"
R1 = {"S001", "S002"}
ALL = {"S001", "S002", "S003"}
MARGIN = 30
OFF = 100  # 满1000减100
COUPON = 300
Z = 1.959963984540054  # the normal 0.975 quantile
TOKEN = "hq-campaign-effect-0001"


def local(day: date, hh: int = 14, mm: int = 0) -> int:
    """Wall ms of a Shanghai time."""
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZoneInfo(ZONE))
               .timestamp() * 1000)


def d(day: int, month: int = 12) -> date:
    return date(2026, month, day)


@dataclass
class Buy:
    """A planned sale (``paid``: its total after discounts) or refund (negative ``paid``)."""

    member: str  # the id the store wrote
    store: str
    at_ms: int
    paid: int
    doc: str
    discount: int = 0  # the campaign's rule discount on it
    coupon: str | None = None  # a coupon of the campaign used on it (COUPON off)
    refund_of: str | None = None

    @property
    def day(self) -> date:
        return datetime.fromtimestamp(self.at_ms / 1000, ZoneInfo(ZONE)).date()


class Stores:
    """Each store's events applied to the hub straight, in order, each at its own time."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.seq: dict[str, int] = {}

    async def send(self, store: str, bodies: list[EventBody], at_ms: int) -> None:
        events = []
        for body in bodies:
            seq = self.seq[store] = self.seq.get(store, 0) + 1
            events.append(Event(event_id=f"{store}-{seq}", store_id=store, epoch=1, seq=seq,
                                hlc=pack(at_ms, seq), body=body))
        batch = EventBatch(store_id=store, epoch=1, events=events)
        await self.db.transaction(lambda tx: apply_batch(tx, batch, at_ms, zone=ZONE,
                                                         chain_zone=ZONE))


def _body(b: Buy) -> EventBody:
    if b.refund_of is not None:
        return RefundCompleted(
            refund_id=b.doc, sale_id=b.refund_of, terminal_id="T1", member_id=b.member,
            currency="CNY", lines=[RefundLine(line_no=1, qty=1, amount=-b.paid,
                                              points_reversed=0)],
            amount=-b.paid, tenders=[Tender(kind="cash", amount=-b.paid)],
            points_reversed=0, points_shortfall=0, points_returned=0)
    off = b.discount + (COUPON if b.coupon else 0)
    gross = b.paid + off
    discounts = []
    if b.discount:
        discounts.append(SaleDiscount(kind="spend_threshold_off", label="满1000减100",
                                      amount=b.discount, campaign_id=CAMPAIGN))
    if b.coupon:
        discounts.append(SaleDiscount(kind="coupon", label="券", amount=COUPON,
                                      coupon_code=b.coupon))
    return SaleFinalized(
        sale_id=b.doc, member_id=b.member, terminal_id="T1", currency="CNY",
        lines=[SaleLine(line_no=1, sku="A", name="a", category="x", qty=1, unit_price=gross,
                        gross=gross, discount=off, net=b.paid, points=0)],
        discounts=discounts, tenders=[Tender(kind="cash", amount=b.paid)], subtotal=gross,
        discount_total=off, total=b.paid, points_earned=0)


# -- the members, as planned ------------------------------------------------------------------

IDS = [f"m{i:03d}" for i in range(80)]


def home(m: str) -> str:
    return {0: "S001", 1: "S001", 2: "S002", 3: "S003"}[int(m[1:]) % 4]


def tier(m: str) -> str:
    i = int(m[1:])
    return "gold" if i % 7 == 0 else "silver" if i % 10 == 9 else "standard"


def store_tags(m: str) -> list[str]:
    i = int(m[1:])
    return ["vip"] if i % 3 == 0 else ["walker"] if i % 3 == 1 else []


def hq_vip(m: str) -> bool:
    return int(m[1:]) % 5 == 1


ERASED = "m000"  # a store-tagged vip of S001: erased, so in no group
ALIAS, TARGET = "x001", "m012"  # the alias registers at S002 with m012's phone


def in_audience(m: str) -> bool:
    """Tiers standard and gold; a vip (the store's tag or HQ's) or a fan (gold: the rule's)."""
    return (tier(m) in ("standard", "gold")
            and ("vip" in store_tags(m) or hq_vip(m) or tier(m) == "gold"))


@dataclass
class World:
    buys: list[Buy]
    audience: list[str]  # the planned audience's live members (before the reach by stores)
    coupon: str


async def build(db: HubDatabase) -> World:
    stores = Stores(db)
    key = signing.new_private_key()
    await db.transaction(lambda tx: registry.upsert(tx, [
        registry.StoreRecord(store_id="S001", region="R1"),
        registry.StoreRecord(store_id="S002", region="R1"),
        registry.StoreRecord(store_id="S003", region="R2")]))
    for store in sorted(ALL):
        await stores.send(store, [MemberRegistered(
            member_id=m, member_code=f"C{m[1:]}", phone=f"+86139{int(m[1:]):08d}",
            name=f"会员{m[1:]}", tier=tier(m), tags=store_tags(m))
            for m in IDS if home(m) == store], local(d(1, 11)))
    await db.transaction(lambda tx: [users.add(
        tx, username=name, role=role, password_hash=None, now_ms=local(d(1, 11)), stores=where)
        for name, role, where in (("boss", "hq_admin", []),
                                  ("s2.mgr", "store_manager", ["S002"]))])

    # HQ's vip tag by hand; "fan" kept by a rule: the gold members.
    def tagging(tx: Tx) -> None:
        tags.define(tx, "vip", "value", "", "mkt", 1)
        tags.define(tx, "fan", "value", "", "mkt", 1)
        tags.set_hq(tx, [m for m in IDS if hq_vip(m)], ["vip"], [], "mkt", 2)
        segments.create(tx, name="gold fans", definition={"field": "tier", "in": ["gold"]},
                        for_tills=False, tag="fan", by="mkt", now_ms=3, today=TODAY,
                        zone=ZONE)

    await db.transaction(tagging)
    await SegmentKeeper(db, ZONE, LifecycleRules(), today=lambda: TODAY).run()

    # The campaign: version 1 (another name, a smaller holdout) replaced by version 2; a
    # chain-wide one without a holdout, issued 23:30 UTC on 30 November: 1 December in
    # Shanghai.
    def bundle(version: int, name: str, holdout: int, issued: datetime) -> CampaignBundle:
        return CampaignBundle.model_validate({
            "version": version, "scope": "region", "scope_id": "R1", "issued_at": issued,
            "campaigns": [{"campaign_id": CAMPAIGN, "name": name, "starts_on": START,
                           "ends_on": END, "tiers": ["standard", "gold"],
                           "audience": {"tags": ["vip", "fan"]}, "holdout_percent": holdout,
                           "rule": {"kind": "spend_threshold_off", "threshold": 1000,
                                    "off": OFF}}]})

    fleet = CampaignBundle.model_validate({
        "version": 1, "scope": "fleet", "issued_at": datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
        "campaigns": [{"campaign_id": CHAIN_WIDE, "name": "1 point per yuan",
                       "rule": {"kind": "earn_points"}},
                      {"campaign_id": HALF, "name": "double points, half held out",
                       "priority": 50, "starts_on": START, "ends_on": END,
                       "holdout_percent": 50,
                       "rule": {"kind": "earn_points", "points": 2}}]})
    for b in (bundle(1, "old", 20, datetime(2026, 11, 20, tzinfo=UTC)),
              bundle(2, "VIP 满1000减100", 50, datetime(2026, 11, 28, tzinfo=UTC)), fleet):
        await db.transaction(functools.partial(store_bundle, bundle=b, key=key))

    # The planned audience (the erased member left out), in id order; who buys where.
    audience = [m for m in IDS if in_audience(m) and m != ERASED]
    assert TARGET in audience and ERASED in [m for m in IDS if in_audience(m)]
    far = [m for m in audience if home(m) == "S003"]
    buys: list[Buy] = []
    treated = [m for m in audience if not held_out(CAMPAIGN, m, 50)]
    for k, m in enumerate(audience):
        if home(m) == "S003":
            j = far.index(m)
            if j % 3 == 1:  # at R1 only after the window (not reached); at home in it
                buys.append(Buy(m, "S002", local(d(22)), 1500, f"far{k}a"))
                buys.append(Buy(m, "S003", local(d(9)), 2000, f"far{k}b"))
                continue
            if j % 3 == 2:  # at S001 before the window and after it: reached, no visit
                buys.append(Buy(m, "S001", local(d(15, 11)), 600, f"far{k}c"))
                buys.append(Buy(m, "S001", local(d(23)), 1800, f"far{k}d"))
                continue
        at = home(m) if home(m) in R1 else "S001"
        if m in treated:
            if k % 3 != 2:
                paid = 1200 + 50 * (k % 4)
                buys.append(Buy(m, at, local(d(1 + k % 20)), paid - OFF, f"t{k}a", OFF))
            if k % 5 == 0:
                buys.append(Buy(m, at, local(d(15)), 800, f"t{k}b"))
        elif k % 2 == 0:
            buys.append(Buy(m, at, local(d(3 + k % 15)), 900 + 100 * (k % 3), f"h{k}a"))
    near_treated = [m for m in treated if home(m) in R1 and m != TARGET]
    near_held = [m for m in audience if m not in treated and home(m) in R1]
    t0, t1, t2, t3, t4, t5 = near_treated[:6]
    h0 = next(m for m in near_held if any(b.member == m for b in buys))
    h0_sale = next(b for b in buys if b.member == h0)
    t1_sale = next((b for b in buys if b.member == t1), None)
    code = "CPN" + "7" * 10
    buys += [
        # The window's edges, store-local: the evening before, the first and the last minute.
        Buy(t0, home(t0), local(d(30, 11), 23, 30), 5000, "edge-before"),
        Buy(t0, home(t0), local(d(1), 0, 10), 300, "edge-first"),
        Buy(t0, home(t0), local(d(20), 23, 50), 400, "edge-last"),
        Buy(t0, home(t0), local(d(21), 0, 10), 7000, "edge-after"),
        # Refunds: in the window of a sale before it (counts), after it (does not).
        Buy(t0, home(t0), local(d(5)), -1000, "r1", refund_of="edge-before"),
        Buy(h0, h0_sale.store, local(d(18)), -200, "r2", refund_of=h0_sale.doc),
        # A treated member at S003 in the window (not the campaign's store), and one using a
        # coupon the campaign issued on top of its rule discount.
        Buy(t2, "S003", local(d(9)), 3000, "away"),
        Buy(t3, home(t3), local(d(10)), 2000 - OFF - COUPON, "cpn", OFF, coupon=code),
        # A member of S001 at S002 after the window (the S002 manager sees them, nothing
        # bought there in it), one at S002 in it.
        Buy(t4, "S002", local(d(23)), 950, "t4-late"),
        Buy(t5, "S002", local(d(8)), 1500 - OFF, "t5-s2", OFF),
        # The merged id buys at S001 for the member it now is; members outside the audience.
        Buy(ALIAS, "S001", local(d(6)), 1700 - (OFF if TARGET in treated else 0), "alias",
            OFF if TARGET in treated else 0),
        *[Buy(m, home(m), local(d(7)), 4000, f"out{m}") for m in IDS
          if not in_audience(m)][:8],
        Buy(ERASED, "S001", local(d(7)), 4500, "erased"),
    ]
    if t1_sale is not None:
        buys.append(Buy(t1, t1_sale.store, local(d(22)), -t1_sale.paid, "r3",
                        refund_of=t1_sale.doc))
    timeline: list[tuple[int, str, EventBody]] = [(b.at_ms, b.store, _body(b)) for b in buys]
    timeline.append((local(d(2)), "S002", MemberRegistered(
        member_id=ALIAS, member_code="CX001", phone=f"+86139{int(TARGET[1:]):08d}",
        name="别名")))
    timeline.append((local(d(29, 11)), "S001", CouponIssued(
        coupon_code=code, member_id=t3, campaign_id=CAMPAIGN, kind="amount_off",
        value=COUPON)))
    for at_ms, sender, body in sorted(timeline, key=lambda x: (x[0], x[1], str(x[2]))):
        await stores.send(sender, [body], at_ms)
    await ProjectionRunner(db, projections(ZONE)).catch_up()
    assert await db.read(lambda tx: tx.scalar(
        "SELECT merged_into FROM members WHERE member_id = ?", (ALIAS,))) == TARGET
    # Erased on request (hub.members.erasure's flag: only whether the member is live matters).
    await db.transaction(lambda tx: tx.execute(
        "UPDATE members SET erased = 1 WHERE member_id = ?", (ERASED,)))
    return World(buys, audience, code)


# -- what the report must say, computed here from the plan ------------------------------------


def owner(m: str) -> str:
    return TARGET if m == ALIAS else m


def reached(w: World, m: str, stores: set[str], visible: set[str]) -> bool:
    """At home in the campaign's stores, or bought at one the caller covers by its end."""
    return home(m) in stores or any(
        owner(b.member) == m and b.refund_of is None and b.store in stores & visible
        and b.day <= END for b in w.buys)


def window_spend(w: World, members: list[str], stores: set[str], start: date, end: date
                 ) -> dict[str, tuple[bool, int, int, int]]:
    """Member -> (bought, spend net of refunds, campaign discounts, sales discounted), in the
    window at ``stores``."""
    out = {m: (False, 0, 0, 0) for m in members}
    for b in w.buys:
        m = owner(b.member)
        if m in out and b.store in stores and start <= b.day <= end:
            visited, spend, disc, n = out[m]
            given = b.discount + (COUPON if b.coupon else 0)
            out[m] = (visited or b.refund_of is None, spend + b.paid, disc + given,
                      n + (1 if given else 0))
    return out




def expected(w: World, members: list[str], stores: set[str], campaign: str = CAMPAIGN,
             margin_percent: int = MARGIN) -> dict[str, Any]:
    treated = [m for m in members if not held_out(campaign, m, 50)]
    held = [m for m in members if held_out(campaign, m, 50)]
    got = window_spend(w, members, stores, START, END)
    n1, n0 = len(treated), len(held)
    v1 = sum(1 for m in treated if got[m][0])
    v0 = sum(1 for m in held if got[m][0])
    x1 = [got[m][1] for m in treated]
    x0 = [got[m][1] for m in held]
    p1, p0 = v1 / n1, v0 / n0
    se_p = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    var1, var0 = statistics.variance(x1), statistics.variance(x0)
    se_s = math.sqrt(var1 / n1 + var0 / n0)
    df = (var1 / n1 + var0 / n0) ** 2 / ((var1 / n1) ** 2 / (n1 - 1) + (var0 / n0) ** 2 / (n0 - 1))
    t = t_quantile_by_integration(0.975, df)
    d_s = statistics.mean(x1) - statistics.mean(x0)
    incremental = int((Fraction(sum(x1), n1) - Fraction(sum(x0), n0)) * n1)  # towards zero
    margin = int(Fraction(incremental * margin_percent, 100))
    costs = sum(got[m][2] for m in treated)
    return {"n1": n1, "n0": n0, "v1": v1, "v0": v0, "s1": sum(x1), "s0": sum(x0),
            "disc1": costs, "sales1": sum(got[m][3] for m in treated),
            "disc0": sum(got[m][2] for m in held), "sales0": sum(got[m][3] for m in held),
            "visit": (p1 - p0, p1 - p0 - Z * se_p, p1 - p0 + Z * se_p),
            "spend": (d_s, d_s - t * se_s, d_s + t * se_s), "df": df,
            "incremental": incremental, "margin": margin, "costs": costs,
            "roi": (margin - costs) / costs if costs else None}


def check(got: dict[str, Any], want: dict[str, Any]) -> None:
    t, h = got["groups"]["treated"], got["groups"]["held_out"]
    assert (t["members"], t["visitors"], t["spend"], t["discount"], t["discounted_sales"]) == (
        want["n1"], want["v1"], want["s1"], want["disc1"], want["sales1"])
    assert (h["members"], h["visitors"], h["spend"], h["discount"], h["discounted_sales"]) == (
        want["n0"], want["v0"], want["s0"], want["disc0"], want["sales0"])
    assert got["audience"] == want["n1"] + want["n0"]
    assert t["visit_rate"] == pytest.approx(want["v1"] / want["n1"], rel=1e-12)
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
    assert (r["margin_percent"], r["incremental_spend"], r["incremental_margin"],
            r["discount_cost"], r["costs"]) == (
        MARGIN, want["incremental"], want["margin"], want["costs"], want["costs"])
    assert r["roi"] == pytest.approx(want["roi"], rel=1e-12)


def _scope(tx: Tx, username: str) -> Scope:
    user = users.get(tx, username)
    return Scope(Principal(user, roles.load(tx)[user.role], None))


async def _effect(db: HubDatabase, username: str, campaign: str, **kw: Any) -> dict[str, Any]:
    """As the API reads: on PostgreSQL row-level security binds the read to the scope too."""
    scope = await db.read(lambda tx: _scope(tx, username))
    args: dict[str, Any] = {"start": None, "end": None, "margin_percent": MARGIN,
                            "today": TODAY, "zone": ZONE} | kw
    return await Access(db, scope, None).read(lambda tx, s: effect(tx, s, campaign, **args))


async def test_effect_of_a_campaign_against_its_holdout(hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    got = await _effect(hub_db, "boss", CAMPAIGN)
    assert (got["name"], got["holdout_percent"], got["rule"]) == (
        "VIP 满1000减100", 50, "spend_threshold_off")  # version 2's definition
    assert got["window"] == {"start": START, "end": END, "days": 20}
    assert (got["chain_wide"], got["stores"]) == (False, ["S001", "S002"])
    assert [(b["scope"], b["scope_id"], b["version"]) for b in got["pushed_in"]] == [
        ("region", "R1", 2)]

    # The audience: tags from all three sources, two tiers, reached at R1's stores.
    members = [m for m in w.audience if reached(w, m, R1, ALL)]
    assert any(hq_vip(m) and "vip" not in store_tags(m) for m in members)
    assert any(tier(m) == "gold" and not hq_vip(m) and not store_tags(m) for m in members)
    assert any(home(m) == "S003" for m in members)  # reached by their purchases at S001
    assert any(home(m) == "S003" for m in w.audience if m not in members)  # too late there
    want = expected(w, members, R1)
    check(got, want)
    assert want["n1"] >= 10 and want["n0"] >= 10 and want["disc0"] == 0
    # A few figures by hand: the first near treated member paid 300 and 400 at the window's
    # first and last minute plus their planned sale, and got 1000 back of a sale before it;
    # the coupon's 300 comes on top of a rule discount on one sale.
    near = [m for m in members if home(m) in R1 and not held_out(CAMPAIGN, m, 50)
            and m != TARGET]
    t0_plan = sum(b.paid for b in w.buys if b.member == near[0] and b.doc.startswith("t"))
    assert window_spend(w, [near[0]], R1, START, END)[near[0]] == (
        True, t0_plan + 300 + 400 - 1000,
        sum(b.discount for b in w.buys if b.member == near[0] and b.doc.startswith("t")),
        sum(1 for b in w.buys if b.member == near[0] and b.discount))
    assert window_spend(w, [near[3]], R1, START, END)[near[3]][2:] == (
        OFF + COUPON + sum(b.discount for b in w.buys
                           if b.member == near[3] and b.doc.startswith("t")),
        1 + sum(1 for b in w.buys if b.member == near[3] and b.doc.startswith("t")))
    assert got["note"] is None and got["uplift"]["note"] is None
    assert any("as of now" in n for n in got["notes"])
    assert [s["store_id"] for s in got["completeness"]["stores"]] == ["S001", "S002"]
    assert got["completeness"]["sales_facts_behind"] == 0
    assert got["completeness"]["window_ends_on"] == END

    # Another window, asked for: the first week.
    week = await _effect(hub_db, "boss", CAMPAIGN, start=d(1), end=d(7))
    assert week["window"] == {"start": d(1), "end": d(7), "days": 7}
    spend = window_spend(w, members, R1, d(1), d(7))
    assert week["groups"]["treated"]["spend"] == sum(
        spend[m][1] for m in members if not held_out(CAMPAIGN, m, 50))

    # The chain-wide campaign holds nobody out: treated figures, and why there is no effect.
    # Its window runs from the day it was issued in Shanghai to yesterday.
    chain = await _effect(hub_db, "boss", CHAIN_WIDE)
    assert chain["window"] == {"start": d(1), "end": d(24), "days": 24}
    assert chain["chain_wide"] is True and chain["stores"] == ["S001", "S002", "S003"]
    everyone = sorted(m for m in IDS if m != ERASED)
    spend = window_spend(w, everyone, ALL, d(1), d(24))
    t = chain["groups"]["treated"]
    assert (t["members"], t["visitors"], t["spend"], t["discount"]) == (
        79, sum(1 for m in everyone if spend[m][0]), sum(s[1] for s in spend.values()), 0)
    assert chain["groups"]["held_out"]["members"] == 0 and chain["audience"] == 79
    assert "cannot be measured" in chain["note"]
    assert chain["uplift"]["visit_rate"]["difference"] is None
    assert chain["roi"]["incremental_spend"] is None and chain["roi"]["roi"] is None

    with pytest.raises(ServiceError) as missing:
        await _effect(hub_db, "boss", "no-such-campaign")
    assert (missing.value.status, missing.value.code) == (404, "campaign_not_found")
    with pytest.raises(ServiceError) as reversed_:
        await _effect(hub_db, "boss", CAMPAIGN, start=d(10), end=d(5))
    assert (reversed_.value.status, reversed_.value.code) == (422, "bad_window")
    with pytest.raises(ServiceError) as early:  # on its first day, no day of it is over
        await _effect(hub_db, "boss", CAMPAIGN, today=START)
    assert early.value.status == 422


async def test_a_store_manager_counts_their_members_at_their_store(
        hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    got = await _effect(hub_db, "s2.mgr", CAMPAIGN)
    # S002's members: registered there, or who bought there (at any time); of them, those
    # the campaign reaches (at home in R1, or who bought at S002 by the window's end); what
    # they bought at S002 only.
    seen = {m for m in IDS if home(m) == "S002"} | {
        owner(b.member) for b in w.buys if b.store == "S002" and b.refund_of is None}
    members = [m for m in w.audience if m in seen and reached(w, m, R1, {"S002"})]
    assert any(home(m) == "S001" for m in members)
    assert not any(home(m) == "S003" for m in members)  # at S002 only after the window
    assert got["stores"] == ["S002"]
    check(got, expected(w, members, {"S002"}))
    assert [s["store_id"] for s in got["completeness"]["stores"]] == ["S002"]


async def test_the_route_prices_with_the_hubs_margin(tmp_path: Path, hub_url: str) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": hub_url, "data_dir": str(tmp_path / "hub"), "validate_workers": 0,
                "timezone": ZONE},
        "broker": {"embedded_port": 0}, "api": {"token": TOKEN},
        "automation": {"every_s": 3600, "margin_percent": 40}})
    # The world is built before the hub starts, so its own jobs find it caught up. They may
    # move tiers and segments (on today's real date) while it runs: the route is asked about
    # the chain-wide campaign with a holdout, whose members are every live one.
    async with HubDatabase(hub_url) as db:
        await db.transaction(migrate)
        w = await build(db)
    async with Hub(cfg) as hub:
        transport = httpx.ASGITransport(app=create_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hq",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            r = await c.get(f"/v1/campaigns/{HALF}/effect",
                            params={"start": "2026-12-01", "end": "2026-12-20"})
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["window"] == {"start": "2026-12-01", "end": "2026-12-20", "days": 20}
            assert got["chain_wide"] is True and got["pushed_in"][0]["scope"] == "fleet"
            want = expected(w, [m for m in IDS if m != ERASED], ALL, HALF, 40)
            t, h = got["groups"]["treated"], got["groups"]["held_out"]
            assert (t["members"], t["visitors"], t["spend"], h["members"], h["visitors"],
                    h["spend"]) == (want["n1"], want["v1"], want["s1"], want["n0"],
                                    want["v0"], want["s0"])
            assert got["uplift"]["spend_per_member"]["ci_low"] == pytest.approx(
                want["spend"][1], rel=1e-6)
            # Priced with the hub's 40 %: nothing cost anything, so no ROI.
            assert got["roi"] == {
                "margin_percent": 40, "incremental_spend": want["incremental"],
                "incremental_margin": want["margin"], "discount_cost": 0, "costs": 0,
                "roi": None, "note": "nothing cost anything: no ROI"}
            assert want["incremental"] != 0
            r = await c.get("/v1/campaigns/nope/effect")
            assert r.status_code == 404 and r.json()["error"]["code"] == "campaign_not_found"
            r = await c.get(f"/v1/campaigns/{CAMPAIGN}/effect",
                            params={"start": "2026-12-10", "end": "2026-12-05"})
            assert r.status_code == 422 and r.json()["error"]["code"] == "bad_window"
            assert (await c.get(f"/v1/campaigns/{CAMPAIGN}/effect",
                                params={"start": "12/01/2026"})).status_code == 422
            assert (await c.get(f"/v1/campaigns/{CAMPAIGN}/effect",
                                headers={"Authorization": "Bearer nope"})).status_code == 401



async def test_a_window_without_a_start_begins_at_the_first_push(hub_db: HubDatabase) -> None:
    """A bundle replaces the one before it at the hub; the day a campaign was first pushed is
    kept apart, so the window of a campaign without ``starts_on`` still begins then."""
    from hub.reports.campaign_effect import latest, window

    key = signing.new_private_key()
    for version, day in ((1, 10), (2, 25)):
        b = CampaignBundle.model_validate({
            "version": version, "scope": "fleet",
            "issued_at": datetime(2026, 11, day, 2, tzinfo=UTC),
            "campaigns": [{"campaign_id": "no-start", "name": "x",
                           "rule": {"kind": "earn_points"}}]})
        await hub_db.transaction(functools.partial(store_bundle, bundle=b, key=key))
    pushed = await hub_db.read(lambda tx: latest(tx, "no-start"))
    assert pushed is not None
    assert window(pushed, start=None, end=None, today=date(2026, 12, 5),
                  zone="Asia/Shanghai") == (date(2026, 11, 10), date(2026, 12, 4))
