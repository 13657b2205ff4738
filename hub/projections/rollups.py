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

from hub.core.db import Tx
from hub.core.projections import Logged
from hub.projections.places import Places, local_time
from hub.projections.sales import REFUND, SALE, refund_lines, refunded_per_line

_SUMS = ("sales", "items", "gross", "discount", "amount", "member_amount", "refunds",
         "refund_items", "refund_amount")
_UPSERT = (
    f"INSERT INTO daily_rollups(store_id, day, category, region, {', '.join(_SUMS)})"
    f" VALUES ({', '.join('?' * (4 + len(_SUMS)))})"
    " ON CONFLICT(store_id, day, category) DO UPDATE SET region = excluded.region, "
    + ", ".join(f"{c} = daily_rollups.{c} + excluded.{c}" for c in _SUMS))

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
        for e in events:
            b = e.event.body
            region, zone = places.of(e.store_id)
            regions[e.store_id] = region
            day = local_time(zone, e.hlc)[0]
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
