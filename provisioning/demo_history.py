"""A chain's history written into a hub's log, for the HQ console to show: stores in two
regions, members registered over more than a year at their home stores, their purchases (with
cashiers and shopping guides), walk-in sales, refunds, stored-value top-ups spent at other
stores, points, campaign coupons issued and redeemed; then the projections caught up, an RFM
run, a segment and the HQ users of each role.

Every event goes through the hub's own merge (``apply_batch``) as a store's batch would, so
what the console shows is what the hub would hold had the stores sent it. Deterministic for a
seed: the browser tests check figures against it.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hub.auth import passwords, users
from hub.automation import journeys
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.ledger.apply import apply_batch
from hub.members import rfm, segments
from hub.projections.catalog import projections
from hub.stores import registry
from protocol.codec import encode
from protocol.events import (
    CouponIssued,
    CouponRedeemed,
    Event,
    EventBatch,
    EventBody,
    MemberRegistered,
    PointsEarned,
    RefundCompleted,
    RefundLine,
    SaleDiscount,
    SaleFinalized,
    SaleLine,
    StoredValueSpent,
    StoredValueToppedUp,
    Tender,
)
from protocol.hlc import pack
from protocol.sync import DeviceHealth, StoreStatus

ZONE = "Asia/Shanghai"
STORES = (("S001", "南京东路店", "east"), ("S002", "徐家汇店", "east"),
          ("S003", "西湖店", "east"), ("S004", "天河店", "south"),
          ("S005", "福田店", "south"), ("S006", "海珠店", "south"))
PRODUCTS = (("6901234567892", "鲜牛奶", "dairy", 1_250), ("6900000000012", "大米 5kg", "grocery",
            4_990), ("6905555000017", "苹果", "fresh", 800), ("6907777000013", "薯片",
            "snacks", 650), ("6908888000019", "洗衣液", "household", 3_290),
            ("6902222000015", "酸奶", "dairy", 590), ("6903333000011", "橄榄油", "grocery",
            8_900), ("6904444000017", "香蕉", "fresh", 450))
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚"
PASSWORD = "demo-console-1"  # every demo user's; a real chain sets its own (users add)
Store = tuple[str, str, str]  # (store id, name, region)


def demo_users(stores: tuple[Store, ...]) -> list[tuple[str, str, list[str], list[str],
                                                         str | None]]:
    """One user of each role: (username, role, regions, stores, guide). The store managers
    are of the first store and of the first store of the second region."""
    first, other = stores[0], next(s for s in stores if s[2] != stores[0][2])
    return [("admin", "hq_admin", [], [], None),
            (first[2], "region_manager", [first[2]], [], None),
            (first[0].lower(), "store_manager", [], [first[0]], None),
            (other[0].lower(), "store_manager", [], [other[0]], None),
            ("mkt", "marketing", [], [], None), ("audit", "auditor", [], [], None),
            ("guide1", "guide", [], [], "G01")]


# A birthday gift: a coupon a week before, said on the store's own receipt and display.
BIRTHDAY_JOURNEY = {
    "name": "生日礼", "trigger": {"kind": "birthday", "days_before": 7}, "holdout_percent": 20,
    "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 2000,
                 "min_spend": 10000, "valid_days": 30},
                {"kind": "message", "channel": "store", "purpose": "marketing",
                 "template": "birthday", "text": "{name}，生日快乐！送您20元券"}]}


def _store_channel(channel: str, purpose: str, text: str) -> None:
    """The demo hub's one channel is the store's own receipt and display."""
    if channel != "store":
        raise ValueError(f"channel {channel!r} is not configured (configured: store)")


@dataclass
class Chain:
    """What was written: enough for a test to compute a figure on its own."""

    today: date
    members: dict[str, str] = field(default_factory=dict)  # member id -> home store
    sales: list[tuple[str, date, int, str | None]] = field(default_factory=list)
    # (store, store-local date, total, member id)
    refunds: list[tuple[str, date, int]] = field(default_factory=list)
    events: int = 0


class _Streams:
    """Each store's events, numbered in order, applied in batches through the hub's merge."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.pending: dict[str, list[tuple[int, EventBody]]] = {}
        # A store cut off for some days: (store, first day, last day, when it merged them).
        self.offline: tuple[str, date, date, int] | None = None

    def add(self, store: str, at_ms: int, body: EventBody) -> None:
        self.pending.setdefault(store, []).append((at_ms, body))

    async def flush(self) -> int:
        """Each store's events merged as a connected store sends them: a store-day's at the
        end of that day (so no day reads as recomputed after it closed, but those the story
        makes late)."""
        written = 0
        for store, items in self.pending.items():
            items.sort(key=lambda item: item[0])
            start = 0
            while start < len(items):
                day = _day(items[start][0])
                end = start
                while end < len(items) and end - start < 500 and _day(items[end][0]) == day:
                    end += 1
                chunk = items[start:end]
                events = [Event(event_id=f"{store}-{start + i + 1}", store_id=store, epoch=1,
                                seq=start + i + 1, hlc=pack(at, (start + i) % 1000), body=body)
                          for i, (at, body) in enumerate(chunk)]
                batch = EventBatch(store_id=store, epoch=1, events=events)
                merged = chunk[-1][0]
                if self.offline and self.offline[0] == store and \
                        self.offline[1] <= day <= self.offline[2]:
                    merged = self.offline[3]
                await self.db.transaction(functools.partial(_apply, batch=batch, at_ms=merged))
                written += len(events)
                start = end
        return written


def _apply(tx: Tx, *, batch: EventBatch, at_ms: int) -> None:
    apply_batch(tx, batch, at_ms, zone=ZONE, chain_zone=ZONE)


def _add_user(tx: Tx, user: tuple[str, str, list[str], list[str], str | None], hashed: str,
              at_ms: int) -> None:
    username, role, regions, stores, guide_id = user
    users.add(tx, username=username, role=role, password_hash=hashed, now_ms=at_ms,
              regions=regions, stores=stores, guide_id=guide_id)


def _day(at_ms: int) -> date:
    return datetime.fromtimestamp(at_ms / 1000, ZoneInfo(ZONE)).date()


def _at(day: date, hour: int, minute: int) -> int:
    return int(datetime.combine(day, time(hour, minute), ZoneInfo(ZONE)).timestamp() * 1000)


async def seed(db: HubDatabase, *, members: int = 400, days: int = 420, seed: int = 7,
               today: date | None = None, stores: tuple[Store, ...] = STORES) -> Chain:
    """Write the chain's history into ``db`` (migrated; ``stores`` new to it) and bring its
    read models up."""
    rnd = random.Random(seed)
    today = today or datetime.now(ZoneInfo(ZONE)).date()
    chain = Chain(today)
    await db.transaction(lambda tx: registry.upsert(tx, [
        registry.StoreRecord(store_id=s, name=n, region=r) for s, n, r in stores]))
    streams = _Streams(db)
    # The third store lost its line for two days last week: those days merged when it came
    # back, so the reports over them say they were recomputed.
    streams.offline = (stores[2][0], today - timedelta(days=9), today - timedelta(days=8),
                       _at(today - timedelta(days=7), 10, 0))
    first = today - timedelta(days=days)
    sale_no = 0
    for i in range(members):
        member, store = f"M{i:05d}", stores[i % len(stores)][0]
        chain.members[member] = store
        joined = first + timedelta(days=rnd.randrange(days))
        guide = f"G{1 + i % 4:02d}"
        streams.add(store, _at(joined, 10, 0), MemberRegistered(
            v=2, member_id=member, member_code=f"C{i:05d}", phone=f"+86139{i:08d}",
            name=rnd.choice(SURNAMES) + rnd.choice(GIVEN) + rnd.choice(GIVEN),
            birthday=date(1970 + rnd.randrange(35), 1 + rnd.randrange(12), 1 + rnd.randrange(28)),
            guide_id=guide))
        if rnd.random() < 0.25:  # a top-up at home, spent later at another store
            topup_day = joined + timedelta(days=rnd.randrange(3))
            if topup_day <= today:
                streams.add(store, _at(topup_day, 11, 0), StoredValueToppedUp(
                    member_id=member, topup_id=f"T{i:05d}", currency="CNY", principal=50_000,
                    bonus=5_000))
                spend_day = topup_day + timedelta(days=1 + rnd.randrange(60))
                other = stores[(i + 1) % len(stores)][0]
                if spend_day <= today:
                    streams.add(other, _at(spend_day, 15, 0), StoredValueSpent(
                        member_id=member, sale_id=f"SV{i:05d}", currency="CNY",
                        principal=20_000, bonus=2_000))
        visits = rnd.choice((0, 1, 1, 2, 3, 5, 8, 12))
        day = joined
        for v in range(visits):
            day = day + timedelta(days=1 + int(rnd.expovariate(1 / 30)))
            if day > today:
                break
            where = store if rnd.random() < 0.8 else rnd.choice(stores)[0]
            sale_no += 1
            _sale(streams, chain, rnd, f"X{sale_no:06d}", where, day, member, guide)
            if v == 0 and rnd.random() < 0.3:  # a welcome coupon, redeemed on a later visit
                streams.add(stores[0][0], _at(day, 9, 0), CouponIssued(
                    coupon_code=f"WEL{i:05d}", member_id=member, campaign_id="welcome",
                    kind="amount_off", value=1_000, min_spend=5_000))
                if rnd.random() < 0.5:
                    streams.add(where, _at(day + timedelta(days=1), 17, 0), CouponRedeemed(
                        coupon_code=f"WEL{i:05d}", sale_id=f"X{sale_no:06d}", member_id=member,
                        amount=1_000))
    for n in range(days * 3):  # walk-ins: a few a day across the chain
        sale_no += 1
        day = first + timedelta(days=n // 3)
        _sale(streams, chain, rnd, f"X{sale_no:06d}", rnd.choice(stores)[0], day, None,
              None)
    chain.events = await streams.flush()
    await db.transaction(functools.partial(_report_statuses, stores=stores, at_ms=now_ms()))
    runner = ProjectionRunner(db, projections(ZONE))
    await runner.catch_up()
    stamp = now_ms()
    hashed = passwords.hash_password(PASSWORD)
    for user in demo_users(stores):
        await db.transaction(functools.partial(_add_user, user=user, hashed=hashed,
                                               at_ms=stamp))
    await db.transaction(lambda tx: rfm.run(tx, rfm.RfmParams(as_of=today - timedelta(days=1)),
                                            stamp))
    await db.transaction(lambda tx: journeys.create(
        tx, BIRTHDAY_JOURNEY, by="mkt", now_ms=stamp, today=today, zone=ZONE,
        check_message=_store_channel))
    await db.transaction(lambda tx: segments.create(
        tx, name="沉睡金卡", definition={"all": [{"field": "days_since_purchase", "gte": 60}]},
        for_tills=False, tag=None, by="hq", now_ms=stamp, today=today, zone=ZONE))
    return chain


def _report_statuses(tx: Tx, *, stores: tuple[Store, ...], at_ms: int) -> None:
    """What each store last said about itself, as its gateway would: most heard from a minute
    ago with every device connected; the third store's printer low on paper, the fifth's
    scanner unplugged, and the last store cut off for two days with sales still in its outbox
    (so the fleet page and every report's completeness have something true to show)."""
    for n, (store, _name, _region) in enumerate(stores):
        seq = int(tx.scalar("SELECT coalesce(max(acked_seq), 0) FROM store_streams"
                            " WHERE store_id = ?", (store,), default=0))
        offline = n == len(stores) - 1
        waiting = 340 if offline else 0
        health = {2: ("printer", "paper_low", "paper near end"),
                  4: ("scanner", "disconnected", "no input device")}.get(n)
        devices = [DeviceHealth(device_id=f"lane1-{kind}", kind=kind,
                                health=health[1] if health and health[0] == kind else "connected",
                                detail=health[2] if health and health[0] == kind else "")
                   for kind in ("scanner", "card_reader", "printer", "display")]
        seen = at_ms - (2 * 86_400_000 if offline else 60_000)
        status = StoreStatus(store_id=store, epoch=1, last_seq=seq + waiting, acked_seq=seq,
                             outbox_depth=waiting, directory_checkpoint=0,
                             software="membergate-edge", devices=devices, at_ms=seen,
                             refused={"stale_version": 1} if n == 1 else {})
        registry.record_status(tx, store, 1, encode(status), seen)


def _sale(streams: _Streams, chain: Chain, rnd: random.Random, sale_id: str, store: str,
          day: date, member: str | None, guide: str | None) -> None:
    at = _at(day, 9 + rnd.randrange(12), rnd.randrange(60))
    picked = rnd.sample(PRODUCTS, 1 + rnd.randrange(3))
    lines = []
    for n, (sku, name, category, price) in enumerate(picked, 1):
        qty = 1 + rnd.randrange(3)
        lines.append(SaleLine(line_no=n, sku=sku, name=name, category=category, qty=qty,
                              unit_price=price, gross=qty * price, discount=0,
                              net=qty * price, points=qty * price // 100 if member else 0))
    gross = sum(ln.gross for ln in lines)
    off = 500 if gross >= 10_000 and rnd.random() < 0.3 else 0
    if off:  # a store promotion: the first line carries the discount
        first = lines[0]
        lines[0] = first.model_copy(update={"discount": min(off, first.gross),
                                            "net": first.gross - min(off, first.gross)})
        off = min(off, first.gross)
    total = gross - off
    points = sum(ln.points for ln in lines)
    streams.add(store, at, SaleFinalized(
        v=2, sale_id=sale_id, terminal_id="POS-1", member_id=member,
        cashier_id=f"C{store[-1]}{1 + rnd.randrange(3)}", guide_id=guide, currency="CNY",
        lines=lines, discounts=[SaleDiscount(kind="promo", label="满100减5", amount=off)]
        if off else [], tenders=[Tender(kind="cash", amount=total)], subtotal=gross,
        discount_total=off, total=total, points_earned=points))
    if member and points:
        streams.add(store, at, PointsEarned(member_id=member, lot_id=f"L{sale_id}",
                                            points=points, sale_id=sale_id,
                                            expires_on=day + timedelta(days=365)))
    chain.sales.append((store, day, total, member))
    if rnd.random() < 0.04:  # a refund of the first line a few days later
        line = lines[0]
        back = day + timedelta(days=1 + rnd.randrange(5))
        if back <= chain.today:
            streams.add(store, _at(back, 18, 0), RefundCompleted(
                refund_id=f"R{sale_id}", sale_id=sale_id, terminal_id="POS-1",
                member_id=member, currency="CNY",
                lines=[RefundLine(line_no=1, qty=line.qty, amount=line.net,
                                  points_reversed=0)],
                amount=line.net, tenders=[Tender(kind="cash", amount=line.net)],
                points_reversed=0, points_shortfall=0, points_returned=0))
            chain.refunds.append((store, back, line.net))
