"""Journeys on both backends: members enter once per occasion (a pass repeated, a cursor read
again, a restart: nobody twice), each step once with its effect (coupon and points events of
the HQ stream, messages in the outbox, HQ tags), waits, holdouts drawn the same way every time,
and bad definitions refused with the part named and nothing saved."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from hub.automation import holdout, journeys
from hub.automation.engine import JourneyEngine
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.ledger import hq_events
from hub.ledger.apply import apply_batch
from hub.ledger.hq_events import Merge
from hub.members import tags, tiers
from hub.members.tiers import TierRules
from hub.projections.catalog import projections
from protocol.errors import ServiceError
from protocol.events import (
    Event,
    EventBatch,
    EventBody,
    MemberRegistered,
    PointsEarned,
    SaleFinalized,
    SaleLine,
    Tender,
)
from protocol.hlc import HybridClock, pack

ZONE = "Asia/Shanghai"
# 2026-12-05 10:00 in Shanghai.
NOW = int(datetime(2026, 12, 5, 2, 0, tzinfo=UTC).timestamp() * 1000)
TODAY = date(2026, 12, 5)
MEMBERS = 40


def _ok(channel: str, purpose: str, text: str) -> None:
    if channel not in ("webhook", "sms", "store"):
        raise ValueError(f"channel {channel!r} is not configured")


class Fleet:
    """One store's events applied to the hub straight, in order."""

    def __init__(self, db: HubDatabase) -> None:
        self.db, self.seq = db, 0

    async def send(self, bodies: list[EventBody], at_ms: int = NOW - 3_600_000,
                   rules: TierRules | None = None) -> None:
        events = []
        for body in bodies:
            self.seq += 1
            events.append(Event(event_id=f"ev{self.seq}", store_id="S001", epoch=1,
                                seq=self.seq, hlc=pack(at_ms, self.seq), body=body))
        batch = EventBatch(store_id="S001", epoch=1, events=events)
        await self.db.transaction(lambda tx: apply_batch(tx, batch, NOW, rules, zone=ZONE,
                                                         chain_zone=ZONE))


def birthday(i: int) -> date:
    """Member i's birthday: the first half within the next 7 days, the rest later."""
    return date(1990, 12, 5) + timedelta(days=i % 8 if i < MEMBERS // 2 else 30 + i)


async def seed(db: HubDatabase) -> Fleet:
    fleet = Fleet(db)
    await fleet.send([MemberRegistered(member_id=f"m{i:03d}", member_code=f"C{i:03d}",
                                       phone=f"+86139{i:08d}", name=f"会员{i}",
                                       birthday=birthday(i)) for i in range(MEMBERS)])
    return fleet


def engine(db: HubDatabase, now: list[int], control: int = 0) -> JourneyEngine:
    clock = HybridClock()
    return JourneyEngine(db, ZONE, dict, lambda at: Merge(clock, at, zone=ZONE),
                         control_percent=control, now_ms=lambda: now[0])


BIRTHDAY: dict[str, Any] = {
    "name": "生日礼", "trigger": {"kind": "birthday", "days_before": 7},
    "holdout_percent": 10,
    "actions": [
        {"kind": "coupon", "coupon_kind": "amount_off", "value": 2000, "min_spend": 5000,
         "valid_days": 30},
        {"kind": "message", "channel": "webhook", "template": "birthday",
         "text": "{name}，生日快乐！{coupon_value}元券 {coupon_code}，{coupon_expires}前有效"},
        {"kind": "wait", "hours": 24},
        {"kind": "tag", "add": ["生日关怀"]}]}


async def create(db: HubDatabase, definition: dict[str, Any]) -> str:
    made = await db.transaction(lambda tx: journeys.create(
        tx, definition, by="mkt", now_ms=NOW, today=TODAY, zone=ZONE, check_message=_ok))
    return str(made["journey_id"])


async def _tag(db: HubDatabase) -> None:
    await db.transaction(lambda tx: tags.define(tx, "生日关怀", "关怀", "", "mkt", NOW))


def _rows(tx: Tx, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in tx.all(sql, params)]


async def test_birthday_journey_acts_once_per_member(hub_db: HubDatabase) -> None:
    await seed(hub_db)
    await _tag(hub_db)
    journey_id = await create(hub_db, BIRTHDAY)
    now = [NOW]
    e = engine(hub_db, now)
    first = await e.run()
    due = {f"m{i:03d}" for i in range(MEMBERS // 2)}
    held = {m for m in due if holdout.held_out(journey_id, m, 10)}
    assert first["entered"] == len(due)
    entries = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, occasion, held_out, state, step FROM journey_entries"))
    assert {r[0] for r in entries} == due
    # The occasion is this year's birthday (m000: today; m007: in 7 days).
    occasions = {r[0]: r[1] for r in entries}
    assert occasions["m000"] == "birthday:2026-12-05"
    assert occasions["m007"] == "birthday:2026-12-12"
    assert {r[0] for r in entries if r[2]} == held
    assert all(r[3] == "active" and r[4] == 3 for r in entries if not r[2])
    # One coupon each (an HQ-stream event, applied), its code in the message.
    coupons = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, coupon_code, value, min_spend, expires_on, store_id FROM coupons"
            " WHERE campaign_id = ?", (journey_id,)))
    assert sorted(c[0] for c in coupons) == sorted(due - held)
    assert {(c[2], c[3], c[4], c[5]) for c in coupons} == {(2000, 5000, "2027-01-04", "HQ")}
    messages = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, text, key, state, channel FROM outbox"))
    assert sorted(m[0] for m in messages) == sorted(due - held)
    code_of = {c[0]: c[1] for c in coupons}
    for member, text, key, state, channel in messages:
        code = code_of[member]
        assert text == f"会员{int(member[1:])}，生日快乐！20元券 {code}，2027-01-04前有效"
        assert key == f"{journey_id}:{member}:{occasions[member]}:1"
        assert (state, channel) == ("pending", "webhook")
    # Again, and after the cursor of the day is forgotten (a crash before it was saved):
    # nobody enters twice, nothing is issued twice.
    assert (await e.run())["entered"] == 0
    await hub_db.transaction(lambda tx: tx.execute("UPDATE journeys SET scanned = ''"))
    again = await engine(hub_db, now).run()
    assert again["entered"] == 0 and again["effects"] == 0
    # A day later the wait is over: the tag, once.
    now[0] += 24 * 3_600_000 + 1
    await e.run()
    tagged = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, set_by FROM hq_member_tags WHERE tag = '生日关怀'"))
    assert sorted(t[0] for t in tagged) == sorted(due - held)
    assert {t[1] for t in tagged} == {"journey:生日礼"}
    states = await hub_db.read(lambda tx: _rows(
        tx, "SELECT state, count(*) FROM journey_entries GROUP BY state ORDER BY state"))
    assert dict(states) == {"done": len(due - held), **({"held_out": len(held)} if held else {})}
    actions = await hub_db.read(lambda tx: _rows(
        tx, "SELECT kind, count(*) FROM journey_actions GROUP BY kind ORDER BY kind"))
    assert dict(actions) == {k: len(due - held) for k in ("coupon", "message", "tag", "wait")}
    # The member's history lists the entry and every action.
    mine = await hub_db.read(lambda tx: journeys.of_member(tx, "m001"))
    if "m001" not in held:
        assert [a["kind"] for a in mine[0]["actions"]] == ["coupon", "message", "wait", "tag"]


async def test_holdout_is_the_same_draw_every_time() -> None:
    members = [f"m{i}" for i in range(20_000)]
    first = [holdout.held_out("j1", m, 10) for m in members]
    assert first == [holdout.held_out("j1", m, 10) for m in members]
    share = sum(1 for h in first if h) / len(members)
    assert 0.09 < share < 0.11
    other = [holdout.held_out("j2", m, 10) for m in members]
    assert other != first  # journeys draw apart
    control = [holdout.held_out("j1", m, 10, 5) for m in members]
    assert sum(1 for h in control if h == holdout.CONTROL) / len(members) == pytest.approx(
        0.05, abs=0.01)
    assert all(h == holdout.CONTROL for m, h in zip(members, control, strict=True)
               if holdout.held_out("j2", m, 0, 5) == holdout.CONTROL)


async def test_after_purchase_stage_and_points_expiring(hub_db: HubDatabase) -> None:
    fleet = await seed(hub_db)
    after = await create(hub_db, {
        "name": "回购券", "trigger": {"kind": "after_purchase", "hours": 24},
        "actions": [{"kind": "coupon", "coupon_kind": "percent_off", "value": 1000},
                    {"kind": "message", "channel": "sms", "template": "SMS_1",
                     "text": "消费{sale_total}元，谢谢惠顾，{coupon_value}折扣券 {coupon_code}。"
                             "回T退订"}]})
    expiring = await create(hub_db, {
        "name": "积分到期", "trigger": {"kind": "points_expiring", "days": 30},
        "actions": [{"kind": "message", "channel": "sms", "purpose": "transactional",
                     "template": "SMS_2", "text": "{points_expiring}积分将于{expiring_on}到期"}]})
    # Purchases made before the journey existed are not acted on; these are.
    await fleet.send([
        SaleFinalized(sale_id="s1", member_id="m001", terminal_id="T1", currency="CNY",
                      lines=[SaleLine(line_no=1, sku="A", name="a", category="x", qty=1,
                                      unit_price=1000, gross=1000, discount=0, net=1000,
                                      points=0)],
                      tenders=[Tender(kind="cash", amount=1000)], subtotal=1000,
                      discount_total=0, total=1000, points_earned=0),
        PointsEarned(member_id="m002", lot_id="L1", points=300,
                     expires_on=TODAY + timedelta(days=10)),
        PointsEarned(member_id="m002", lot_id="L2", points=200,
                     expires_on=TODAY + timedelta(days=20)),
        PointsEarned(member_id="m003", lot_id="L3", points=100,
                     expires_on=TODAY + timedelta(days=60))])
    await ProjectionRunner(hub_db, projections(ZONE)).catch_up()  # point lots
    now = [NOW]
    e = engine(hub_db, now)
    await e.run()
    entries = await hub_db.read(lambda tx: _rows(
        tx, "SELECT journey_id, member_id, occasion, state, context FROM journey_entries"
            " ORDER BY member_id"))
    assert [(r[0], r[1], r[3]) for r in entries] == [(after, "m001", "active"),
                                                     (expiring, "m002", "done")]
    assert json.loads(entries[1][4]) == {"expiring_on": "2026-12-15", "points_expiring": 500}
    # The coupon waits for 24 h after the sale (an hour ago).
    assert await hub_db.read(lambda tx: tx.scalar(
        "SELECT count(*) FROM coupons WHERE campaign_id = ?", (after,))) == 0
    now[0] += 23 * 3_600_000 + 1
    await e.run()
    texts = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, purpose, text FROM outbox ORDER BY member_id"))
    code = await hub_db.read(lambda tx: tx.scalar(
        "SELECT coupon_code FROM coupons WHERE campaign_id = ?", (after,)))
    assert texts == [("m001", "marketing", f"消费10元，谢谢惠顾，10%折扣券 {code}。回T退订"),
                     ("m002", "transactional", "500积分将于2026-12-15到期")]
    # A lifecycle stage entered after the journey was made.
    stage = await create(hub_db, {"name": "唤醒", "trigger": {"kind": "stage",
                                                            "stage": "sleeping"},
                                  "actions": [{"kind": "points", "points": 50}]})
    await hub_db.transaction(lambda tx: tx.execute(
        "INSERT INTO lifecycle_changes(member_id, day, from_stage, to_stage, seq)"
        " VALUES ('m005', '2026-12-05', 'active', 'sleeping', 1)"))
    await e.run()
    assert await hub_db.read(lambda tx: tx.scalar(
        "SELECT state FROM journey_entries WHERE journey_id = ?", (stage,))) == "done"
    await ProjectionRunner(hub_db, projections(ZONE)).catch_up()
    points = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, earned, store_id FROM point_lots WHERE store_id = 'HQ'"))
    assert points == [("m005", 50, "HQ")]
    balance = await hub_db.read(lambda tx: tx.scalar(
        "SELECT sum(points) FROM shares WHERE member_id = 'm005'"))
    assert balance == 50


async def test_pausing_stops_entries_and_resumes_from_now(hub_db: HubDatabase) -> None:
    fleet = await seed(hub_db)
    j = await create(hub_db, {"name": "注册礼", "trigger": {"kind": "registered"},
                              "actions": [{"kind": "points", "points": 10}]})
    await hub_db.transaction(lambda tx: journeys.set_state(tx, j, "paused", now_ms=NOW))
    await fleet.send([MemberRegistered(member_id="n1", member_code="N1")])
    e = engine(hub_db, [NOW])
    assert (await e.run())["entered"] == 0
    await hub_db.transaction(lambda tx: journeys.set_state(tx, j, "active", now_ms=NOW))
    await fleet.send([MemberRegistered(member_id="n2", member_code="N2")])
    await e.run()
    assert await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id FROM journey_entries")) == [("n2",)]
    # A journey waiting for something that has not happened (a top-up) reads the log once:
    # its cursor moves to the end, not stays where it was made.
    topup = await create(hub_db, {"name": "充值礼", "trigger": {"kind": "topped_up"},
                                  "actions": [{"kind": "points", "points": 5}]})
    await fleet.send([MemberRegistered(member_id="n3", member_code="N3")])
    await e.run()
    await e.run()  # the first pass's points for n3 are an event after what it read
    cursor, end = await hub_db.read(lambda tx: (
        tx.scalar("SELECT cursor FROM journeys WHERE journey_id = ?", (topup,)),
        tx.scalar("SELECT max(pos) FROM events")))
    assert cursor == end


@pytest.mark.parametrize(("change", "error"), [
    ({"trigger": {"kind": "anniversary"}}, "trigger"),
    ({"actions": [{"kind": "message", "channel": "webhook", "text": "hi {nickname}"}]},
     "unknown placeholder 'nickname'"),
    ({"actions": [{"kind": "message", "channel": "webhook", "text": "券 {coupon_code}"}]},
     "{coupon_code} has no value here"),
    ({"actions": [{"kind": "message", "channel": "webhook", "text": "消费 {sale_total}"}]},
     "{sale_total} has no value here"),
    ({"actions": [{"kind": "coupon", "coupon_kind": "percent_off", "value": 20_000}]},
     "at most 10000"),
    ({"actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 5000,
                   "min_spend": 1000}]}, "pay the member to buy"),
    ({"actions": [{"kind": "message", "channel": "email", "text": "hello"}]},
     "channel 'email' is not configured"),
    ({"actions": [{"kind": "wait", "hours": 2}]}, "besides waiting"),
    ({"actions": [{"kind": "tag", "add": ["nope"]}]}, "not in the catalogue"),
    ({"conditions": {"field": "mood", "in": ["x"]}}, "mood"),
    ({"trigger": {"kind": "segment", "segment_id": "missing"}}, "no segment"),
])
async def test_bad_journeys_are_refused_and_nothing_saved(
        hub_db: HubDatabase, change: dict[str, Any], error: str) -> None:
    with pytest.raises(ServiceError) as refused:
        await create(hub_db, {**BIRTHDAY, **change})
    assert error in refused.value.message
    assert refused.value.status in (404, 422)
    assert await hub_db.read(lambda tx: tx.scalar("SELECT count(*) FROM journeys")) == 0


async def test_versions_and_archive(hub_db: HubDatabase) -> None:
    await seed(hub_db)
    await _tag(hub_db)
    j = await create(hub_db, BIRTHDAY)
    changed = {**BIRTHDAY, "holdout_percent": 20}
    made = await hub_db.transaction(lambda tx: journeys.update(
        tx, j, changed, by="mkt2", now_ms=NOW + 1, today=TODAY, zone=ZONE,
        check_message=_ok))
    assert made["version"] == 2
    with pytest.raises(ServiceError, match="trigger kind stays"):
        await hub_db.transaction(lambda tx: journeys.update(
            tx, j, {**BIRTHDAY, "trigger": {"kind": "registered"}}, by="x", now_ms=NOW,
            today=TODAY, zone=ZONE, check_message=_ok))
    listed = await hub_db.read(lambda tx: journeys.versions(tx, j))
    assert [(v["version"], v["definition"]["holdout_percent"], v["created_by"])
            for v in listed] == [(1, 10, "mkt"), (2, 20, "mkt2")]
    await engine(hub_db, [NOW]).run()
    await hub_db.transaction(lambda tx: journeys.set_state(tx, j, "archived", now_ms=NOW))
    assert await hub_db.read(lambda tx: tx.scalar(
        "SELECT count(*) FROM journey_entries WHERE state = 'active'")) == 0
    assert await hub_db.read(lambda tx: tx.scalar(
        "SELECT count(*) FROM journey_entries WHERE state = 'exited'")) > 0


async def test_erasure_scrubs_what_journeys_kept_of_the_member(hub_db: HubDatabase) -> None:
    """A message names the member and a birthday journey's occasion data holds the birthday:
    the member's erasure empties both, and a message left at the tills goes."""
    await seed(hub_db)
    await _tag(hub_db)
    await create(hub_db, {**BIRTHDAY, "holdout_percent": 0})
    await engine(hub_db, [NOW]).run()
    await hub_db.transaction(lambda tx: tx.execute(
        "INSERT INTO till_messages(member_id, key, text, coupon_code, created_ms)"
        " VALUES ('m001', 'k', '会员1，生日快乐', NULL, 1)"))
    clock = HybridClock()
    await hub_db.transaction(lambda tx: hq_events.erase_member(
        tx, "m001", "dpo", "PIPL request", Merge(clock, NOW, zone=ZONE)))
    kept = await hub_db.read(lambda tx: _rows(
        tx, "SELECT o.text, o.params, e.context FROM outbox o JOIN journey_entries e"
            " ON e.member_id = o.member_id WHERE o.member_id = 'm001'"))
    assert kept == [("", "{}", "{}")]
    assert await hub_db.read(lambda tx: tx.scalar(
        "SELECT count(*) FROM till_messages WHERE member_id = 'm001'")) == 0
    others = await hub_db.read(lambda tx: tx.scalar(
        "SELECT text FROM outbox WHERE member_id = 'm002'"))
    assert others.startswith("会员2，生日快乐")


def _sale(sale_id: str, member: str, total: int) -> SaleFinalized:
    return SaleFinalized(sale_id=sale_id, member_id=member, terminal_id="T1", currency="CNY",
                         lines=[SaleLine(line_no=1, sku="A", name="a", category="x", qty=1,
                                         unit_price=total, gross=total, discount=0, net=total,
                                         points=0)],
                         tenders=[Tender(kind="cash", amount=total)], subtotal=total,
                         discount_total=0, total=total, points_earned=0)


async def test_a_tier_going_up_or_down_is_a_trigger(hub_db: HubDatabase) -> None:
    """Up into gold by a batch's spend (the merge's path), down by the daily recompute when
    old months leave the window; each change once, by direction and tier."""
    fleet = await seed(hub_db)
    rules = TierRules()
    up = await create(hub_db, {"name": "升金卡", "trigger": {"kind": "tier", "tier": "gold"},
                               "actions": [{"kind": "points", "points": 100},
                                           {"kind": "message", "channel": "webhook",
                                            "purpose": "transactional",
                                            "text": "{from_tier} → {tier}"}]})
    down = await create(hub_db, {"name": "降级关怀", "trigger": {"kind": "tier",
                                                               "direction": "down"},
                                 "actions": [{"kind": "points", "points": 1}]})
    await fleet.send([_sale("s1", "m001", 600_000), _sale("s2", "m002", 150_000)], rules=rules)
    e = engine(hub_db, [NOW])
    await e.run()
    entered = await hub_db.read(lambda tx: _rows(
        tx, "SELECT journey_id, member_id, state FROM journey_entries ORDER BY member_id"))
    assert entered == [(up, "m001", "done")]  # m002 went up to silver: not this journey's
    texts = await hub_db.read(lambda tx: _rows(tx, "SELECT member_id, text FROM outbox"))
    assert texts == [("m001", "standard → gold")]
    # A year on, the spend leaves the window: the daily recompute moves both down.
    later = NOW + 400 * 86_400_000
    moved = await hub_db.transaction(lambda tx: tiers.recompute_all(tx, rules, later, ZONE))
    assert moved == 2
    await engine(hub_db, [later]).run()
    downs = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, occasion FROM journey_entries WHERE journey_id = ?"
            " ORDER BY member_id", (down,)))
    assert [d[0] for d in downs] == ["m001", "m002"]
    history = await hub_db.read(lambda tx: _rows(
        tx, "SELECT member_id, from_tier, to_tier, direction FROM tier_changes ORDER BY seq"))
    assert history == [("m001", "standard", "gold", "up"), ("m002", "standard", "silver", "up"),
                       ("m001", "gold", "standard", "down"),
                       ("m002", "silver", "standard", "down")]
