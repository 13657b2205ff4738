"""The consolidated member reports (``hub.reports.members``) on both backends, read as the API
reads them (PostgreSQL's row-level security bound to the caller's scope): three stores in two
regions (one on Berlin's calendar, so a day and a registration month are the store's own), an
online channel, ~40 members with purchases, partial and full refunds (one merged before the
sale it refunds), an alias merged into a member, top-ups, tiers, lifecycle stages, RFM runs
and a segment. Every figure is checked against a count written out here from the plan; a store
manager sees only their members and their store's purchases; names are masked for masked
roles; bad input is refused with its code."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from hub.auth import roles, users
from hub.auth.access import Access
from hub.auth.scope import Scope, mask_name
from hub.auth.tokens import Principal
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.core.schema import PURCHASE_DAYS_FROM_MEMBER_DAYS
from hub.ledger.apply import apply_batch
from hub.members.rfm import GROUPS
from hub.projections.catalog import projections
from hub.reports import members
from hub.reports.period import ReportQuery
from hub.stores import registry
from hub.stores.registry import StoreRecord
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
    StoredValueToppedUp,
    Tender,
)
from protocol.hlc import pack

ZONE = "Asia/Shanghai"
BERLIN = "Europe/Berlin"
NOW = int(datetime(2026, 7, 15, 2, 0, tzinfo=UTC).timestamp() * 1000)
Q = ReportQuery(date(2026, 1, 1), date(2026, 6, 30))
STORES = {"S001": ("East", ZONE, "东一店"), "S002": ("East", ZONE, "东二店"),
          "S003": ("West", BERLIN, "西一店"), "ONLINE": (None, ZONE, "ONLINE")}
HOMES = ("S001", "S002", "S003", "ONLINE")
T = TypeVar("T")


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def local(store: str, at_ms: int) -> date:
    return datetime.fromtimestamp(at_ms / 1000, ZoneInfo(STORES[store][1])).date()


@dataclass
class Buy:
    doc: str
    member: str  # the id the store wrote
    store: str
    at_ms: int
    total: int
    refunds: list[tuple[str, int, int]] = field(default_factory=list)  # (store, at, amount)


@dataclass
class Plan:
    homes: dict[str, str]  # member (live) -> home store
    registered: dict[str, int]
    names: dict[str, str]
    alias: dict[str, str]  # merged id -> member
    buys: list[Buy]
    topups: list[tuple[str, str, int, int]]  # (member written, store, at, principal)
    tiers: dict[str, str]
    stages: dict[str, str]
    groups: dict[str, str]  # latest RFM run
    segment: set[str]

    def member(self, written: str) -> str:
        return self.alias.get(written, written)


class Streams:
    """Each store's stream; a batch applied at once."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.seq: dict[str, int] = {}

    async def send(self, store: str, timed: list[tuple[int, EventBody]]) -> None:
        events = []
        for at, body in sorted(timed, key=lambda x: x[0]):
            seq = self.seq[store] = self.seq.get(store, 0) + 1
            events.append(Event(event_id=f"{store}-{seq}", store_id=store, epoch=1, seq=seq,
                                hlc=pack(at, seq), body=body))
        batch = EventBatch(store_id=store, epoch=1, events=events)
        await self.db.transaction(lambda tx: apply_batch(tx, batch, NOW, zone=STORES[store][1],
                                                         chain_zone=ZONE))


def sale(b: Buy) -> SaleFinalized:
    return SaleFinalized(
        sale_id=b.doc, terminal_id="T1", member_id=b.member, currency="CNY",
        lines=[SaleLine(line_no=1, sku="A", name="a", category="x", qty=1, unit_price=b.total,
                        gross=b.total, discount=0, net=b.total, points=0)],
        tenders=[Tender(kind="cash", amount=b.total)], subtotal=b.total, discount_total=0,
        total=b.total, points_earned=0)


def refund(b: Buy, n: int, amount: int) -> RefundCompleted:
    return RefundCompleted(
        refund_id=f"{b.doc}-r{n}", sale_id=b.doc, terminal_id="T2", member_id=b.member,
        currency="CNY", lines=[RefundLine(line_no=1, qty=1, amount=amount, points_reversed=0)],
        amount=amount, tenders=[Tender(kind="cash", amount=amount)], points_reversed=0,
        points_shortfall=0, points_returned=0)


def plan() -> Plan:
    rng = random.Random(20260715)
    ids = [f"m{i:02d}" for i in range(40)]
    homes = {m: HOMES[i % 4] for i, m in enumerate(ids)}
    start = ms("2025-11-01T00:00:00")
    registered = {m: start + rng.randrange(230) * 86_400_000 + rng.randrange(86_400_000)
                  for m in ids}
    # Edges: 00:30 on 1 January in Shanghai (in the period), 00:30 on 1 July in Shanghai and
    # in Berlin (not in it, though it is still 30 June in UTC).
    registered["m00"] = ms("2025-12-31T16:30:00")
    registered["m04"] = ms("2026-06-30T16:30:00")
    registered["m02"] = ms("2026-06-30T22:30:00")  # (23:30 on 30 June in Berlin's winter)
    registered["m10"] = ms("2026-06-30T20:00:00")  # 22:00 in Berlin, 04:00 on 1 July in China
    registered["m06"] = ms("2026-03-29T00:30:00")  # Berlin's clocks go forward that night
    buys: list[Buy] = []
    n = 0
    for m in ids:
        for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
            n += 1
            store = homes[m] if rng.random() < 0.7 else rng.choice(HOMES[:3])
            at = registered[m] + rng.randrange(1, 120) * 86_400_000 // rng.choice((1, 4, 12))
            buys.append(Buy(f"s{n:03d}", m, store, min(at, NOW - 86_400_000),
                            rng.randrange(100, 5_000)))
    # Refunds: full ones (one in two refunds), partial ones, one in two parts that together
    # are full, one at another store.
    for k, b in enumerate(buys[::5]):
        at = b.at_ms + 3_600_000 * (1 + k)
        if k % 3 == 0:
            b.refunds.append((b.store, at, b.total))
        elif k % 3 == 1:
            b.refunds.append(("S002" if b.store != "S002" else "S001", at, b.total // 3))
        else:
            b.refunds += [(b.store, at, b.total // 2), (b.store, at + 1, b.total - b.total // 2)]
    # A sale at S003 refunded in full at S001, whose stream is merged first: the refund comes
    # before the sale it refunds.
    n += 1
    early = Buy(f"s{n:03d}", "m03", "S003", ms("2026-02-10T10:00:00"), 1_234)
    early.refunds.append(("S001", ms("2026-02-11T10:00:00"), 1_234))
    buys.append(early)
    # The alias: registered at S002 with m01's phone, after m01; it buys and tops up.
    alias = {"x01": "m01"}
    buys += [Buy("sx1", "x01", "S002", ms("2026-04-02T03:00:00"), 4_000),
             Buy("sx2", "x01", "S002", ms("2026-05-02T03:00:00"), 500)]
    topups = [(m, rng.choice(("S001", "S002", "ONLINE")),
               ms("2026-01-05T00:00:00") + rng.randrange(170) * 86_400_000,
               rng.choice((10_000, 20_000, 50_000))) for m in ids[:25] for _ in range(
        rng.randrange(1, 4))]
    topups.append(("x01", "S002", ms("2026-04-03T00:00:00"), 100_000))
    topups.append(("m05", "S001", ms("2025-12-01T00:00:00"), 900_000))  # before the period
    return Plan(homes, registered, {m: f"会员{m}" for m in ids}, alias, buys, topups,
                tiers={m: "gold" for m in ids[::3]},
                stages={m: ("new", "active", "sleeping", "lost")[i % 4]
                        for i, m in enumerate(ids) if i % 5},
                groups={m: ("HHH", "LLL", "none", "HLH")[i % 4] for i, m in enumerate(ids[:30])},
                segment=set(ids[1::2]))


async def build(db: HubDatabase) -> Plan:
    p = plan()
    await db.transaction(lambda tx: registry.upsert(tx, [
        StoreRecord(store_id=s, name=name, region=region,
                    timezone=zone if zone != ZONE else None)
        for s, (region, zone, name) in STORES.items() if s != "ONLINE"]))
    streams = Streams(db)
    phone = {m: f"+86139{i:08d}" for i, m in enumerate(p.homes)}
    for store in HOMES:
        regs: list[tuple[int, EventBody]] = [
            (p.registered[m], MemberRegistered(member_id=m, member_code=f"C-{m}",
                                               phone=phone[m], name=p.names[m]))
            for m in p.homes if p.homes[m] == store]
        if store == "S002":
            regs.append((ms("2026-04-01T00:00:00"), MemberRegistered(
                member_id="x01", member_code="C-x01", phone=phone["m01"], name="别名")))
        await streams.send(store, regs)
    for store in HOMES:
        timed: list[tuple[int, EventBody]] = [(b.at_ms, sale(b)) for b in p.buys
                                              if b.store == store]
        timed += [(at, refund(b, k, amount)) for b in p.buys
                  for k, (s, at, amount) in enumerate(b.refunds) if s == store]
        timed += [(at, StoredValueToppedUp(member_id=m, topup_id=f"t{i}", currency="CNY",
                                           principal=principal, bonus=principal // 10))
                  for i, (m, s, at, principal) in enumerate(p.topups) if s == store]
        if timed:
            await streams.send(store, timed)

    def extras(tx: Tx) -> None:
        tx.executemany("UPDATE members SET tier = ? WHERE member_id = ?",
                       [(t, m) for m, t in p.tiers.items()])
        tx.executemany("INSERT INTO member_lifecycle(member_id, stage, since) VALUES (?, ?, ?)",
                       [(m, s, "2026-06-01") for m, s in p.stages.items()])
        # Runs as hub.members.rfm keeps them: the size of each group in the summary.
        sizes = {g: sum(1 for v in p.groups.values() if v == g) for g in set(p.groups.values())}
        for run, created, groups in (("run-old", 1, {"LLH": 40}), ("run-new", 2, sizes)):
            tx.execute("INSERT INTO rfm_runs(run_id, as_of, params, created_ms, members,"
                       " summary) VALUES (?, '2026-06-30', '{}', ?, 0, ?)",
                       (run, created, json.dumps({"groups": groups})))
        tx.executemany("INSERT INTO rfm_scores(run_id, member_id, r, f, m, grp)"
                       " VALUES (?, ?, 1, 1, 1, ?)",
                       [("run-old", m, "LLH") for m in p.homes] +
                       [("run-new", m, g) for m, g in p.groups.items()])
        tx.execute("INSERT INTO rfm_group_names(grp, name) VALUES ('HHH', '超级会员')")
        tx.execute("INSERT INTO segments(segment_id, name, definition, version, state,"
                   " for_tills, relative, needs, created_by, created_ms, updated_ms)"
                   " VALUES ('seg1', 'odd', '{}', 1, 'active', 0, 0, '[]', 't', 0, 0)")
        tx.executemany("INSERT INTO segment_members(segment_id, member_id, since_ms)"
                       " VALUES ('seg1', ?, 0)", [(m,) for m in p.segment])
        for name, role, where in (("boss", "hq_admin", []), ("mkt", "marketing", []),
                                  ("s1.mgr", "store_manager", ["S001"]),
                                  ("west.mgr", "region_manager", [])):
            users.add(tx, username=name, role=role, password_hash=None, now_ms=NOW,
                      stores=where, regions=["West"] if name == "west.mgr" else None)

    await db.transaction(extras)
    await ProjectionRunner(db, projections(ZONE)).catch_up()
    assert await db.read(lambda tx: tx.scalar(
        "SELECT merged_into FROM members WHERE member_id = 'x01'")) == "m01"
    return p


def scope_of(db: HubDatabase, username: str) -> Callable[[], Any]:
    async def get() -> Scope:
        def read(tx: Tx) -> Scope:
            user = users.get(tx, username)
            return Scope(Principal(user, roles.load(tx)[user.role], None))
        return await db.read(read)
    return get


async def run(db: HubDatabase, username: str, fn: Callable[[Tx, Scope], T]) -> T:
    """``fn`` as a route runs it: on a reader, bound by row-level security to the scope."""
    scope = await scope_of(db, username)()
    return await Access(db, scope, None).read(fn)


def table(got: dict[str, Any], name: str) -> list[dict[str, Any]]:
    t = next(t for t in got["tables"] if t["name"] == name)
    return [dict(zip(t["columns"], r, strict=True)) for r in t["rows"]]


# -- what the reports must say, counted here from the plan ------------------------------------


def sees(p: Plan, stores: set[str] | None) -> set[str]:
    """The members a scope over ``stores`` (None: all) sees: registered there, or who bought
    or brought something back there (``member_stores``)."""
    if stores is None:
        return set(p.homes)
    return {m for m in p.homes if p.homes[m] in stores} | {
        p.member(b.member) for b in p.buys
        if b.store in stores or any(s in stores for s, _at, _a in b.refunds)}


def kept(b: Buy) -> bool:
    back = sum(a for _s, _at, a in b.refunds)
    return not (0 < b.total <= back)


def want_activity(p: Plan, stores: set[str], months: list[tuple[str, date, date]],
                  who: set[str]) -> dict[str, Any]:
    active = {label: set() for label, _f, _l in months}  # type: ignore[var-annotated]
    bought: dict[str, int] = {}
    kept_n: dict[str, int] = {}
    spend: dict[str, int] = {}
    for b in p.buys:
        m = p.member(b.member)
        if m not in who:
            continue
        day = local(b.store, b.at_ms)
        if b.store in stores and Q.start <= day <= Q.end:
            active[day.strftime("%Y-%m")].add(m)
            bought[m] = bought.get(m, 0) + 1
            kept_n[m] = kept_n.get(m, 0) + kept(b)
            spend[m] = spend.get(m, 0) + b.total
        for s, at, amount in b.refunds:
            if s in stores and Q.start <= local(s, at) <= Q.end:
                spend[m] = spend.get(m, 0) - amount
    buyers = [m for m in bought]
    ranked = sorted(buyers, key=lambda m: (-spend[m], m))
    top = ranked[:math.ceil(len(ranked) / 5)]
    total = sum(spend[m] for m in buyers)
    return {"active": {k: len(v) for k, v in active.items()},
            "active_members": len(buyers),
            "buyers": sum(1 for m in buyers if kept_n[m] >= 1),
            "repeat_buyers": sum(1 for m in buyers if kept_n[m] >= 2),
            "top": sum(spend[m] for m in top), "spend": total}


# -- the tests --------------------------------------------------------------------------------


async def test_member_reports(hub_db: HubDatabase) -> None:
    p = await build(hub_db)
    await check_structure(hub_db, p)
    await check_activity(hub_db, p)
    await check_funnel(hub_db, p)
    await check_loyalty(hub_db, p)
    await check_refusals(hub_db)


async def check_structure(db: HubDatabase, p: Plan) -> None:
    got = await run(db, "boss", lambda tx, s: members.structure(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE))
    everyone = set(p.homes)
    assert got["totals"]["members"] == len(everyone) == 40  # the alias is not one
    tiers = {r["tier"]: r["members"] for r in table(got, "tiers")}
    assert tiers == {"gold": len(p.tiers), "standard": 40 - len(p.tiers)}
    regions = {r["region"]: r["members"] for r in table(got, "regions")}
    assert regions == {"East": 20, "West": 10, None: 10}
    stages = {r["stage"]: r["members"] for r in table(got, "stages")}
    assert stages == {s: sum(1 for v in p.stages.values() if v == s)
                      for s in set(p.stages.values())} | {None: 40 - len(p.stages)}
    rfm = {r["rfm_group"]: (r["group_name"], r["members"]) for r in table(got, "rfm")}
    names = {**GROUPS, "HHH": "超级会员", "none": "none"}
    assert rfm == {g: (names[g], sum(1 for v in p.groups.values() if v == g))
                   for g in set(p.groups.values())} | {None: (None, 40 - len(p.groups))}
    assert got["totals"]["rfm_run"] == "run-new"
    new = {m for m in everyone
           if Q.start <= local(p.homes[m], p.registered[m]) <= Q.end}
    assert "m00" in new and "m10" in new and "m04" not in new and "m02" not in new
    by_store = {r["store_id"]: r["new_members"] for r in table(got, "new_by_store")}
    assert by_store == {s: sum(1 for m in new if p.homes[m] == s) for s in HOMES
                        if any(p.homes[m] == s for m in new)}
    assert {r["channel"]: r["new_members"] for r in table(got, "new_by_channel")} == {
        "online": sum(1 for m in new if p.homes[m] == "ONLINE"),
        "in_store": sum(1 for m in new if p.homes[m] != "ONLINE")}
    assert got["completeness"]["stores"] and got["notes"]

    # A store manager: the members registered at S001 or who bought there; new members of
    # S001 only.
    mine = await run(db, "s1.mgr", lambda tx, s: members.structure(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE))
    seen = sees(p, {"S001"})
    assert mine["totals"]["members"] == len(seen) < 40
    assert {r["tier"]: r["members"] for r in table(mine, "tiers")} == {
        t: n for t, n in {"gold": len(seen & set(p.tiers)),
                          "standard": len(seen - set(p.tiers))}.items() if n}
    assert {r["store_id"]: r["new_members"] for r in table(mine, "new_by_store")} == {
        "S001": sum(1 for m in new if p.homes[m] == "S001")}
    # The East region's gold members (its stores' rows in store_members, with the tier): a
    # member who counts at both its stores is one member.
    east = await run(db, "boss", lambda tx, s: members.structure(
        tx, s, ReportQuery(Q.start, Q.end, region="East", tier="gold"), now_ms=NOW,
        chain_zone=ZONE))
    gold = sees(p, {"S001", "S002"}) & set(p.tiers)
    assert sees(p, {"S001"}) & sees(p, {"S002"}) & gold
    assert east["totals"]["members"] == len(gold)

    def tally(held: dict[str, str]) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for m in gold:
            out[held.get(m)] = out.get(held.get(m), 0) + 1
        return out
    assert {r["stage"]: r["members"] for r in table(east, "stages")} == tally(p.stages)
    assert {r["rfm_group"]: r["members"] for r in table(east, "rfm")} == tally(p.groups)
    # Filters: the West region's gold members in the segment.
    q = ReportQuery(Q.start, Q.end, region="West", tier="gold", segment_id="seg1")
    west = await run(db, "boss", lambda tx, s: members.structure(
        tx, s, q, now_ms=NOW, chain_zone=ZONE))
    assert west["totals"]["members"] == len(sees(p, {"S003"}) & set(p.tiers) & p.segment) > 0


async def check_activity(db: HubDatabase, p: Plan) -> None:
    months = [(f"2026-{k:02d}", date(2026, k, 1), date(2026, k, 1)) for k in range(1, 7)]
    got = await run(db, "boss", lambda tx, s: members.activity(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE))
    want = want_activity(p, set(HOMES), months, set(p.homes))
    assert {r["period"]: r["active_members"] for r in table(got, "active")} == want["active"]
    t = got["totals"]
    assert (t["active_members"], t["buyers"], t["repeat_buyers"]) == (
        want["active_members"], want["buyers"], want["repeat_buyers"])
    assert t["repurchase_rate"] == round(want["repeat_buyers"] / want["buyers"], 4)
    assert t["top_share"] == round(want["top"] / want["spend"], 4)
    # Refunds netted: some buyers' only purchases were refunded in full.
    assert want["buyers"] < want["active_members"]

    mine = await run(db, "s1.mgr", lambda tx, s: members.activity(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE))
    want = want_activity(p, {"S001"}, months, sees(p, {"S001"}))
    assert {r["period"]: r["active_members"] for r in table(mine, "active")} == want["active"]
    assert (mine["totals"]["buyers"], mine["totals"]["repeat_buyers"]) == (
        want["buyers"], want["repeat_buyers"])
    assert mine["totals"]["top_share"] == round(want["top"] / want["spend"], 4)

    gold = ReportQuery(Q.start, Q.end, tier="gold")
    got = await run(db, "mkt", lambda tx, s: members.activity(
        tx, s, gold, now_ms=NOW, chain_zone=ZONE, grain="week"))
    assert len(table(got, "active")) == 27  # 2025-W53 (1 January) to 2026-W27
    want = want_activity(p, set(HOMES), months, set(p.tiers))
    assert got["totals"]["active_members"] == want["active_members"]


async def check_funnel(db: HubDatabase, p: Plan) -> None:
    got = await run(db, "boss", lambda tx, s: members.funnel(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE))
    days: dict[str, list[date]] = {}
    for b in p.buys:
        days.setdefault(p.member(b.member), []).append(local(b.store, b.at_ms))
    want: dict[tuple[str, str], list[int]] = {}
    for m, home in p.homes.items():
        reg = local(home, p.registered[m])
        if not Q.start <= reg <= Q.end:
            continue
        mine = sorted(days.get(m, []))
        first = any(d <= reg + timedelta(days=7) for d in mine)
        repeat = first and sum(1 for d in mine if d <= reg + timedelta(days=90)) >= 2
        row = want.setdefault((reg.strftime("%Y-%m"), home), [0, 0, 0])
        row[0] += 1
        row[1] += first
        row[2] += repeat
    rows = {(r["cohort"], r["store_id"]): [r["registered"], r["first_purchase_7d"],
                                           r["repeat_90d"]] for r in table(got, "funnel")}
    assert rows == want
    assert sum(v[1] for v in want.values()) > 0 and sum(v[2] for v in want.values()) > 0
    assert got["totals"]["registered"] == sum(v[0] for v in want.values())
    cohorts = {r["cohort"]: r["registered"] for r in table(got, "cohorts")}
    assert sum(cohorts.values()) == got["totals"]["registered"]
    # The two earliest purchase days the projection kept (merges folded) are what schema 26
    # fills from the members' days on a hub that had none.
    def kept_days(tx: Tx) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in tx.all("SELECT member_id, purchase_day_1, purchase_day_2"
                                         " FROM member_activity ORDER BY member_id")]

    projected = await db.read(kept_days)
    assert {m for m, *_days in projected} >= set(days)  # every buyer has a row
    assert projected == [
        (m, *([(d - date(1970, 1, 1)).days for d in sorted(days.get(m, []))[:2]]
              + [None, None])[:2])
        for m, *_days in projected]
    assert any(d2 is not None for _m, _d1, d2 in projected)

    def filled(tx: Tx) -> list[tuple[Any, ...]]:
        tx.execute("UPDATE member_activity SET purchase_day_1 = NULL, purchase_day_2 = NULL")
        tx.execute(PURCHASE_DAYS_FROM_MEMBER_DAYS[tx.dialect])
        return kept_days(tx)

    assert await db.transaction(filled) == projected
    # Berlin's calendar: m06 registered at 01:30 on the night its clocks went forward.
    assert ("2026-03", "S003") in rows

    # A store manager: the cohorts registered at S001, their purchases wherever they were.
    theirs = await run(db, "s1.mgr", lambda tx, s: members.funnel(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE))
    assert {(r["cohort"], r["store_id"]): [r["registered"], r["first_purchase_7d"],
                                           r["repeat_90d"]] for r in table(theirs, "funnel")} \
        == {k: v for k, v in want.items() if k[1] == "S001"}


async def check_loyalty(db: HubDatabase, p: Plan) -> None:
    def want(stores: set[str], who: set[str]) -> list[tuple[str, int, int]]:
        sums: dict[str, list[int]] = {}
        for m, s, at, principal in p.topups:
            m = p.member(m)
            if s in stores and m in who and Q.start <= local(s, at) <= Q.end:
                row = sums.setdefault(m, [0, 0])
                row[0] += 1
                row[1] += principal
        return sorted(((f"C-{m}", n, v) for m, (n, v) in sums.items()),
                      key=lambda r: (-r[2], -r[1], r[0]))

    got = await run(db, "boss", lambda tx, s: members.top_up_loyalty(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE, limit=5))
    rows = table(got, "members")
    expected = want({"S001", "S002", "ONLINE"}, set(p.homes))
    assert [(r["member_code"], r["topups"], r["topup_principal"]) for r in rows] == expected[:5]
    assert rows[0]["member_code"] == "C-m01"  # the alias's 100 000 are m01's
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["name"] == p.names["m01"] and got["masked"] is False

    masked = await run(db, "mkt", lambda tx, s: members.top_up_loyalty(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE, limit=5))
    assert [r["name"] for r in table(masked, "members")] == [
        mask_name(p.names[r["member_code"][2:]]) for r in rows]
    assert table(masked, "members")[0]["name"] != p.names["m01"]

    mine = await run(db, "s1.mgr", lambda tx, s: members.top_up_loyalty(
        tx, s, Q, now_ms=NOW, chain_zone=ZONE))
    assert [(r["member_code"], r["topups"], r["topup_principal"])
            for r in table(mine, "members")] == want({"S001"}, sees(p, {"S001"}))
    assert all("*" in r["name"] for r in table(mine, "members"))


async def check_refusals(db: HubDatabase) -> None:
    async def refused(username: str, fn: Callable[[Tx, Scope], Any]) -> ServiceError:
        with pytest.raises(ServiceError) as caught:
            await run(db, username, fn)
        return caught.value

    common: dict[str, Any] = {"now_ms": NOW, "chain_zone": ZONE}
    err = await refused("boss", lambda tx, s: members.structure(
        tx, s, ReportQuery(Q.start, Q.end, category="x"), **common))
    assert (err.code, err.status) == ("filter_not_supported", 422)
    err = await refused("boss", lambda tx, s: members.activity(
        tx, s, Q, grain="year", **common))
    assert err.code == "unknown_grain"
    err = await refused("boss", lambda tx, s: members.top_up_loyalty(
        tx, s, Q, limit=0, **common))
    assert (err.code, err.status) == ("invalid_limit", 422)
    err = await refused("s1.mgr", lambda tx, s: members.funnel(
        tx, s, ReportQuery(Q.start, Q.end, store_id="S002"), **common))
    assert (err.code, err.status) == ("filter_out_of_scope", 403)
    err = await refused("west.mgr", lambda tx, s: members.structure(
        tx, s, ReportQuery(Q.start, Q.end, region="Nowhere"), **common))
    assert (err.code, err.status) == ("unknown_region", 404)
    err = await refused("boss", lambda tx, s: members.activity(
        tx, s, ReportQuery(Q.start, Q.end, segment_id="nope"), **common))
    assert (err.code, err.status) == ("unknown_segment", 404)
    with pytest.raises(ServiceError) as caught:
        ReportQuery(Q.end, Q.start)
    assert caught.value.code == "period_reversed"
