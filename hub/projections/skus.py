"""Products: per store, store-local day (and month) and sku, what sold and what came back; the
same for the whole chain; and per store, day and category, what members brought back.

``sku_days`` ranks products over a few weeks; ``sku_months`` holds the same sums per
store-local month, so a long period reads a month's row where it would read up to 31 days'
(``hub.reports.sales.month_plan``). ``sku_chain_days`` and ``sku_chain_months`` are the same
summed over every store: the chain's ranking reads a row a sku and day instead of one a sku
and store-day (only the chain-wide scope may read them). All key on the category too: a sku
the catalogue moved to another category keeps what it sold under each, so no row depends on
which event came last.

A refund line counts at the refund's store, on its day, under the sku and category of the sale
line it returns, as ``sales_facts`` wrote them for it (its rows are written first, in the same
transaction: ``after``); '' when the sale is unknown.

``member_refund_days`` is what ``daily_rollups`` does not split: the part of each category's
refunds that members brought back, so that members' net can be read per category.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.core.db import Tx, in_chunks
from hub.core.projections import Logged
from hub.projections.places import Places, local_time
from hub.projections.sales import REFUND, SALE, refunded_per_line
from hub.projections.sums import PageSums

SKU_SUMS = ("qty", "amount", "refund_qty", "refund_amount")


def refunded_skus(tx: Tx, events: Sequence[Logged]) -> dict[tuple[int, int], tuple[str, str]]:
    """(position, line number) of every refund line among ``events`` -> the (sku, category)
    ``sales_facts`` wrote for it ('' for what it did not know)."""
    ids = sorted({e.event.body.refund_id for e in events if e.type == REFUND})
    wanted = {e.pos for e in events if e.type == REFUND}
    found: dict[tuple[int, int], tuple[str, str]] = {}
    for chunk, marks in in_chunks(ids):
        for pos, n, sku, category in tx.all(
                "SELECT pos, n, sku, category FROM sales_facts"
                f" WHERE doc_id IN ({marks}) AND kind = 'refund_line'", chunk):
            if int(pos) in wanted:
                found[(int(pos), int(n))] = (sku or "", category or "")
    return found


class SkuDays:
    name = "sku_days"
    tables: tuple[str, ...] = ("sku_days", "sku_months", "sku_chain_days", "sku_chain_months")
    types = frozenset({SALE, REFUND})
    after: tuple[str, ...] = ("sales_facts",)

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        lines = refunded_skus(tx, events)
        days = PageSums("sku_days", ("store_id", "day", "sku", "category"), SKU_SUMS)
        months = PageSums("sku_months", ("store_id", "month", "sku", "category"), SKU_SUMS)
        chain_days = PageSums("sku_chain_days", ("day", "sku", "category"), SKU_SUMS)
        chain_months = PageSums("sku_chain_months", ("month", "sku", "category"), SKU_SUMS)
        for e in events:
            b = e.event.body
            day = local_time(places.of(e.store_id)[1], e.hlc)[0]
            if e.type == SALE:
                for ln in b.lines:
                    row = days.row(e.store_id, day, ln.sku, ln.category)
                    row[0] += ln.qty
                    row[1] += ln.net
            else:
                for ln, amount in zip(b.lines, refunded_per_line(b), strict=True):
                    sku, category = lines.get((e.pos, ln.line_no), ("", ""))
                    row = days.row(e.store_id, day, sku, category)
                    row[2] += ln.qty
                    row[3] += amount
        months.fold(days, lambda k: (k[0], str(k[1])[:7], k[2], k[3]))
        chain_days.fold(days, lambda k: k[1:])
        chain_months.fold(chain_days, lambda k: (str(k[0])[:7], *k[1:]))
        for sums in (days, months, chain_days, chain_months):
            sums.write(tx)


class MemberRefundDays:
    name = "member_refund_days"
    tables: tuple[str, ...] = ("member_refund_days",)
    types = frozenset({REFUND})
    after: tuple[str, ...] = ("sales_facts",)

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        mine = [e for e in events if e.event.body.member_id is not None]
        if not mine:
            return
        places = Places(tx, self.chain_zone)
        lines = refunded_skus(tx, mine)
        sums = PageSums("member_refund_days", ("store_id", "day", "category"),
                        ("refund_items", "refund_amount"))
        for e in mine:
            day = local_time(places.of(e.store_id)[1], e.hlc)[0]
            b = e.event.body
            for ln, amount in zip(b.lines, refunded_per_line(b), strict=True):
                row = sums.row(e.store_id, day, lines.get((e.pos, ln.line_no), ("", ""))[1])
                row[0] += ln.qty
                row[1] += amount
        sums.write(tx)
