"""Staff days: per store, store-local day (and month), role and staff member, the sales they
made. A report over a long period reads a month's row where it would read up to 31 days'.

Two roles. A **cashier** rang a sale up (``cashier_id``) and gave a refund's money back (the
refund's own ``cashier_id``): their row is the till's view, takings less what they paid back.
A **guide** (导购) is the shopping guide a sale counts for (``guide_id``); a refund has no guide
of its own and is taken off the guide of the sale it returns, as ``sales_facts`` holds that sale
logged before the refund (the earliest, should a store have sent one sale id twice), so that
what a guide is credited with is what their customers kept. Both at the refund's store, on its
day. A sale or refund naming nobody in a role adds no row for it. A staff id is a store's own
(tills number their cashiers), so a row is a staff member at a store.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.core.db import Tx, in_chunks
from hub.core.projections import Logged
from hub.projections.places import Places, local_time
from hub.projections.sales import REFUND, SALE, refunded_per_line
from hub.projections.sums import PageSums

CASHIER, GUIDE = "cashier", "guide"
SUMS = ("sales", "amount", "member_sales", "member_amount", "refunds", "refund_amount",
        "member_refunds", "member_refund_amount")


def sale_guides(tx: Tx, events: Sequence[Logged]) -> dict[int, str | None]:
    """Position of every refund among ``events`` -> the guide of the sale it returns."""
    refunds = [e for e in events if e.type == REFUND]
    sales: dict[str, list[tuple[int, str | None]]] = {}
    for chunk, marks in in_chunks(sorted({e.event.body.sale_id for e in refunds})):
        for doc, pos, guide in tx.all("SELECT doc_id, pos, guide_id FROM sales_facts"
                                      f" WHERE doc_id IN ({marks}) AND kind = 'sale'", chunk):
            sales.setdefault(str(doc), []).append((int(pos), guide))
    out: dict[int, str | None] = {}
    for e in refunds:
        before = sorted(s for s in sales.get(e.event.body.sale_id, []) if s[0] < e.pos)
        out[e.pos] = before[0][1] if before else None
    return out


class StaffDays:
    name = "staff_days"
    tables: tuple[str, ...] = ("staff_days", "staff_months")
    types = frozenset({SALE, REFUND})
    after: tuple[str, ...] = ("sales_facts",)

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        guides = sale_guides(tx, events)
        days = PageSums("staff_days", ("store_id", "day", "role", "staff_id"), SUMS)
        months = PageSums("staff_months", ("store_id", "month", "role", "staff_id"), SUMS)
        for e in events:
            b = e.event.body
            day = local_time(places.of(e.store_id)[1], e.hlc)[0]
            member = b.member_id is not None
            cashier = getattr(b, "cashier_id", None)
            if e.type == SALE:
                staff = ((CASHIER, cashier), (GUIDE, getattr(b, "guide_id", None)))
                amount, at = sum(ln.net for ln in b.lines), 0
            else:
                staff = ((CASHIER, cashier), (GUIDE, guides.get(e.pos)))
                amount, at = sum(refunded_per_line(b)), 4
            for role, staff_id in staff:
                if staff_id is None:
                    continue
                row = days.row(e.store_id, day, role, staff_id)
                row[at] += 1
                row[at + 1] += amount
                if member:
                    row[at + 2] += 1
                    row[at + 3] += amount
        months.fold(days, lambda k: (k[0], str(k[1])[:7], *k[2:]))
        days.write(tx)
        months.write(tx)
