"""The journey engine: members enter journeys once per occasion, and each step of an entry is
taken once, in the transaction of its effect (HQ.md, principle 7).

A pass (``JourneyEngine.run``) does two things:

**Enter.** Each active journey finds its members: an event-driven one reads its source after
its cursor (purchases, registrations and top-ups in the log; lifecycle changes; entries into a
segment) and writes the entries and the new cursor in one transaction; a date-driven one
(birthday, points expiring) looks at everyone once a day — on a reader, then writes the
entries — and a scheduled one once, when its time has come. An entry is the row
(journey, member, occasion): written with ``ON CONFLICT DO NOTHING``, so a look repeated after
a crash, a cursor read again, or a replay of the log enters nobody twice. The journey's
conditions are checked as the member enters; the holdout is drawn then (``holdout``).

**Advance.** Entries whose next step is due are taken a page at a time: every step up to the
next wait is done and recorded (``journey_actions``), the coupons and points of the whole page
are one append to the HQ stream (``hub.ledger.hq_events``: events, balances and the
directory change commit with it), messages go to the outbox (``hub.notify.outbox``), tags to
HQ's tags, and the entry's step moves on — all one transaction. A hub killed at any moment
either did a step with everything it does, or none of it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.automation import holdout
from hub.automation.definition import (
    FOLLOWED,
    Birthday,
    GrantPoints,
    IssueCoupon,
    JourneyDefinition,
    PointsExpiring,
    Scheduled,
    SendMessage,
    SetTags,
    Wait,
)
from hub.automation.journeys import head
from hub.core.db import HubDatabase, Tx, in_chunks, marks
from hub.ledger import hq_events
from hub.ledger.hq_events import Merge
from hub.members import segments, tags
from hub.members.identity import canonical_all
from hub.notify import outbox
from hub.stores.registry import HQ
from protocol.codec import decode
from protocol.events import (
    CouponIssued,
    Event,
    EventBody,
    PointsEarned,
    SaleFinalized,
    StoredValueToppedUp,
)
from protocol.hlc import wall_ms
from protocol.ids import coupon_code, coupon_qr, uuid7
from protocol.money import format_amount

log = logging.getLogger("membergate.hub.automation")

ENTER_PAGE = 2_000  # source rows or entries written per writer transaction
ADVANCE_PAGE = 500  # entries advanced per writer transaction
HOUR_MS = 3_600_000
CURRENCY = "CNY"  # the chain's, as messages name amounts (the hub keeps no other)
# The log's events each followed trigger waits for.
EVENT_TYPES = {"after_purchase": "sale.finalized", "registered": "member.registered",
               "topped_up": "sv.topped_up"}


@dataclass
class Entry:
    member_id: str
    occasion: str
    due_ms: int
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Journey:
    journey_id: str
    name: str
    version: int
    state: str
    cursor: int
    scanned: str
    definition: JourneyDefinition


def _journey(row: Any) -> Journey:
    return Journey(str(row[0]), str(row[1]), int(row[2]), str(row[3]), int(row[4]),
                   str(row[5]), JourneyDefinition.model_validate(json.loads(row[6])))


class JourneyEngine:
    """``run()`` one pass; one at a time (a lock)."""

    def __init__(self, db: HubDatabase, chain_zone: str, zones: Callable[[], dict[str, str]],
                 merge: Callable[[int], Merge], *, control_percent: int = 0,
                 now_ms: Callable[[], int] | None = None) -> None:
        self.db = db
        self.chain_zone = chain_zone
        self.zones = zones  # store -> its own time zone (stores without one: the chain's)
        self.merge = merge
        self.control_percent = control_percent
        self._now = now_ms
        self._lock = asyncio.Lock()
        self._definitions: dict[tuple[str, int], JourneyDefinition] = {}

    def now_ms(self) -> int:
        if self._now is not None:
            return self._now()
        return int(datetime.now().timestamp() * 1000)

    async def run(self) -> dict[str, int]:
        async with self._lock:
            entered = await self.enter()
            advanced, effects = await self.advance()
            return {"entered": entered, "advanced": advanced, "effects": effects}

    # -- entering -------------------------------------------------------------------------------

    async def enter(self) -> int:
        journeys = await self.db.read(lambda tx: [_journey(r) for r in tx.all(
            "SELECT journey_id, name, version, state, cursor, scanned, definition FROM journeys"
            " WHERE state = 'active' ORDER BY created_ms, journey_id")], give_way=False)
        total = 0
        for j in journeys:
            kind = j.definition.trigger.kind
            if kind in FOLLOWED:
                total += await self._follow(j)
            else:
                total += await self._scan(j)
        return total

    async def _follow(self, j: Journey) -> int:
        """Read the journey's source after its cursor, a page a transaction."""
        total = 0
        while True:
            now = self.now_ms()
            n, more = await self.db.transaction(functools.partial(self._follow_page, j=j, now=now))
            total += n
            if not more:
                return total

    def _follow_page(self, tx: Tx, j: Journey, now: int) -> tuple[int, bool]:
        trigger = j.definition.trigger
        state = tx.one("SELECT state, cursor FROM journeys WHERE journey_id = ?", (j.journey_id,))
        if state is None or state[0] != "active":
            return 0, False
        cursor = int(state[1])
        source = FOLLOWED[trigger.kind]
        # Read up to the source's end as it is now; a page that ends short moves the cursor
        # there, so a journey waiting for something rare does not read the same rows again
        # and again.
        end = head(tx, source)
        entries: list[Entry] = []
        if source == "events":
            rows = tx.all("SELECT pos, member_id, event_id, hlc, payload FROM events WHERE"
                          " pos > ? AND pos <= ? AND type = ? AND member_id IS NOT NULL"
                          " ORDER BY pos LIMIT ?",
                          (cursor, end, EVENT_TYPES[trigger.kind], ENTER_PAGE))
            hours = getattr(trigger, "hours", 0)
            for pos, member, event_id, hlc, payload in rows:
                occasion = "registered" if trigger.kind == "registered" else f"e:{event_id}"
                entries.append(Entry(str(member), occasion, wall_ms(int(hlc)) + hours * HOUR_MS,
                                     {"event_id": str(event_id), **_what_happened(payload)}))
                cursor = int(pos)
        elif source == "lifecycle":
            rows = tx.all("SELECT seq, member_id, day FROM lifecycle_changes WHERE seq > ?"
                          " AND seq <= ? AND to_stage = ? ORDER BY seq LIMIT ?",
                          (cursor, end, getattr(trigger, "stage", ""), ENTER_PAGE))
            for seq, member, day in rows:
                entries.append(Entry(str(member), f"stage:{day}", now, {"day": str(day)}))
                cursor = int(seq)
        elif source == "tier":
            rows = tx.all("SELECT seq, member_id, from_tier, to_tier, direction FROM"
                          " tier_changes WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                          (cursor, end, ENTER_PAGE))
            direction, into = getattr(trigger, "direction", "up"), getattr(trigger, "tier", None)
            for seq, member, old, new, way in rows:
                cursor = int(seq)
                if direction in ("any", way) and into in (None, new):
                    entries.append(Entry(str(member), f"tier:{seq}", now,
                                         {"from_tier": str(old)}))
        else:
            rows = tx.all("SELECT seq, member_id FROM segment_joins WHERE seq > ?"
                          " AND seq <= ? AND segment_id = ? ORDER BY seq LIMIT ?",
                          (cursor, end, getattr(trigger, "segment_id", ""), ENTER_PAGE))
            for seq, member in rows:
                entries.append(Entry(str(member), f"segment:{seq}", now))
                cursor = int(seq)
        # An id merged into another since it was logged is that member now (a date-driven
        # journey reads live members only: nothing to follow there).
        now_is = canonical_all(tx, (e.member_id for e in entries))
        entries = [Entry(now_is[e.member_id], e.occasion, e.due_ms, e.context) for e in entries]
        more = len(rows) == ENTER_PAGE
        if not more:
            cursor = max(cursor, end)
        written = self._write_entries(tx, j, entries, now)
        if cursor != int(state[1]):
            tx.execute("UPDATE journeys SET cursor = ? WHERE journey_id = ?",
                       (cursor, j.journey_id))
        return written, more

    async def _scan(self, j: Journey) -> int:
        """A date-driven journey looks at everyone once a day (per the calendars in use); a
        scheduled one once, at its time."""
        now = self.now_ms()
        trigger = j.definition.trigger
        if trigger.kind == "scheduled":
            at = trigger.at
            if j.scanned or now < int(at.timestamp() * 1000):
                return 0
            key = "done"
        else:
            key = json.dumps(self._todays(now), sort_keys=True)
            if j.scanned == key:
                return 0
        entries = await self.db.read(lambda tx: self.candidates(tx, j, now), give_way=False)
        total = 0
        for start in range(0, len(entries), ENTER_PAGE):
            total += await self.db.transaction(functools.partial(
                self._write_if_active, j=j, entries=entries[start:start + ENTER_PAGE], now=now))
        await self.db.transaction(lambda tx: tx.execute(
            "UPDATE journeys SET scanned = ? WHERE journey_id = ?", (key, j.journey_id)))
        return total

    def _todays(self, now: int) -> dict[str, str]:
        """Today in each time zone a store keeps (the chain's for every other store)."""
        moment = datetime.fromtimestamp(now / 1000, ZoneInfo("UTC"))
        return {z: moment.astimezone(ZoneInfo(z)).date().isoformat()
                for z in {self.chain_zone, *self.zones().values()}}

    def _by_zone(self) -> list[tuple[str, str, list[str]]]:
        """(zone, SQL on ``m.home_store``, its params) for each calendar in use."""
        zones = self.zones()
        others = sorted({z for z in zones.values() if z != self.chain_zone})
        out = []
        own = sorted(s for s, z in zones.items() if z != self.chain_zone)
        out.append((self.chain_zone, f"m.home_store NOT IN ({marks(own)})" if own else "1 = 1",
                    own))
        for zone in others:
            stores = sorted(s for s, z in zones.items() if z == zone)
            out.append((zone, f"m.home_store IN ({marks(stores)})", stores))
        return out

    def candidates(self, tx: Tx, j: Journey, now: int) -> list[Entry]:
        """Who a date-driven or scheduled journey takes now (read-only: the bench's pass and
        its floor select the same members)."""
        trigger = j.definition.trigger
        cond_sql, cond_params = self._condition(tx, j, now)
        out: list[Entry] = []
        if isinstance(trigger, Scheduled):
            for (member,) in tx.all(
                    "SELECT m.member_id FROM segment_members g JOIN members m ON m.member_id ="
                    f" g.member_id WHERE g.segment_id = ? AND {cond_sql} ORDER BY m.member_id",
                    (trigger.segment_id, *cond_params)):
                out.append(Entry(str(member), "scheduled", now))
            return out
        moment = datetime.fromtimestamp(now / 1000, ZoneInfo("UTC"))
        for zone, store_sql, store_params in self._by_zone():
            today = moment.astimezone(ZoneInfo(zone)).date()
            if isinstance(trigger, Birthday):
                days = trigger.days_before
                by_md = birthdays_within(today, days)
                for member, birthday in tx.all(
                        "SELECT m.member_id, m.birthday FROM members m WHERE"
                        f" substr(m.birthday, 6, 5) IN ({marks(sorted(by_md))})"
                        f" AND {store_sql} AND {cond_sql}",
                        (*sorted(by_md), *store_params, *cond_params)):
                    day = by_md[str(birthday)[5:10]]
                    out.append(Entry(str(member), f"birthday:{day.isoformat()}", now,
                                     {"birthday": day.isoformat()}))
            elif isinstance(trigger, PointsExpiring):
                until = today + timedelta(days=trigger.days)
                for member, first, points in tx.all(
                        "SELECT m.member_id, min(l.expires_on), sum(l.remaining) FROM point_lots l"
                        " JOIN members m ON m.member_id = l.member_id WHERE l.remaining > 0"
                        f" AND l.expires_on >= ? AND l.expires_on <= ? AND {store_sql}"
                        f" AND {cond_sql} GROUP BY m.member_id",
                        (today.isoformat(), until.isoformat(), *store_params, *cond_params)):
                    out.append(Entry(str(member), f"expiring:{first}", now,
                                     {"expiring_on": str(first), "points_expiring": int(points)}))
        return out

    def would_enter(self, tx: Tx, definition: JourneyDefinition) -> int | None:
        """How many members a date-driven or scheduled journey of ``definition`` would take if
        it looked now (its conditions applied, before the holdout); None for one that follows
        events as they come, which no look ahead can count."""
        if definition.trigger.kind not in ("birthday", "points_expiring", "scheduled"):
            return None
        probe = Journey("preview", definition.name, 1, "active", 0, "", definition)
        return len({e.member_id for e in self.candidates(tx, probe, self.now_ms())})

    def _condition(self, tx: Tx, j: Journey, now: int) -> tuple[str, list[Any]]:
        cond = j.definition.condition()
        if cond is None:
            return "m.merged_into IS NULL AND m.erased = 0", []
        today = datetime.fromtimestamp(now / 1000, ZoneInfo(self.chain_zone)).date()
        return segments.matching_sql(tx, cond, today, self.chain_zone)

    def _write_if_active(self, tx: Tx, j: Journey, entries: list[Entry], now: int) -> int:
        return self._write_entries(tx, j, entries, now) if _still_active(tx, j.journey_id) else 0

    def _write_entries(self, tx: Tx, j: Journey, entries: list[Entry], now: int) -> int:
        """The entries of members who (still) qualify, each (journey, member, occasion) once."""
        if not entries:
            return 0
        cond_sql, cond_params = self._condition(tx, j, now)
        wanted = sorted({e.member_id for e in entries})
        live: set[str] = set()
        for chunk, places in in_chunks(wanted):
            live |= {str(m) for (m,) in tx.all(
                f"SELECT m.member_id FROM members m WHERE m.member_id IN ({places})"
                f" AND {cond_sql}", (*chunk, *cond_params))}
        rows = []
        for e in entries:
            if e.member_id not in live:
                continue
            held = holdout.held_out(j.journey_id, e.member_id, j.definition.holdout_percent,
                                    self.control_percent)
            rows.append((j.journey_id, e.member_id, e.occasion, j.version, now, held, 0,
                         e.due_ms, "held_out" if held else "active",
                         json.dumps(e.context, sort_keys=True)))
        keys = {(r[1], r[2]) for r in rows}
        held_before: set[tuple[str, str]] = set()
        for chunk, places in in_chunks(sorted({r[1] for r in rows})):
            held_before |= {(str(m), str(o)) for m, o in tx.all(
                "SELECT member_id, occasion FROM journey_entries WHERE journey_id = ?"
                f" AND member_id IN ({places})", (j.journey_id, *chunk))} & keys
        tx.executemany(
            "INSERT INTO journey_entries(journey_id, member_id, occasion, version, entered_ms,"
            " held_out, step, due_ms, state, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(journey_id, member_id, occasion) DO NOTHING", rows)
        return len(keys - held_before)

    # -- advancing ------------------------------------------------------------------------------

    async def advance(self) -> tuple[int, int]:
        """Every due step, a page a transaction; (entries moved, effects made)."""
        moved = made = 0
        while True:
            now = self.now_ms()
            n, effects = await self.db.transaction(functools.partial(self._advance_page, now=now))
            moved += n
            made += effects
            if n < ADVANCE_PAGE:
                return moved, made

    def _definition(self, tx: Tx, journey_id: str, version: int) -> JourneyDefinition:
        key = (journey_id, version)
        if key not in self._definitions:
            text = tx.scalar("SELECT definition FROM journey_versions WHERE journey_id = ?"
                             " AND version = ?", key)
            self._definitions[key] = JourneyDefinition.model_validate(json.loads(text))
        return self._definitions[key]

    def _advance_page(self, tx: Tx, now: int) -> tuple[int, int]:
        rows = tx.all(
            "SELECT e.journey_id, e.member_id, e.occasion, e.version, e.step, e.context,"
            " m.name, m.member_code, m.tier, m.birthday, m.merged_into, m.erased,"
            " coalesce(l.stage, '') FROM journey_entries e"
            " LEFT JOIN members m ON m.member_id = e.member_id"
            " LEFT JOIN member_lifecycle l ON l.member_id = e.member_id"
            " WHERE e.state = 'active' AND e.due_ms <= ? ORDER BY e.due_ms, e.journey_id,"
            " e.member_id, e.occasion LIMIT ?", (now, ADVANCE_PAGE))
        if not rows:
            return 0, 0
        today = datetime.fromtimestamp(now / 1000, ZoneInfo(self.chain_zone)).date()
        earlier = self._earlier_outcomes(tx, rows)
        bodies: list[EventBody] = []
        actions: list[tuple[Any, ...]] = []
        messages: list[outbox.Message] = []
        moves: list[tuple[Any, ...]] = []
        tagging: list[tuple[str, list[str], list[str], str]] = []
        codes = self._fresh_codes(tx, rows)
        for r in rows:
            journey_id, member, occasion = str(r[0]), str(r[1]), str(r[2])
            if r[10] is not None or r[11] or r[6] is None:  # merged, erased or gone
                moves.append(("exited", int(r[4]), 0, journey_id, member, occasion))
                continue
            d = self._definition(tx, journey_id, int(r[3]))
            values = {"name": str(r[6] or ""), "member_code": str(r[7]), "tier": str(r[8]),
                      "birthday": str(r[9] or ""), "stage": str(r[12]),
                      **{k: str(v) for k, v in json.loads(r[5]).items()},
                      **earlier.get((journey_id, member, occasion), {})}
            step, due = int(r[4]), now
            while step < len(d.actions):
                action = d.actions[step]
                outcome: dict[str, Any] = {}
                if isinstance(action, Wait):
                    due = now + action.hours * HOUR_MS
                    outcome = {"until_ms": due}
                elif isinstance(action, IssueCoupon):
                    code = codes.pop()
                    expires = (today + timedelta(days=action.valid_days)
                               if action.valid_days else None)
                    bodies.append(CouponIssued(
                        coupon_code=code, member_id=member, campaign_id=journey_id,
                        kind=action.coupon_kind, value=action.value,
                        min_spend=action.min_spend, categories=action.categories,
                        expires_on=expires))
                    outcome = {"coupon_code": code, "coupon_value": _value(action),
                               "coupon_expires": expires.isoformat() if expires else ""}
                    values.update({**outcome, "coupon_qr": coupon_qr(code)})
                elif isinstance(action, GrantPoints):
                    expires = (today + timedelta(days=action.valid_days)
                               if action.valid_days else None)
                    bodies.append(PointsEarned(member_id=member, lot_id=uuid7(),
                                               points=action.points, expires_on=expires,
                                               reason="campaign"))
                    outcome = {"points": action.points}
                    values["points"] = str(action.points)
                elif isinstance(action, SetTags):
                    tagging.append((member, action.add, action.remove, d.name))
                    outcome = {"add": action.add, "remove": action.remove}
                elif isinstance(action, SendMessage):
                    key = f"{journey_id}:{member}:{occasion}:{step}"
                    messages.append(outbox.Message(
                        key=key, member_id=member, channel=action.channel,
                        purpose=action.purpose, template=action.template.format_map(values),
                        # The coupon goes with the message (a till prints its QR).
                        params={k: values[k] for k in {*_names(action.text), "coupon_code"}
                                if k in values},
                        text=action.text.format_map(values), journey_id=journey_id))
                    outcome = {"channel": action.channel, "key": key}
                actions.append((journey_id, member, occasion, step, action.kind, now,
                                json.dumps(outcome, ensure_ascii=False, sort_keys=True)))
                step += 1
                if isinstance(action, Wait):
                    break
            state = "active" if step < len(d.actions) else "done"
            moves.append((state, step, due, journey_id, member, occasion))
        if bodies:
            hq_events.append(tx, HQ, bodies, self.merge(now))
        for member, add, remove, name in tagging:
            tags.set_hq(tx, [member], add, remove, f"journey:{name}", now)
        outbox.enqueue(tx, messages, now)
        tx.executemany("INSERT INTO journey_actions(journey_id, member_id, occasion, step, kind,"
                       " at_ms, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)", actions)
        tx.executemany("UPDATE journey_entries SET state = ?, step = ?, due_ms = ?"
                       " WHERE journey_id = ? AND member_id = ? AND occasion = ?", moves)
        return len(rows), len(bodies) + len(messages) + len(tagging)

    def _earlier_outcomes(self, tx: Tx, rows: list[Any]) -> dict[tuple[str, str, str],
                                                                  dict[str, str]]:
        """What earlier steps of entries past a wait gave (a coupon's code for a later
        message)."""
        out: dict[tuple[str, str, str], dict[str, str]] = {}
        for r in rows:
            if int(r[4]) == 0:
                continue
            key = (str(r[0]), str(r[1]), str(r[2]))
            values: dict[str, str] = {}
            for (outcome,) in tx.all(
                    "SELECT outcome FROM journey_actions WHERE journey_id = ? AND member_id = ?"
                    " AND occasion = ? ORDER BY step", key):
                got = json.loads(outcome)
                if "coupon_code" in got:
                    values.update({"coupon_code": got["coupon_code"],
                                   "coupon_qr": coupon_qr(got["coupon_code"]),
                                   "coupon_value": str(got["coupon_value"]),
                                   "coupon_expires": str(got["coupon_expires"])})
                if "points" in got:
                    values["points"] = str(got["points"])
            out[key] = values
        return out

    def _fresh_codes(self, tx: Tx, rows: list[Any]) -> list[str]:
        """Enough coupon codes no stream has used for the page's coupon steps."""
        wanted = 0
        for r in rows:
            d = self._definition(tx, str(r[0]), int(r[3]))
            wanted += sum(isinstance(a, IssueCoupon) for a in d.actions[int(r[4]):])
        codes: set[str] = set()
        while len(codes) < wanted:
            drawn = {coupon_code() for _ in range(wanted - len(codes))}
            for chunk, places in in_chunks(sorted(drawn)):
                drawn -= {str(c) for (c,) in tx.all(
                    f"SELECT coupon_code FROM coupons WHERE coupon_code IN ({places})", chunk)}
            codes |= drawn
        return sorted(codes)


def _still_active(tx: Tx, journey_id: str) -> bool:
    state = tx.scalar("SELECT state FROM journeys WHERE journey_id = ?", (journey_id,))
    return bool(state == "active")


def birthdays_within(today: date, days: int) -> dict[str, date]:
    """Month-day of a birthday -> the day it falls on within ``days`` of ``today``; a 29
    February birthday falls on the 28th in a year without one."""
    out: dict[str, date] = {}
    for n in range(days + 1):
        day = today + timedelta(days=n)
        out.setdefault(day.strftime("%m-%d"), day)
        if day.month == 2 and day.day == 28 and not _leap(day.year):
            out.setdefault("02-29", day)
    return out


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _value(action: IssueCoupon) -> str:
    """The coupon's value as a member reads it: yuan for an amount, percent for a share."""
    if action.coupon_kind == "percent_off":
        return f"{action.value / 100:g}%"
    return _yuan(action.value)


def _yuan(minor: int) -> str:
    """Minor units as a member reads them: 2000 -> "20", 1250 -> "12.50"."""
    text = format_amount(minor, CURRENCY)
    return text.removesuffix(".00")


def _what_happened(payload: bytes) -> dict[str, str]:
    """What a purchase's or a top-up's message may tell the member (consumption details)."""
    body = decode(bytes(payload), Event).body
    if isinstance(body, SaleFinalized):
        return {"sale_total": _yuan(body.total), "points_earned": str(body.points_earned)}
    if isinstance(body, StoredValueToppedUp):
        return {"topup_amount": _yuan(body.principal), "topup_bonus": _yuan(body.bonus)}
    return {}


def _names(text: str) -> list[str]:
    return sorted({f for _l, f, _s, _c in string.Formatter().parse(text) if f})
