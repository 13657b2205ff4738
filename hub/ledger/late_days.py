"""Store-days changed after they closed: a store that was offline merges its sales, refunds,
top-ups or registrations days late, and every figure of those days changes then.

A day is closed an hour after the store's midnight (``LATE_MS``). The merge writes each closed
day a batch changes into ``rollup_revisions`` (when first and last, how many events), so a
report over that day says its figures were recomputed and when (HQ.md principle 5). It is
decided at the merge, by the merge's own time — not by a projection reading the log, which a
rebuild or a first catch-up would read long after every day had closed and so mark them all.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from hub.core.db import Tx
from hub.ledger.facts import Decoded
from protocol.hlc import wall_ms

LATE_MS = 3_600_000

_REVISED = (
    "INSERT INTO rollup_revisions(store_id, day, first_ms, last_ms, events) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(store_id, day) DO UPDATE SET last_ms = excluded.last_ms,"
    " events = rollup_revisions.events + excluded.events")


def closed_before_ms(zone: ZoneInfo, now_ms: int) -> int:
    """The start of the first store-local day not yet closed at ``now_ms``: an event before
    it belongs to a closed day."""
    open_day = datetime.fromtimestamp((now_ms - LATE_MS) / 1000, zone).date()
    return int(datetime.combine(open_day, time(), zone).timestamp() * 1000)


def mark(tx: Tx, batch: Decoded, now_ms: int) -> None:
    """Write down the closed days of the store ``batch`` changes, merged at ``now_ms``."""
    zone = ZoneInfo(batch.zone)
    before = closed_before_ms(zone, now_ms)
    late: dict[str, int] = {}
    for row in batch.rows:
        at = wall_ms(row[4])
        if at < before:  # rare: one comparison per event otherwise
            day = datetime.fromtimestamp(at / 1000, zone).date().isoformat()
            late[day] = late.get(day, 0) + 1
    if late:
        tx.executemany(_REVISED, [(batch.store_id, day, now_ms, now_ms, n)
                                  for day, n in sorted(late.items())])
