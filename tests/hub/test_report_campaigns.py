"""The campaigns and coupons report on both backends: three stores in two regions (S003 on
Tokyo's calendar), campaigns pushed to a region, the fleet and one store, a journey with a
holdout; coupons issued by the stores and by HQ's own stream, redeemed at several stores, one
redeemed at two (a conflict), one paying as a tender; promotion discounts on sales inside the
period, at its store-local edges and outside it. Every figure is checked against what is
computed here from the planned events alone; a store manager and a region filter see their
stores' figures only; the report names no member; a reversed period is refused."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.auth import roles, users
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.automation import journeys
from hub.campaigns import coupons
from hub.campaigns.bundles import store_bundle
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.core.schema import COUPONS_FOR_STORE
from hub.ledger.apply import apply_batch
from hub.ledger.hq_events import Merge
from hub.projections.catalog import projections
from hub.reports.campaigns import campaigns
from hub.reports.period import ReportQuery
from hub.stores import registry
from hub.stores.registry import VIRTUAL_STORES
from protocol import signing
from protocol.campaigns import CampaignBundle
from protocol.errors import ServiceError
from protocol.events import (
    CouponIssued,
    CouponRedeemed,
    Event,
    EventBatch,
    EventBody,
    MemberRegistered,
    SaleDiscount,
    SaleFinalized,
    SaleLine,
    Tender,
)
from protocol.hlc import HybridClock, pack

ZONE = "Asia/Shanghai"  # the chain's calendar (and S001's, S002's)
TOKYO = "Asia/Tokyo"  # S003's
START, END = date(2026, 12, 1), date(2026, 12, 10)
REGION = {"S001": "R1", "S002": "R1", "S003": "R2"}
ZONES = {"S001": ZONE, "S002": ZONE, "S003": TOKYO, "HQ": ZONE}
NOW = int(datetime(2026, 12, 20, tzinfo=UTC).timestamp() * 1000)
MJ, BDAY, QUIET, OLD, LOCAL = "mj", "bday", "quiet", "old", "tokyo"
JOURNEY = {"name": "唤醒", "trigger": {"kind": "registered"}, "holdout_percent": 10,
           "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 2000}]}


def at(day: date, hh: int = 14, mm: int = 0, zone: str = ZONE) -> int:
    """Wall ms of a local time."""
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZoneInfo(zone))
               .timestamp() * 1000)


def d(day: int, month: int = 12) -> date:
    return date(2026, month, day)


MEMBERS = {f"mem-{i:02d}": ("S001", "S002", "S003")[i % 3] for i in range(12)}


def home(member: str) -> str:
    return MEMBERS[member]


# -- the plan ---------------------------------------------------------------------------------


@dataclass
class Coupon:
    key: str  # the plan's name; a store's coupon's code, HQ's is minted when issued
    issuer: str  # a store, or "HQ"
    member: str
    campaign: str | None  # "journey": the journey's id, known once it is made
    at_ms: int
    code: str = ""


@dataclass
class Sale:
    doc: str
    store: str
    at_ms: int
    total: int  # what was paid, after every discount
    promotion: tuple[str, int] | None = None  # (campaign, discount)
    coupon: tuple[str, int] | None = None  # (coupon key, discount): redeemed at the till
    tender: tuple[str, int] | None = None  # (coupon key, amount) paid by a coupon tender
    member: str | None = None


COUPONS = [
    Coupon("CPN-S001-1", "S001", "mem-00", BDAY, at(d(2))),
    Coupon("CPN-S001-2", "S001", "mem-03", BDAY, at(d(3))),
    Coupon("CPN-S001-3", "S001", "mem-06", MJ, at(d(30, 11), 23, 30)),  # the evening before
    Coupon("CPN-S002-1", "S002", "mem-01", MJ, at(d(28, 11))),  # before, redeemed in it
    Coupon("CPN-S002-2", "S002", "mem-04", MJ, at(d(10), 23, 50)),  # the last minute
    # S003 keeps Tokyo's calendar: 23:30 on the 10th there is in the period, 00:30 on the 11th
    # is not (though still the 10th in Shanghai).
    Coupon("CPN-S003-1", "S003", "mem-02", LOCAL, at(d(10), 23, 30, TOKYO)),
    Coupon("CPN-S003-2", "S003", "mem-05", LOCAL, at(d(11), 0, 30, TOKYO)),
    Coupon("CPN-S003-3", "S003", "mem-08", BDAY, at(d(4), 10, 0, TOKYO)),
    # HQ's stream: the journey's coupons (counted at the member's home store below the chain),
    # one without a campaign, one after the period.
    Coupon("hq-wake-1", "HQ", "mem-03", "journey", at(d(4), 9)),
    Coupon("hq-wake-2", "HQ", "mem-01", "journey", at(d(4), 10)),
    Coupon("hq-wake-3", "HQ", "mem-02", "journey", at(d(4), 11)),
    Coupon("hq-plain", "HQ", "mem-04", None, at(d(5), 9)),
    Coupon("hq-late", "HQ", "mem-07", MJ, at(d(11), 0, 10)),
]

SALES = [
    # Promotions at S001 and S002: the period's store-local edges, inside and out.
    Sale("s1-before", "S001", at(d(30, 11), 23, 30), 900, (MJ, 100)),
    Sale("s1-first", "S001", at(d(1), 0, 10), 1800, (MJ, 200)),
    Sale("s1-mid", "S001", at(d(5)), 2900, (MJ, 300), ("CPN-S001-1", 150), member="mem-00"),
    Sale("s1-last", "S001", at(d(10), 23, 50), 950, (MJ, 100)),
    Sale("s1-after", "S001", at(d(11), 0, 10), 800, (MJ, 100)),
    Sale("s1-plain", "S001", at(d(6)), 500),  # no campaign: not counted
    Sale("s2-a", "S002", at(d(2)), 1900, (MJ, 200)),
    # A promotion and a coupon of the same campaign on one sale: one sale, both discounts.
    Sale("s2-b", "S002", at(d(6)), 2600, (MJ, 300), ("CPN-S002-1", 250), member="mem-01"),
    Sale("s2-wake", "S002", at(d(7)), 3000, None, ("hq-wake-2", 2000), member="mem-01"),
    Sale("s2-plain", "S002", at(d(6), 15), 700, None, ("hq-plain", 300), member="mem-04"),
    # The journey's coupon of mem-03 used at S001, and again at S002 while offline: a conflict.
    Sale("s1-wake", "S001", at(d(8)), 1500, None, ("hq-wake-1", 2000), member="mem-03"),
    Sale("s2-wake-again", "S002", at(d(9)), 1200, None, ("hq-wake-1", 2000),
         member="mem-03"),
    # S003 (Tokyo): its own campaign; a coupon paying as a tender; a redemption after the
    # period of a coupon issued in it.
    Sale("s3-a", "S003", at(d(3), 12, 0, TOKYO), 1400, (LOCAL, 100)),
    Sale("s3-edge", "S003", at(d(11), 0, 20, TOKYO), 1400, (LOCAL, 100)),  # the 11th there
    Sale("s3-tender", "S003", at(d(10), 23, 40, TOKYO), 1000, None, None,
         ("CPN-S003-1", 500), member="mem-02"),
    Sale("s3-wake", "S003", at(d(12), 12, 0, TOKYO), 900, None, ("hq-wake-3", 2000),
         member="mem-02"),
    Sale("s3-bday", "S003", at(d(5), 12, 0, TOKYO), 700, None, ("CPN-S003-3", 80),
         member="mem-08"),
]


def _body(s: Sale, codes: dict[str, str]) -> SaleFinalized:
    discounts = []
    if s.promotion is not None:
        discounts.append(SaleDiscount(kind="spend_threshold_off", label="满减",
                                      amount=s.promotion[1], campaign_id=s.promotion[0]))
    if s.coupon is not None:
        discounts.append(SaleDiscount(kind="coupon", label="券", amount=s.coupon[1],
                                      coupon_code=codes[s.coupon[0]]))
    off = sum(x.amount for x in discounts)
    tenders = [Tender(kind="cash", amount=s.total - (s.tender[1] if s.tender else 0))]
    if s.tender is not None:
        tenders.append(Tender(kind="coupon", amount=s.tender[1],
                              coupon_code=codes[s.tender[0]]))
    return SaleFinalized(
        sale_id=s.doc, member_id=s.member, terminal_id="T1", currency="CNY",
        lines=[SaleLine(line_no=1, sku="A", name="a", category="x", qty=1,
                        unit_price=s.total + off, gross=s.total + off, discount=off,
                        net=s.total, points=0)],
        discounts=discounts, tenders=tenders, subtotal=s.total + off, discount_total=off,
        total=s.total, points_earned=0)


@dataclass
class World:
    journey: str
    codes: dict[str, str]  # plan key -> code
    redemptions: list[tuple[str, str, str, int, int]] = field(default_factory=list)

    def campaign(self, c: Coupon) -> str | None:
        return self.journey if c.campaign == "journey" else c.campaign


class Stores:
    """Each store's events applied to the hub straight, each at its own time."""

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


def _ok(channel: str, purpose: str, text: str) -> None:
    """No message here to check."""


async def build(db: HubDatabase) -> World:
    await db.transaction(lambda tx: registry.upsert(tx, [
        registry.StoreRecord(store_id="S001", region="R1"),
        registry.StoreRecord(store_id="S002", region="R1"),
        registry.StoreRecord(store_id="S003", region="R2", timezone=TOKYO)]))
    stores = Stores(db)
    for store in ("S001", "S002", "S003"):
        await stores.send(store, [MemberRegistered(
            member_id=m, member_code=f"C{m[-2:]}", phone=f"+861390000{m[-2:]}",
            name=f"会员{m[-2:]}") for m in MEMBERS if home(m) == store], at(d(1, 11)))
    await db.transaction(lambda tx: [users.add(
        tx, username=name, role=role, password_hash=None, now_ms=at(d(1, 11)), stores=where)
        for name, role, where in (("boss", "hq_admin", []),
                                  ("s2.mgr", "store_manager", ["S002"]))])
    journey = str((await db.transaction(lambda tx: journeys.create(
        tx, JOURNEY, by="mkt", now_ms=at(d(1, 11)), today=d(1, 11), zone=ZONE,
        check_message=_ok)))["journey_id"])

    key = signing.new_private_key()

    def bundle(scope: str, scope_id: str | None, camps: list[dict[str, Any]]) -> CampaignBundle:
        return CampaignBundle.model_validate({
            "version": 1, "scope": scope, "scope_id": scope_id,
            "issued_at": datetime(2026, 11, 25, tzinfo=UTC), "campaigns": camps})

    off = {"kind": "spend_threshold_off", "threshold": 1000, "off": 100}
    for b in (
            bundle("region", "R1", [{"campaign_id": MJ, "name": "满1000减100", "starts_on": START,
                                     "ends_on": d(31), "holdout_percent": 20, "rule": off}]),
            bundle("fleet", None, [
                {"campaign_id": BDAY, "name": "生日礼", "rule": {"kind": "earn_points"}},
                {"campaign_id": QUIET, "name": "无人问津", "starts_on": d(9),
                 "rule": {"kind": "earn_points"}},
                {"campaign_id": OLD, "name": "已结束", "ends_on": d(20, 11),
                 "rule": {"kind": "earn_points"}}]),
            bundle("store", "S003", [{"campaign_id": LOCAL, "name": "东京店", "rule": off}])):
        await db.transaction(functools.partial(store_bundle, bundle=b, key=key))

    w = World(journey, {c.key: c.key for c in COUPONS if c.issuer != "HQ"})
    steps: list[tuple[int, int, Any]] = []
    for i, c in enumerate(COUPONS):
        steps.append((c.at_ms, i, c))
    for i, s in enumerate(SALES):
        steps.append((s.at_ms, 1000 + i, s))
    for when, _i, step in sorted(steps, key=lambda x: (x[0], x[1])):
        if isinstance(step, Coupon):
            if step.issuer == "HQ":
                # The hub's clock stands at the planned time: the coupon's HLC is then.
                clock = HybridClock(physical_ms=functools.partial(int, when))
                merge = Merge(clock, when, zone=ZONE)
                issued = await db.transaction(functools.partial(
                    coupons.issue, member_id=step.member, kind="amount_off", value=2000,
                    min_spend=0, categories=[], expires_on=None,
                    campaign_id=w.campaign(step), merge=merge))
                w.codes[step.key] = str(issued["coupon_code"])
            else:
                await stores.send(step.issuer, [CouponIssued(
                    coupon_code=step.key, member_id=step.member, campaign_id=step.campaign,
                    kind="amount_off", value=500)], when)
            continue
        bodies: list[EventBody] = [_body(step, w.codes)]
        if step.coupon is not None:  # the till redeems the coupon it applied, in its batch
            bodies.append(CouponRedeemed(coupon_code=w.codes[step.coupon[0]],
                                         sale_id=step.doc, member_id=step.member,
                                         amount=step.coupon[1]))
            w.redemptions.append((step.coupon[0], step.store, step.doc, when, step.coupon[1]))
        await stores.send(step.store, bodies, when)
    await ProjectionRunner(db, projections(ZONE)).catch_up()
    return w


# -- what the report must say, from the plan --------------------------------------------------


def local_day(ms: int, zone: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone)).date()


def in_period(ms: int, stream: str) -> bool:
    return START <= local_day(ms, ZONES[stream]) <= END


def expected(w: World, stores: set[str] | None) -> dict[str | None, dict[str, int]]:
    """Per campaign, the report's figures at ``stores`` (None: the whole chain)."""

    def covered(store: str) -> bool:
        return stores is None or store in stores

    by_key = {c.key: c for c in COUPONS}
    out: dict[str | None, dict[str, int]] = {}

    def row(campaign: str | None) -> dict[str, int]:
        return out.setdefault(campaign, dict.fromkeys(
            ("issued", "redeemed", "conflicts", "promotion", "coupon", "sales", "net"), 0))

    for c in COUPONS:
        counted_at = home(c.member) if c.issuer == "HQ" else c.issuer
        if in_period(c.at_ms, c.issuer) and covered(counted_at):
            row(w.campaign(c))["issued"] += 1
    first: dict[str, tuple[int, str]] = {}
    for key, store, _doc, when, _amount in w.redemptions:
        first[key] = min(first.get(key, (when, store)), (when, store))
    for key, store, _doc, when, _amount in w.redemptions:
        if in_period(when, store) and covered(store):
            which = "redeemed" if first[key] == (when, store) else "conflicts"
            row(w.campaign(by_key[key]))[which] += 1
    for s in SALES:
        if not (in_period(s.at_ms, s.store) and covered(s.store)):
            continue
        carried: dict[str | None, dict[str, int]] = {}
        if s.promotion is not None:
            carried.setdefault(s.promotion[0], {"promotion": 0, "coupon": 0})[
                "promotion"] += s.promotion[1]
        for used in (s.coupon, s.tender):
            if used is not None:
                carried.setdefault(w.campaign(by_key[used[0]]), {"promotion": 0, "coupon": 0})[
                    "coupon"] += used[1]
        for campaign, amounts in carried.items():
            r = row(campaign)
            r["promotion"] += amounts["promotion"]
            r["coupon"] += amounts["coupon"]
            r["sales"] += 1
            r["net"] += s.total
    return out


def figures(got: dict[str, Any]) -> dict[str | None, dict[str, int]]:
    table = next(t for t in got["tables"] if t["name"] == "campaigns")
    cols = table["columns"]
    out = {}
    for values in table["rows"]:
        r = dict(zip(cols, values, strict=True))
        out[r["campaign_id"]] = {
            "issued": r["issued"], "redeemed": r["redeemed"], "conflicts": r["conflicts"],
            "promotion": r["promotion_discount"], "coupon": r["coupon_discount"],
            "sales": r["sales"], "net": r["net"]}
        assert r["discount_cost"] == r["promotion_discount"] + r["coupon_discount"]
        assert r["redemption_rate"] == (round(r["redeemed"] / r["issued"], 4)
                                        if r["issued"] else None)
    return out


def rows(got: dict[str, Any], name: str) -> list[dict[str, Any]]:
    table = next(t for t in got["tables"] if t["name"] == name)
    return [dict(zip(table["columns"], r, strict=True)) for r in table["rows"]]


def _scope(tx: Tx, username: str) -> Scope:
    user = users.get(tx, username)
    return Scope(Principal(user, roles.load(tx)[user.role], None))


async def _report(db: HubDatabase, username: str, q: ReportQuery) -> dict[str, Any]:
    """As the API reads: on PostgreSQL row-level security binds the read to the scope too."""
    scope = await db.read(lambda tx: _scope(tx, username))
    return await Access(db, scope, None).read(
        lambda tx, s: campaigns(tx, s, q, now_ms=NOW, chain_zone=ZONE))


def check(got: dict[str, Any], w: World, stores: set[str] | None,
          quiet: set[str]) -> dict[str | None, dict[str, int]]:
    """The report's campaign rows are the planned ones, plus the pushed campaigns in force
    with nothing to show (``quiet``); the totals add the rows up."""
    want = expected(w, stores)
    zero = dict.fromkeys(("issued", "redeemed", "conflicts", "promotion", "coupon", "sales",
                          "net"), 0)
    assert figures(got) == want | {c: zero for c in quiet}
    t = got["totals"]
    issued = sum(r["issued"] for r in want.values())
    redeemed = sum(r["redeemed"] for r in want.values())
    cost = sum(r["promotion"] + r["coupon"] for r in want.values())
    assert (t["issued"], t["redeemed"], t["discount_cost"], t["conflicts"]) == (
        issued, redeemed, cost, sum(r["conflicts"] for r in want.values()))
    assert t["redemption_rate"] == round(redeemed / issued, 4)
    return want


async def test_campaigns_and_coupons_across_the_chain(hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    got = await _report(hub_db, "boss", ReportQuery(START, END))
    want = check(got, w, None, {QUIET})
    assert OLD not in figures(got)  # ended before the period, nothing in it
    # A few figures by hand, so that the computation above cannot agree with a wrong report
    # by sharing its mistake.
    assert want[MJ] == {"issued": 1, "redeemed": 1, "conflicts": 0, "promotion": 1100,
                        "coupon": 250, "sales": 5, "net": 10150}
    assert want[w.journey] == {"issued": 3, "redeemed": 2, "conflicts": 1, "promotion": 0,
                               "coupon": 6000, "sales": 3, "net": 5700}
    assert want[LOCAL] == {"issued": 1, "redeemed": 0, "conflicts": 0, "promotion": 100,
                           "coupon": 500, "sales": 2, "net": 2400}
    assert want[BDAY] == {"issued": 3, "redeemed": 2, "conflicts": 0, "promotion": 0,
                          "coupon": 230, "sales": 2, "net": 3600}
    assert want[None] == {"issued": 1, "redeemed": 1, "conflicts": 0, "promotion": 0,
                          "coupon": 300, "sales": 1, "net": 700}
    assert (got["totals"]["redemption_rate"], got["totals"]["discount_cost"]) == (
        round(6 / 9, 4), 8480)

    by_id = {r["campaign_id"]: r for r in rows(got, "campaigns")}
    assert (by_id[MJ]["name"], by_id[MJ]["source"], by_id[MJ]["holdout_percent"],
            by_id[MJ]["has_effect"], by_id[MJ]["effect"]) == (
        "满1000减100", "campaign", 20, 1, "/v1/campaigns/mj/effect")
    assert (by_id[BDAY]["name"], by_id[BDAY]["has_effect"], by_id[BDAY]["effect"]) == (
        "生日礼", 0, None)
    assert (by_id[w.journey]["name"], by_id[w.journey]["source"],
            by_id[w.journey]["holdout_percent"], by_id[w.journey]["effect"]) == (
        "唤醒", "journey", 10, f"/v1/journeys/{w.journey}/effect")
    assert by_id[None]["name"] is None and by_id[None]["has_effect"] == 0
    assert list(by_id)[-1] is None  # coupons of no campaign come last

    # The coupon used twice: the redemption that stands (S001's, the earlier), then S002's.
    code = w.codes["hq-wake-1"]
    assert rows(got, "coupon_conflicts") == [
        {"coupon_code": code, "campaign_id": w.journey, "redemption": "kept",
         "store_id": "S001", "sale_id": "s1-wake", "amount": 2000,
         "at": "2026-12-08T14:00:00+08:00"},
        {"coupon_code": code, "campaign_id": w.journey, "redemption": "conflict",
         "store_id": "S002", "sale_id": "s2-wake-again", "amount": 2000,
         "at": "2026-12-09T14:00:00+08:00"}]
    assert [s["store_id"] for s in got["completeness"]["stores"]] == ["S001", "S002", "S003"]
    # Codes only: no member's id, name or phone anywhere in the answer.
    text = json.dumps(got, ensure_ascii=False, default=str)
    assert "mem-" not in text and "会员" not in text and "+86" not in text
    assert len(got["notes"]) >= 5

    # Each coupon counts at its issuing store, HQ's at its member's home store, as written
    # with it; schema 27 fills the same on a hub whose coupons had none (VIRTUAL_STORES).
    def counted_at(tx: Tx) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in tx.all(
            "SELECT coupon_code, store_id, for_store FROM coupons ORDER BY coupon_code")]

    written = await hub_db.read(counted_at)
    assert {(issuer, at) for _code, issuer, at in written} >= {("HQ", "S001"), ("HQ", "S002")}
    assert all(at == issuer for _code, issuer, at in written if issuer != "HQ")

    def filled(tx: Tx) -> list[tuple[Any, ...]]:
        tx.execute("UPDATE coupons SET for_store = NULL")
        tx.execute(COUPONS_FOR_STORE)
        return counted_at(tx)

    assert await hub_db.transaction(filled) == written
    assert "'HQ', 'ONLINE'" in COUPONS_FOR_STORE and {"HQ", "ONLINE"} == VIRTUAL_STORES

    # A period that holds nothing: the conflict is outside it, the promotions too.
    empty = await _report(hub_db, "boss", ReportQuery(d(20), d(21)))
    assert rows(empty, "coupon_conflicts") == []
    assert empty["totals"]["issued"] == 0 and empty["totals"]["redemption_rate"] is None

    with pytest.raises(ServiceError) as reversed_:
        ReportQuery(END, START)
    assert (reversed_.value.code, reversed_.value.status) == ("period_reversed", 422)


async def test_a_store_manager_and_a_region_see_their_stores_only(
        hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    mine = await _report(hub_db, "s2.mgr", ReportQuery(START, END))
    want = check(mine, w, {"S002"}, {QUIET, BDAY})
    assert LOCAL not in figures(mine)  # S003's own campaign: not in force at S002
    # S002's: its coupons and HQ's for its members; the redemptions and discounts made there.
    assert want[MJ] == {"issued": 1, "redeemed": 1, "conflicts": 0, "promotion": 500,
                        "coupon": 250, "sales": 2, "net": 4500}
    assert want[w.journey] == {"issued": 1, "redeemed": 1, "conflicts": 1, "promotion": 0,
                               "coupon": 4000, "sales": 2, "net": 4200}
    # Its conflicting redemption in full; the one that stands at S001: which store only.
    assert [(r["redemption"], r["store_id"], r["sale_id"], r["amount"], r["at"])
            for r in rows(mine, "coupon_conflicts")] == [
        ("kept", "S001", None, None, None),
        ("conflict", "S002", "s2-wake-again", 2000, "2026-12-09T14:00:00+08:00")]
    assert [s["store_id"] for s in mine["completeness"]["stores"]] == ["S002"]

    region = await _report(hub_db, "boss", ReportQuery(START, END, region="R2"))
    want = check(region, w, {"S003"}, {QUIET})
    assert want[w.journey]["issued"] == 1 and want[BDAY]["issued"] == 1
    assert MJ not in figures(region) and rows(region, "coupon_conflicts") == []

    with pytest.raises(ServiceError) as outside:
        await _report(hub_db, "s2.mgr", ReportQuery(START, END, store_id="S001"))
    assert (outside.value.code, outside.value.status) == ("filter_out_of_scope", 403)
