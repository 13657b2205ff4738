"""Days recomputed after they closed (``hub.ledger.late_days``): the merge writes down each
store-day a batch changes more than an hour after the day ended, by the merge's own time, so a
report over it says so — and nothing else: not a day merged while it was open, not HQ's own
stream, not a rebuild of the read models long after every day had closed."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.ledger.apply import apply_batch
from hub.projections.catalog import projections
from hub.stores import registry
from hub.stores.registry import HQ
from protocol.events import Event, EventBatch, MemberRegistered
from protocol.hlc import pack

ZONE = "Asia/Shanghai"
TZ = ZoneInfo(ZONE)
TODAY = date(2026, 11, 20)


def _ms(day: date, hour: int, minute: int = 0) -> int:
    return int(datetime.combine(day, time(hour, minute), TZ).timestamp() * 1000)


class Stream:
    def __init__(self, store: str) -> None:
        self.store, self.seq = store, 0

    def batch(self, *at: int) -> EventBatch:
        events = []
        for ms in at:
            self.seq += 1
            events.append(Event(event_id=f"{self.store}-{self.seq}", store_id=self.store,
                                epoch=1, seq=self.seq, hlc=pack(ms, 0), body=MemberRegistered(
                                    member_id=f"{self.store}M{self.seq}",
                                    member_code=f"{self.store}C{self.seq}")))
        return EventBatch(store_id=self.store, epoch=1, events=events)


def _revisions(tx: Tx) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in tx.all(
        "SELECT store_id, day, first_ms, last_ms, events FROM rollup_revisions"
        " ORDER BY store_id, day")]


async def test_only_days_changed_after_they_closed_are_written_down(hub_db: HubDatabase
                                                                   ) -> None:
    await hub_db.transaction(lambda tx: registry.upsert(tx, [
        registry.StoreRecord(store_id="S001", name="一店", region="east")]))
    s1, hq = Stream("S001"), Stream(HQ)
    yesterday, three_ago = TODAY - timedelta(days=1), TODAY - timedelta(days=3)

    merges: list[tuple[EventBatch, int]] = []  # (batch, when the hub merges it)

    def merge(batch: EventBatch, at_ms: int) -> None:
        merges.append((batch, at_ms))

    # While the days are open: today's sale at noon; yesterday's late-evening sale merged at
    # 00:30 (its day closes at 01:00).
    merge(s1.batch(_ms(TODAY, 11)), _ms(TODAY, 12))
    merge(s1.batch(_ms(yesterday, 23, 50)), _ms(TODAY, 0, 30))
    # After they closed: yesterday's again at 01:30; three days ago (two events) at 14:00 and
    # one more of that day at 15:00; HQ's own stream writing about an old day, never.
    merge(s1.batch(_ms(yesterday, 23, 55)), _ms(TODAY, 1, 30))
    merge(s1.batch(_ms(three_ago, 9), _ms(three_ago, 10)), _ms(TODAY, 14))
    merge(s1.batch(_ms(three_ago, 11)), _ms(TODAY, 15))
    merge(hq.batch(_ms(three_ago, 8)), _ms(TODAY, 15))
    for batch, at_ms in merges:
        await hub_db.transaction(lambda tx, b=batch, a=at_ms: apply_batch(
            tx, b, a, zone=ZONE, chain_zone=ZONE))
    expected = [("S001", str(three_ago), _ms(TODAY, 14), _ms(TODAY, 15), 3),
                ("S001", str(yesterday), _ms(TODAY, 1, 30), _ms(TODAY, 1, 30), 1)]
    assert await hub_db.read(_revisions) == expected
    # Rebuilding every read model from zero, today, writes down nothing more.
    runner = ProjectionRunner(hub_db, projections(ZONE))
    await runner.catch_up()
    for p in projections(ZONE):
        await runner.rebuild(p.name)
    assert await hub_db.read(_revisions) == expected
