"""Store sales: per store and store-local day, and per store, day and hour, what sold and what
came back.

What ``daily_rollups`` cannot give: it counts a sale once in every category it touched, so
sale counts, baskets and an hour-of-day or weekday profile need a row a sale counts in once.
Here a sale counts once, on the day and in the hour it was finalised: its items, gross,
discount and net amount (its lines' sums, as the rollups add them), and whether a member
bought; a refund counts once on its own day and hour at its own store, with the items and
amount it gave back (its lines' amounts less the promotions it took back, as the rollups book
it) and whether it was a member's. ``store_days`` holds the same sums as ``store_hours`` a
day, so that a trend over a year reads a row a store-day (a fourteenth of the hours' rows).
The region is not kept: a report reads each store's region as it is now.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.core.db import Tx
from hub.core.projections import Logged
from hub.projections.places import Places, local_time
from hub.projections.sales import REFUND, SALE, refunded_per_line
from hub.projections.sums import PageSums

SUMS = ("sales", "items", "gross", "discount", "amount", "member_sales", "member_amount",
        "refunds", "refund_items", "refund_amount", "member_refunds", "member_refund_amount")


class StoreSales:
    name = "store_sales"
    tables: tuple[str, ...] = ("store_days", "store_hours")
    types = frozenset({SALE, REFUND})
    after: tuple[str, ...] = ()

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        days = PageSums("store_days", ("store_id", "day"), SUMS)
        hours = PageSums("store_hours", ("store_id", "day", "hour"), SUMS)
        for e in events:
            b = e.event.body
            day, hour = local_time(places.of(e.store_id)[1], e.hlc)
            member = b.member_id is not None
            if e.type == SALE:
                amount = sum(ln.net for ln in b.lines)
                add = [1, sum(ln.qty for ln in b.lines), sum(ln.gross for ln in b.lines),
                       sum(ln.discount for ln in b.lines), amount, int(member),
                       amount if member else 0, 0, 0, 0, 0, 0]
            else:
                amount = sum(refunded_per_line(b))
                add = [0, 0, 0, 0, 0, 0, 0, 1, sum(ln.qty for ln in b.lines), amount,
                       int(member), amount if member else 0]
            row = hours.row(e.store_id, day, hour)
            for i, v in enumerate(add):
                row[i] += v
        days.fold(hours, lambda k: k[:2])
        days.write(tx)
        hours.write(tx)
