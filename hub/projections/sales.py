"""Sales facts: one row per sale, sale line, tender and discount, and per refund, refund line
and refund tender, each with its store, region, terminal, cashier, shopping guide, member and
store-local date and hour. What reports slice and sum.

A refund's rows are negative and its lines carry the sku and category of the sale line they
return (``line_no``), so a sale's lines and its refunds' lines sum to what was kept. The member
is the id the store wrote: ``members.merged_into`` says which member it is now (a merge does
not rewrite facts, so the rows never depend on when a merge was seen).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hub.core.db import Tx, in_chunks
from hub.core.projections import Logged
from hub.projections.places import Places, local_time
from protocol.money import allocate

SALE, REFUND = "sale.finalized", "refund.completed"

# What every row of a sale (or refund) shares comes first: a row is that tuple plus its own.
COLUMNS = ("doc_id", "sale_id", "pos", "store_id", "region", "terminal_id", "cashier_id",
           "guide_id", "member_id", "hlc", "local_date", "local_hour", "kind", "n", "sku",
           "category", "code", "ref", "qty", "gross", "discount", "amount", "points")
INSERT = (f"INSERT INTO sales_facts({', '.join(COLUMNS)})"
          f" VALUES ({', '.join('?' * len(COLUMNS))})")

LineKey = tuple[str, int]  # (sale_id, line_no)


def sale_lines(tx: Tx, sale_ids: Iterable[str]) -> dict[LineKey, tuple[str | None, str | None]]:
    """(sku, category) of every line of ``sale_ids`` already in the facts."""
    found: dict[LineKey, tuple[str | None, str | None]] = {}
    for chunk, marks in in_chunks(sorted(set(sale_ids))):
        for sale_id, n, sku, category in tx.all(
                "SELECT doc_id, n, sku, category FROM sales_facts"
                f" WHERE kind = 'line' AND doc_id IN ({marks})", chunk):
            found.setdefault((str(sale_id), int(n)), (sku, category))
    return found


def refunded_per_line(body: Any) -> list[int]:
    """What a refund gave back per line: its amounts, less its share of the promotions it took
    back (``discounts_reversed``, v3), so the lines add up to the refund's amount."""
    taken = getattr(body, "discounts_reversed", 0)
    amounts = [ln.amount for ln in body.lines]
    if not taken:
        return amounts
    return [a - s for a, s in zip(amounts, allocate(taken, amounts), strict=True)]


def refund_lines(tx: Tx, events: Sequence[Logged]
                 ) -> dict[LineKey, tuple[str | None, str | None]]:
    """The sale lines the refunds among ``events`` return (facts written before them)."""
    refunds = [e.event.body.sale_id for e in events if e.type == REFUND]
    return sale_lines(tx, refunds) if refunds else {}


class SalesFacts:
    name = "sales_facts"
    tables: tuple[str, ...] = ("sales_facts",)
    types = frozenset({SALE, REFUND})
    after: tuple[str, ...] = ()

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        tx.executemany(INSERT, fact_rows(tx, events, Places(tx, self.chain_zone)))


# Per body type: whether it carries the cashier and the shopping guide (the protocol will add
# them to sales and refunds; until then they are empty). Asked once per type, not per event.
_STAFF: dict[type, tuple[bool, bool]] = {}


def _staff(body: Any) -> tuple[str | None, str | None]:
    has = _STAFF.get(type(body))
    if has is None:
        has = _STAFF[type(body)] = (hasattr(body, "cashier_id"), hasattr(body, "guide_id"))
    return (body.cashier_id if has[0] else None, body.guide_id if has[1] else None)


def fact_rows(tx: Tx, events: Sequence[Logged], places: Places) -> list[tuple[Any, ...]]:
    lines = refund_lines(tx, events)
    wanted = {e.event.body.sale_id for e in events if e.type == REFUND}
    rows: list[tuple[Any, ...]] = []
    add = rows.append
    for e in events:
        b = e.event.body
        region, zone = places.of(e.store_id)
        day, hour = local_time(zone, e.hlc)
        cashier, guide = _staff(b)
        if e.type == SALE:
            doc = b.sale_id
            head = (doc, doc, e.pos, e.store_id, region, b.terminal_id, cashier, guide,
                    b.member_id, e.hlc, day, hour)
            items = 0
            for ln in b.lines:
                items += ln.qty
                add((*head, "line", ln.line_no, ln.sku, ln.category, None, None, ln.qty,
                            ln.gross, ln.discount, ln.net, ln.points))
                if doc in wanted:  # refunded further on in this page
                    lines[(doc, ln.line_no)] = (ln.sku, ln.category)
            add((*head, "sale", 0, None, None, b.currency, None, items, b.subtotal,
                        b.discount_total, b.total, b.points_earned))
            for i, t in enumerate(b.tenders, 1):
                add((*head, "tender", i, None, None, t.kind, t.coupon_code, 0, 0, 0, t.amount,
                            t.points))
            for i, d in enumerate(b.discounts, 1):
                add((*head, "discount", i, None, None, d.kind, d.coupon_code or d.campaign_id,
                            0, 0, 0, d.amount, 0))
        else:
            head = (b.refund_id, b.sale_id, e.pos, e.store_id, region, b.terminal_id, cashier,
                    guide, b.member_id, e.hlc, day, hour)
            items = 0
            for ln, amount in zip(b.lines, refunded_per_line(b), strict=True):
                items += ln.qty
                sku, category = lines.get((b.sale_id, ln.line_no), (None, None))
                add((*head, "refund_line", ln.line_no, sku, category, None, None, -ln.qty, 0, 0,
                            -amount, -ln.points_reversed))
            add((*head, "refund", 0, None, None, b.currency, None, -items, 0, 0, -b.amount,
                        -b.points_reversed))
            for i, t in enumerate(b.tenders, 1):
                add((*head, "refund_tender", i, None, None, t.kind, t.coupon_code, 0, 0, 0,
                            -t.amount, -t.points))
    return rows
