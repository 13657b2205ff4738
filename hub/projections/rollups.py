"""Daily rollups: per store, store-local day and category, what sold and what came back.

The base of every report: sales (sales with a line in the category), items, gross, discount,
net amount and the part of it members bought, and refunds, refunded items and the amount
refunded. A refund is booked on the day it happened, at its store, under the category of the
sale line it returns ('' when that sale is unknown); a store whose log merges late adds to the
days it sold on, so a day's figures are whatever its store's merged log says so far. A day
that changes more than an hour after it ended (``LATE_MS``) is written down in
``rollup_revisions``, so that a report over it says its figures were recomputed and when.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.core.clock import now_ms
from hub.core.db import Tx
from hub.core.projections import Logged
from hub.projections.places import Places, local_time
from hub.projections.sales import REFUND, SALE, refund_lines, refunded_per_line
from protocol.hlc import pack

_SUMS = ("sales", "items", "gross", "discount", "amount", "member_amount", "refunds",
         "refund_items", "refund_amount")
_UPSERT = (
    f"INSERT INTO daily_rollups(store_id, day, category, region, {', '.join(_SUMS)})"
    f" VALUES ({', '.join('?' * (4 + len(_SUMS)))})"
    " ON CONFLICT(store_id, day, category) DO UPDATE SET region = excluded.region, "
    + ", ".join(f"{c} = daily_rollups.{c} + excluded.{c}" for c in _SUMS))

_REVISED = (
    "INSERT INTO rollup_revisions(store_id, day, first_ms, last_ms, events) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(store_id, day) DO UPDATE SET last_ms = excluded.last_ms,"
    " events = rollup_revisions.events + excluded.events")
LATE_MS = 3_600_000  # a store's day is closed an hour after its midnight: later changes show

Key = tuple[str, str, str]  # (store, day, category)
# A row being summed: the sums, then the last event counted in ``sales`` or ``refunds``.
_LAST = len(_SUMS)
_WIDTH = _LAST + 1


class DailyRollups:
    name = "daily_rollups"
    tables: tuple[str, ...] = ("daily_rollups",)
    types = frozenset({SALE, REFUND})
    after: tuple[str, ...] = ("sales_facts",)  # a refund line's category is its sale line's

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        lines = refund_lines(tx, events)
        sums: dict[Key, list[Any]] = {}
        regions: dict[str, str | None] = {}
        now = now_ms()
        closed: dict[str, str] = {}  # per store: its last closed day, as of now
        late: dict[tuple[str, str], int] = {}
        for e in events:
            b = e.event.body
            region, zone = places.of(e.store_id)
            regions[e.store_id] = region
            day = local_time(zone, e.hlc)[0]
            last_closed = closed.get(e.store_id)
            if last_closed is None:
                last_closed = closed[e.store_id] = local_time(zone, pack(now - LATE_MS, 0))[0]
            if day < last_closed:
                late[(e.store_id, day)] = late.get((e.store_id, day), 0) + 1
            if e.type == SALE:
                member = b.member_id is not None
                for ln in b.lines:
                    row = sums.get((e.store_id, day, ln.category))
                    if row is None:
                        row = sums[(e.store_id, day, ln.category)] = [0] * _WIDTH
                    if row[_LAST] is not b:  # a sale counts once in each of its categories
                        row[_LAST] = b
                        row[0] += 1
                    row[1] += ln.qty
                    row[2] += ln.gross
                    row[3] += ln.discount
                    row[4] += ln.net
                    if member:
                        row[5] += ln.net
            else:
                for ln, amount in zip(b.lines, refunded_per_line(b), strict=True):
                    category = lines.get((b.sale_id, ln.line_no), (None, None))[1] or ""
                    row = sums.get((e.store_id, day, category))
                    if row is None:
                        row = sums[(e.store_id, day, category)] = [0] * _WIDTH
                    if row[_LAST] is not b:
                        row[_LAST] = b
                        row[6] += 1
                    row[7] += ln.qty
                    row[8] += amount
        tx.executemany(_UPSERT, [(*k, regions[k[0]], *v[:_LAST]) for k, v in sums.items()])
        if late:
            tx.executemany(_REVISED, [(*k, now, now, n) for k, n in late.items()])
