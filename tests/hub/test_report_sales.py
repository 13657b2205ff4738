"""The sales, staff and dashboard reports on both backends, from the log to the figures.

Three stores in two regions (one on Tokyo's calendar) sell a planned, seeded history over
three weeks this year and the same weeks last year: members and walk-ins, discounts, cashiers
and shopping guides, refunds a few days later at the same or another store; guides sign
members up (one of them twice: the second registration becomes an alias). The log is applied
as stores send it and the projections run; every figure is then checked against sums written
out here from the planned purchases (store-local days and hours from ``zoneinfo``), never
against what the code under test produced. A store manager sees their store only (on
PostgreSQL bound by row-level security too); bad input is refused with the right code.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.auth import roles, users
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.ledger.apply import apply_batch
from hub.projections.catalog import projections
from hub.reports import sales, staff
from hub.reports.period import ReportQuery
from hub.stores import registry
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
from protocol.hlc import pack

ZONE = "Asia/Shanghai"
STORES = {"S001": ("南京路店", "east", None), "S002": ("淮海路店", "east", None),
          "S003": ("銀座店", "west", "Asia/Tokyo")}
CATALOGUE = {"sku-milk": ("dairy", 650), "sku-yogurt": ("dairy", 420),
             "sku-apple": ("fresh", 990), "sku-pear": ("fresh", 1_250),
             "sku-chips": ("snacks", 380), "sku-soap": ("household", 1_590)}
PERIOD = ReportQuery(date(2026, 3, 2), date(2026, 3, 15))  # Monday to Sunday, two weeks
SOLD = [(date(2026, 2, 23), date(2026, 3, 16)), (date(2025, 2, 23), date(2025, 3, 16))]
NOW = int(datetime(2026, 3, 15, 14, 0, tzinfo=ZoneInfo(ZONE)).timestamp() * 1000)


def zone_of(store: str) -> ZoneInfo:
    return ZoneInfo(STORES[store][2] or ZONE)


@dataclass
class Line:
    sku: str
    category: str
    qty: int
    gross: int
    discount: int
    amount: int  # what was paid (a sale) or given back (a refund)


@dataclass
class Doc:
    """A planned sale or refund, with what the report needs to know about it."""

    kind: str  # sale | refund
    doc_id: str
    store: str
    at_ms: int
    member: str | None
    cashier: str
    guide: str | None  # a refund: the guide of the sale it returns
    lines: list[Line]
    body: EventBody

    @property
    def local(self) -> datetime:
        return datetime.fromtimestamp(self.at_ms / 1000, zone_of(self.store))


@dataclass
class World:
    docs: list[Doc] = field(default_factory=list)
    # (home store, guide, registered at) of the live members who have a guide
    guided: list[tuple[str, str, int]] = field(default_factory=list)
    timed: list[tuple[int, str, EventBody]] = field(default_factory=list)  # (ms, store, body)


def local_ms(store: str, day: date, hour: int, minute: int) -> int:
    at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone_of(store))
    return int(at.timestamp() * 1000)


def plan(seed: int = 7) -> World:
    rng = random.Random(seed)
    w = World()
    members = {s: [f"m-{s}-{i}" for i in range(6)] for s in STORES}
    for s, ids in members.items():
        for i, m in enumerate(ids):
            w.timed.append((local_ms(s, date(2024, 12, 1), 10, i), s, MemberRegistered(
                member_id=m, member_code=f"C{m}", phone=f"+86139{list(STORES).index(s)}{i:07d}")))
    # Guides sign members up, before, in and after the period; one phone twice (an alias).
    for n, (s, day, guide) in enumerate([
            ("S001", date(2026, 3, 1), "G1"), ("S001", date(2026, 3, 2), "G1"),
            ("S001", date(2026, 3, 9), "G2"), ("S001", date(2026, 3, 15), "G1"),
            ("S002", date(2026, 3, 5), "G1"), ("S002", date(2026, 3, 16), "G1"),
            ("S003", date(2026, 3, 2), "G7"), ("S003", date(2026, 3, 15), "G7"),
            ("S002", date(2026, 3, 6), None)]):
        # S003 at 23:30 Tokyo: 22:30 in Shanghai, the same day either way; S001's 00:20 on
        # the 2nd is the 1st in UTC.
        at = local_ms(s, day, 23 if s == "S003" else 0, 30 if s == "S003" else 20)
        w.timed.append((at, s, MemberRegistered(member_id=f"r{n}", member_code=f"R{n}",
                                                phone=f"+86137{n:08d}", guide_id=guide)))
        if guide is not None:
            w.guided.append((s, guide, at))
    w.timed.append((local_ms("S002", date(2026, 3, 10), 11, 0), "S002", MemberRegistered(
        member_id="r-again", member_code="R-again", phone="+86137" + "0" * 8, guide_id="G5")))
    sales_made: list[Doc] = []
    n = 0
    for first, last in SOLD:
        day = first
        while day <= last:
            for s in STORES:
                for _ in range(rng.randint(0, 3)):
                    n += 1
                    hour = rng.choice([0, 8, 9, 12, 13, 18, 19, 21, 23])
                    at = local_ms(s, day, hour, rng.randint(0, 59))
                    member = rng.choice(members[s]) if rng.random() < 0.6 else None
                    doc = sale(f"sale-{n}", s, at, member, rng)
                    w.docs.append(doc)
                    sales_made.append(doc)
            day += timedelta(days=1)
    # A stand-in who worked one day only (the 2nd): in March's monthly row, not after the 4th.
    w.docs.append(sale("sale-stand-in", "S001", local_ms("S001", date(2026, 3, 2), 10, 0),
                       None, rng, staff=("C9", "G9")))
    for i, of in enumerate(sales_made):
        if rng.random() < 0.25:
            where = of.store if rng.random() < 0.7 else rng.choice(list(STORES))
            day = of.local.date() + timedelta(days=rng.randint(1, 3))
            at = local_ms(where, day, 20, rng.randint(0, 59))
            w.docs.append(refund(f"refund-{i}", where, at, of, rng))
    w.timed += [(d.at_ms, d.store, d.body) for d in w.docs]
    return w


def sale(doc_id: str, store: str, at: int, member: str | None, rng: random.Random,
         staff: tuple[str, str | None] | None = None) -> Doc:
    lines: list[Line] = []
    for sku in rng.sample(sorted(CATALOGUE), rng.randint(1, 3)):
        category, price = CATALOGUE[sku]
        qty = rng.randint(1, 3)
        discount = qty * price // 10 if member is not None and not lines else 0
        lines.append(Line(sku, category, qty, qty * price, discount, qty * price - discount))
    cashier, guide = staff or (f"C{rng.randint(1, 3)}", rng.choice([None, "G1", "G2", "G7"]))
    total = sum(ln.amount for ln in lines)
    body = SaleFinalized(
        sale_id=doc_id, terminal_id="POS-1", member_id=member, cashier_id=cashier,
        guide_id=guide, currency="CNY", subtotal=sum(ln.gross for ln in lines),
        discount_total=sum(ln.discount for ln in lines), total=total, points_earned=0,
        lines=[SaleLine(line_no=i, sku=ln.sku, name=ln.sku, category=ln.category, qty=ln.qty,
                        unit_price=ln.gross // ln.qty, gross=ln.gross, discount=ln.discount,
                        net=ln.amount, points=0) for i, ln in enumerate(lines, 1)],
        tenders=[Tender(kind="cash", amount=total)])
    return Doc("sale", doc_id, store, at, member, cashier, guide, lines, body)


def refund(doc_id: str, store: str, at: int, of: Doc, rng: random.Random) -> Doc:
    back: list[tuple[int, Line]] = []
    for i, ln in enumerate(of.lines, 1):
        if not back or rng.random() < 0.4:
            qty = rng.randint(1, ln.qty)
            back.append((i, Line(ln.sku, ln.category, qty, 0, 0, ln.amount * qty // ln.qty)))
    cashier = f"C{rng.randint(1, 3)}"
    amount = sum(ln.amount for _, ln in back)
    body = RefundCompleted(
        refund_id=doc_id, sale_id=of.doc_id, terminal_id="POS-2", member_id=of.member,
        cashier_id=cashier, currency="CNY", amount=amount, points_reversed=0,
        points_shortfall=0, points_returned=0, tenders=[Tender(kind="cash", amount=amount)],
        lines=[RefundLine(line_no=i, qty=ln.qty, amount=ln.amount, points_reversed=0)
               for i, ln in back])
    return Doc("refund", doc_id, store, at, of.member, cashier, of.guide,
               [ln for _, ln in back], body)


async def build(db: HubDatabase) -> World:
    w = plan()
    await db.transaction(lambda tx: registry.upsert(tx, [
        registry.StoreRecord(store_id=s, name=name, region=region, timezone=tz)
        for s, (name, region, tz) in STORES.items()]))
    # Each store's events of a UTC day make a batch, applied day by day: a refund (a day or
    # more after its sale) is logged after the sale it returns.
    seq: dict[str, int] = {}
    batches: dict[tuple[str, str], list[Event]] = {}
    for at, s, body in sorted(w.timed, key=lambda t: (t[0], t[1])):
        seq[s] = seq.get(s, 0) + 1
        day = datetime.fromtimestamp(at / 1000, UTC).date().isoformat()
        batches.setdefault((day, s), []).append(Event(
            event_id=f"{s}-{seq[s]}", store_id=s, epoch=1, seq=seq[s], hlc=pack(at, seq[s]),
            body=body))
    for (_, s), events in sorted(batches.items()):
        batch = EventBatch(store_id=s, epoch=1, events=events)
        await db.transaction(lambda tx, b=batch: apply_batch(tx, b, NOW))
    await ProjectionRunner(db, projections(ZONE), page=50).catch_up()
    await db.transaction(lambda tx: [users.add(
        tx, username=name, role=role, password_hash=None, now_ms=NOW, stores=where,
        regions=regions) for name, role, where, regions in (
            ("boss", "hq_admin", [], []), ("s1.mgr", "store_manager", ["S001"], []),
            ("west.mgr", "region_manager", [], ["west"]))])
    return w


def scope_of(tx: Tx, username: str) -> Scope:
    user = users.get(tx, username)
    return Scope(Principal(user, roles.load(tx)[user.role], None))


async def run(db: HubDatabase, username: str, fn: Callable[[Tx, Scope], Any]) -> Any:
    """As the API runs a report: on a reader, bound to the user's scope (and on PostgreSQL by
    row-level security)."""
    scope = await db.read(lambda tx: scope_of(tx, username))
    return await Access(db, scope, None).read(fn)


def tables(got: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {t["name"]: [dict(zip(t["columns"], r, strict=True)) for r in t["rows"]]
            for t in got["tables"]}


# --- what the plan says ----------------------------------------------------------------------


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def basket(net: int, sales_: int) -> int | None:
    if sales_ <= 0:
        return None
    q = Fraction(net, sales_) + Fraction(1, 2)
    return q.numerator // q.denominator


def figures(docs: Iterable[Doc], category: str | None = None) -> dict[str, Any]:
    """The trend's figures of ``docs`` (of ``category``'s lines alone when given)."""
    f = dict.fromkeys(("sales", "items", "gross", "discount", "amount", "refunds",
                       "refund_items", "refund_amount"), 0)
    member_amount = member_back = 0
    for d in docs:
        lines = [ln for ln in d.lines if category in (None, ln.category)]
        if not lines:
            continue
        amount = sum(ln.amount for ln in lines)
        if d.kind == "sale":
            f["sales"] += 1
            f["items"] += sum(ln.qty for ln in lines)
            f["gross"] += sum(ln.gross for ln in lines)
            f["discount"] += sum(ln.discount for ln in lines)
            f["amount"] += amount
            member_amount += amount if d.member else 0
        else:
            f["refunds"] += 1
            f["refund_items"] += sum(ln.qty for ln in lines)
            f["refund_amount"] += amount
            member_back += amount if d.member else 0
    net = f["amount"] - f["refund_amount"]
    return {**f, "net": net, "member_net": member_amount - member_back,
            "member_share": share(member_amount - member_back, net),
            "basket": basket(net, f["sales"])}


def year_back(day: date) -> date:
    return day.replace(year=day.year - 1, day=28 if (day.month, day.day) == (2, 29) else day.day)


def between(w: World, first: date, last: date, stores: Iterable[str] = STORES) -> list[Doc]:
    return [d for d in w.docs if d.store in set(stores) and first <= d.local.date() <= last]


def with_last_year(w: World, first: date, last: date, stores: Iterable[str] = STORES,
                   category: str | None = None) -> dict[str, Any]:
    now = figures(between(w, first, last, stores), category)
    before = figures(between(w, year_back(first), year_back(last), stores), category)
    growth = (round((now["net"] - before["net"]) / before["net"], 4)
              if before["net"] > 0 else None)
    return {**now, "sales_last_year": before["sales"], "net_last_year": before["net"],
            "growth": growth}


def pick(row: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in like}


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# --- the tests -------------------------------------------------------------------------------


async def test_every_figure_is_the_planned_purchases_summed(hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    boss = "boss"

    # The trend, per day, with last year's same dates; then per region and per store.
    got = await run(hub_db, boss, lambda tx, s: sales.trend(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE, grain="day"))
    t = tables(got)
    assert [r["period"] for r in t["trend"]] == [d.isoformat() for d in days(PERIOD.start,
                                                                             PERIOD.end)]
    for row in t["trend"]:
        day = date.fromisoformat(row["period"])
        want = with_last_year(w, day, day)
        assert pick(row, want) == want, day
    assert any(r["refunds"] for r in t["trend"]) and any(r["net_last_year"] for r in t["trend"])
    want_total = with_last_year(w, PERIOD.start, PERIOD.end)
    assert pick(got["totals"], want_total) == want_total
    for row in t["stores"]:
        want = with_last_year(w, PERIOD.start, PERIOD.end, [row["store_id"]])
        assert pick(row, want) == want and row["region"] == STORES[row["store_id"]][1]
    assert {r["store_id"] for r in t["stores"]} == set(STORES)
    east = with_last_year(w, PERIOD.start, PERIOD.end, ["S001", "S002"])
    assert pick(next(r for r in t["regions"] if r["region"] == "east"), east) == east
    assert [r["stores"] for r in sorted(t["regions"], key=lambda r: r["region"])] == [2, 1]

    # By ISO week and by month (cut to the period), and one category's lines alone.
    weekly = tables(await run(hub_db, boss, lambda tx, s: sales.trend(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE, grain="week")))["trend"]
    assert [r["period"] for r in weekly] == ["2026-W10", "2026-W11"]
    want = with_last_year(w, date(2026, 3, 9), date(2026, 3, 15))
    assert pick(weekly[1], want) == want
    month_q = ReportQuery(date(2026, 2, 23), date(2026, 3, 15))
    monthly = tables(await run(hub_db, boss, lambda tx, s: sales.trend(
        tx, s, month_q, now_ms=NOW, chain_zone=ZONE, grain="month")))["trend"]
    assert [(r["period"], r["first"], r["last"]) for r in monthly] == [
        ("2026-02", "2026-02-23", "2026-02-28"), ("2026-03", "2026-03-01", "2026-03-15")]
    want = with_last_year(w, date(2026, 2, 23), date(2026, 2, 28))
    assert pick(monthly[0], want) == want
    dairy_q = ReportQuery(PERIOD.start, PERIOD.end, category="dairy")
    dairy = await run(hub_db, boss, lambda tx, s: sales.trend(
        tx, s, dairy_q, now_ms=NOW, chain_zone=ZONE))
    want = with_last_year(w, PERIOD.start, PERIOD.end, category="dairy")
    assert pick(dairy["totals"], want) == want and want["sales"] < want_total["sales"]
    day = PERIOD.start + timedelta(days=3)
    want = with_last_year(w, day, day, category="dairy")
    assert pick(tables(dairy)["trend"][3], want) == want

    # Categories: share of net and of the items kept, ranked by net.
    got = await run(hub_db, boss, lambda tx, s: sales.categories(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE))
    period_docs = between(w, PERIOD.start, PERIOD.end)
    per = {c: figures(period_docs, c) for c in {c for c, _ in CATALOGUE.values()}}
    total_net = sum(f["net"] for f in per.values())
    total_kept = sum(f["items"] - f["refund_items"] for f in per.values())
    assert total_net == want_total["net"]
    ranked = sorted(per, key=lambda c: (-per[c]["net"], c))
    assert [r["category"] for r in tables(got)["categories"]] == ranked
    for row in tables(got)["categories"]:
        f = per[row["category"]]
        assert (row["rank"], row["sales"], row["net_items"], row["net"], row["member_net"],
                row["share"], row["items_share"]) == (
            ranked.index(row["category"]) + 1, f["sales"], f["items"] - f["refund_items"],
            f["net"], f["member_net"], share(f["net"], total_net),
            share(f["items"] - f["refund_items"], total_kept))

    # The profile: store-local hours and weekdays.
    got = tables(await run(hub_db, boss, lambda tx, s: sales.profile(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE)))
    assert [r["hour"] for r in got["hours"]] == list(range(24))
    for row in got["hours"]:
        f = figures(d for d in period_docs if d.local.hour == row["hour"])
        assert (row["sales"], row["refunds"], row["net"], row["share"]) == (
            f["sales"], f["refunds"], f["net"], share(f["net"], total_net)), row["hour"]
    assert got["hours"][23]["sales"] > 0  # 23:xx: late sales stay on their own day
    assert [r["weekday"] for r in got["weekdays"]] == ["Mon", "Tue", "Wed", "Thu", "Fri",
                                                       "Sat", "Sun"]
    for i, row in enumerate(got["weekdays"]):
        f = figures(d for d in period_docs if d.local.weekday() == i)
        assert (row["days"], row["sales"], row["net"], row["net_per_day"]) == (
            2, f["sales"], f["net"], basket(f["net"], 2))

    # Products, the chain's (its own rows) over most of a month (its monthly rows less its
    # first days) and the east's (the stores' rows) over a whole month and days before it.
    for q, stores in ((ReportQuery(date(2025, 3, 5), date(2025, 3, 31)), STORES),
                      (ReportQuery(date(2025, 2, 20), date(2025, 3, 31), region="east"),
                       ["S001", "S002"])):
        got = await run(hub_db, boss, lambda tx, s, q=q: sales.products(
            tx, s, q, now_ms=NOW, chain_zone=ZONE, limit=3))
        check_products(w, got, q, stores)

    # Staff: cashiers (refunds they paid out) and guides (refunds of their sales).
    got = await run(hub_db, boss, lambda tx, s: staff.staff(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE))
    check_staff(w, tables(got), STORES)
    # A whole month (February's monthly rows) and days after it; most of a month (March's
    # monthly rows less its first four days).
    for q in (ReportQuery(date(2026, 2, 1), date(2026, 3, 4)),
              ReportQuery(date(2026, 3, 5), date(2026, 3, 31))):
        got = await run(hub_db, boss, lambda tx, s, q=q: staff.staff(
            tx, s, q, now_ms=NOW, chain_zone=ZONE))
        check_staff(w, tables(got), STORES, q)

    # The dashboard: today (the 15th, a Sunday) against the 8th, the period's days.
    got = await run(hub_db, boss, lambda tx, s: sales.dashboard(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE))
    t = tables(got)
    today, week_ago = date(2026, 3, 15), date(2026, 3, 8)
    for row, day in zip(t["today"], (today, week_ago), strict=True):
        want = figures(between(w, day, day))
        assert row["day"] == day.isoformat() and pick(row, want) == want
    assert got["totals"]["today_net"] == figures(between(w, today, today))["net"]
    for row in t["trend"]:
        want = with_last_year(w, date.fromisoformat(row["day"]),
                              date.fromisoformat(row["day"]))
        assert (row["sales"], row["net"], row["net_last_year"]) == (
            want["sales"], want["net"], want["net_last_year"])
    assert len(t["trend"]) == 14
    for row in t["stores"]:
        one = [row["store_id"]]
        assert (row["today_net"], row["last_week_net"], row["net"]) == (
            figures(between(w, today, today, one))["net"],
            figures(between(w, week_ago, week_ago, one))["net"],
            figures(between(w, PERIOD.start, PERIOD.end, one))["net"])
    west = next(r for r in t["regions"] if r["region"] == "west")
    assert west["today_net"] == figures(between(w, today, today, ["S003"]))["net"]


def check_products(w: World, got: dict[str, Any], q: ReportQuery,
                   stores: Iterable[str]) -> None:
    kept: dict[tuple[str, str], list[int]] = {}  # sold qty, qty kept, net
    for d in between(w, q.start, q.end, stores):
        for ln in d.lines:
            k = kept.setdefault((ln.sku, ln.category), [0, 0, 0])
            sign = 1 if d.kind == "sale" else -1
            k[0] += ln.qty if d.kind == "sale" else 0
            k[1] += sign * ln.qty
            k[2] += sign * ln.amount
    net_all = sum(k[2] for k in kept.values())
    assert got["totals"]["net"] == net_all == figures(between(w, q.start, q.end, stores))["net"]
    sold = [s for s in kept if kept[s][0] > 0]
    top = sorted(sold, key=lambda s: (-kept[s][2], -kept[s][0], s))[:3]
    slow = sorted(sold, key=lambda s: (kept[s][2], kept[s][0], s))[:3]
    for name, want_skus in (("top", top), ("slow", slow)):
        assert [(r["rank"], r["sku"], r["category"], r["qty"], r["net"], r["share"])
                for r in tables(got)[name]] == [
            (i, sku, cat, kept[(sku, cat)][1], kept[(sku, cat)][2],
             share(kept[(sku, cat)][2], net_all)) for i, (sku, cat) in enumerate(want_skus, 1)]


def check_staff(w: World, got: dict[str, list[dict[str, Any]]], stores: Iterable[str],
                q: ReportQuery = PERIOD) -> None:
    docs = between(w, q.start, q.end, stores)
    signed: dict[tuple[str, str], int] = {}
    for store, guide, at in w.guided:
        day = datetime.fromtimestamp(at / 1000, zone_of(store)).date()
        if store in set(stores) and q.start <= day <= q.end:
            signed[(store, guide)] = signed.get((store, guide), 0) + 1
    for role, table in (("cashier", "cashiers"), ("guide", "guides")):
        want: dict[tuple[str, str], list[int]] = {}
        for d in docs:
            who = d.cashier if role == "cashier" else d.guide
            if who is None:
                continue
            row = want.setdefault((d.store, who), [0, 0, 0, 0])
            amount = sum(ln.amount for ln in d.lines) * (1 if d.kind == "sale" else -1)
            row[0] += d.kind == "sale"
            row[1] += amount
            row[2] += d.kind == "sale" and d.member is not None
            row[3] += amount if d.member is not None else 0
        if role == "guide":  # a guide who only signed members up is listed with no sales
            want.update({k: [0, 0, 0, 0] for k in signed if k not in want})
        rows = got[table]
        assert {(r["store_id"], r["staff_id"]): [r["sales"], r["net"], r["member_sales"],
                                                 r["member_net"]] for r in rows} == want, role
        assert len(rows) == len(want)
        assert [r["net"] for r in rows] == sorted((r["net"] for r in rows), reverse=True)
    # Not G5 at S002: that member's phone was signed up before, so it is an alias now.
    assert {(r["store_id"], r["staff_id"]): r["registrations"] for r in got["guides"]
            if r["registrations"]} == signed


async def test_a_store_manager_sees_their_store_and_bad_input_is_refused(
        hub_db: HubDatabase) -> None:
    w = await build(hub_db)
    got = await run(hub_db, "s1.mgr", lambda tx, s: sales.trend(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE))
    want = with_last_year(w, PERIOD.start, PERIOD.end, ["S001"])
    assert pick(got["totals"], want) == want
    assert want["net"] < with_last_year(w, PERIOD.start, PERIOD.end)["net"]
    t = tables(got)
    assert [r["store_id"] for r in t["stores"]] == ["S001"]
    assert [r["region"] for r in t["regions"]] == ["east"]
    assert [s["store_id"] for s in got["completeness"]["stores"]] == ["S001"]
    staff_got = await run(hub_db, "s1.mgr", lambda tx, s: staff.staff(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE))
    check_staff(w, tables(staff_got), ["S001"])
    hours = await run(hub_db, "s1.mgr", lambda tx, s: sales.profile(
        tx, s, PERIOD, now_ms=NOW, chain_zone=ZONE))
    assert hours["totals"]["net"] == want["net"]
    # The region manager of the west, filtered to their store: the same as unfiltered.
    west = await run(hub_db, "west.mgr", lambda tx, s: sales.dashboard(
        tx, s, ReportQuery(PERIOD.start, PERIOD.end, store_id="S003"), now_ms=NOW,
        chain_zone=ZONE))
    assert [r["store_id"] for r in tables(west)["stores"]] == ["S003"]
    assert west["totals"]["net"] == figures(between(w, PERIOD.start, PERIOD.end,
                                                    ["S003"]))["net"]

    async def refused(username: str, fn: Callable[[Tx, Scope], Any]) -> tuple[int, str, Any]:
        with pytest.raises(ServiceError) as e:
            await run(hub_db, username, fn)
        return e.value.status, e.value.code, e.value.details.get("part")

    def q(**kw: Any) -> ReportQuery:
        return ReportQuery(PERIOD.start, PERIOD.end, **kw)

    common = {"now_ms": NOW, "chain_zone": ZONE}
    assert await refused("s1.mgr", lambda tx, s: sales.trend(
        tx, s, q(store_id="S002"), **common)) == (403, "filter_out_of_scope", "store")
    assert await refused("s1.mgr", lambda tx, s: staff.staff(
        tx, s, q(region="west"), **common)) == (403, "filter_out_of_scope", "region")
    assert await refused("boss", lambda tx, s: sales.products(
        tx, s, q(store_id="S999"), **common)) == (404, "unknown_store", "store")
    assert await refused("boss", lambda tx, s: sales.categories(
        tx, s, q(region="north"), **common)) == (404, "unknown_region", "region")
    assert await refused("boss", lambda tx, s: sales.profile(
        tx, s, q(category="dairy"), **common)) == (422, "filter_not_supported", "category")
    assert await refused("boss", lambda tx, s: staff.staff(
        tx, s, q(tier="gold"), **common)) == (422, "filter_not_supported", "tier")
    assert await refused("boss", lambda tx, s: sales.products(
        tx, s, q(), limit=0, **common)) == (422, "invalid_limit", "limit")
    assert await refused("boss", lambda tx, s: sales.trend(
        tx, s, q(), grain="year", **common)) == (422, "unknown_grain", "grain")
    with pytest.raises(ServiceError) as e:
        ReportQuery(date(2026, 3, 15), date(2026, 3, 1))
    assert (e.value.status, e.value.code) == (422, "period_reversed")


def test_sums_add_every_figure() -> None:
    """``Sums.add`` names each field: one left out would drop a figure from every total."""
    fields = sales.Sums.__dataclass_fields__
    a = sales.Sums(*range(1, len(fields) + 1))
    b = sales.Sums(*(100 * i for i in range(1, len(fields) + 1)))
    assert a.add(b) == sales.Sums(*(101 * i for i in range(1, len(fields) + 1)))
