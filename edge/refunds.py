"""Refunds, whole or by line and quantity, rolling back every benefit of the sale.

All shares are computed on cumulative quantities (``floor(total * refunded_so_far / sold)``), so
refunding a line in several steps gives back exactly what one refund of it would, and a full
refund gives back everything to the last minor unit and point.

Promotions are recomputed on what the customer keeps (a sale's ``pricing_basis``): after a
refund, the money refunded in all is the lesser of the lines' proportional shares and what was
paid less what the kept items cost at the sale's prices. So a 满减 threshold or a coupon's
minimum spend that the kept items no longer reach is taken back (``discounts_reversed``, on the
refund as a whole: each line's amount stays its proportional share), and the money depends
only on what is kept, never on the order of the refunds; a later refund that returns the rest
gives back what an earlier one took (``discounts_reversed`` below zero). A return that would
leave the kept items costing more than was paid for the whole is refused
(``refund_below_zero``): the customer returns the rest with it. Earned points are reversed in
proportion to the lines' shares, as before.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from edge import allowance, coupons, outbox, points, pricing_basis, stored_value
from edge.context import StoreContext
from edge.errors import EdgeError, conflict, invalid
from protocol.events import REPRICED_REFUND, RefundCompleted, RefundLine, Tender, body_version
from protocol.money import allocate
from protocol.pricing import BasketLine


def _cumulative(total: int, done: int, whole: int) -> int:
    return total * done // whole


def _repriced(sale: sqlite3.Row, sold: dict[int, sqlite3.Row], wanted: dict[int, int],
              shares: list[int], basis: pricing_basis.Basis) -> int:
    """The promotions this refund takes back (below zero: gives back), with what is kept after
    it priced on the sale's basis (see the module's docstring)."""
    after = {n: r["refunded_qty"] + wanted.get(n, 0) for n, r in sold.items()}
    kept = [BasketLine(line_no=n, sku=r["sku"], category=r["category"], qty=r["qty"] - after[n],
                       unit_price=r["unit_price"]) for n, r in sorted(sold.items())
            if r["qty"] > after[n]]
    kept_costs = pricing_basis.total_of(basis, kept)
    proportional = sum(_cumulative(r["net"], after[n], r["qty"]) for n, r in sold.items())
    refunded_after = min(proportional, sale["total"] - kept_costs)
    total = refunded_after - sale["refunded_total"]
    if total < 0:
        paid = sale["total"] - sale["refunded_total"]
        raise conflict(
            "refund_below_zero",
            f"without these lines the items kept cost {kept_costs} at the sale's prices"
            f" (its promotions no longer apply), more than the {paid} paid for everything:"
            " refund the other lines with them",
            kept_costs=kept_costs, paid=paid)
    return int(sum(shares) - total)


def refund(
    conn: sqlite3.Connection, ctx: StoreContext, *, sale_id: str, refund_id: str,
    terminal_id: str, lines: list[tuple[int, int]] | None, cashier_id: str | None = None,
) -> dict[str, Any]:
    """Refund ``lines`` as (line_no, qty) of ``sale_id``, or everything still refundable;
    ``cashier_id`` is who gives the money back."""
    sale = conn.execute("SELECT * FROM sales WHERE sale_id = ?", (sale_id,)).fetchone()
    if sale is None:
        raise EdgeError("sale_not_found", "no finalized sale with this id here", 404,
                        sale_id=sale_id)
    sold = {r["line_no"]: r for r in conn.execute(
        "SELECT * FROM sale_lines WHERE sale_id = ?", (sale_id,))}
    if lines is None:
        lines = [(n, r["qty"] - r["refunded_qty"]) for n, r in sold.items()
                 if r["qty"] > r["refunded_qty"]]
        if not lines:
            raise conflict("refund_exceeds_sale", "this sale has been refunded in full")
    wanted: dict[int, int] = {}
    for line_no, qty in lines:
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise invalid("invalid_quantity", "refund quantity must be above zero")
        wanted[line_no] = wanted.get(line_no, 0) + qty
    basis = pricing_basis.loads(sale["pricing_basis"]) if sale["pricing_basis"] else None
    shares: list[int] = []
    line_points: list[int] = []
    for line_no, qty in sorted(wanted.items()):
        row = sold.get(line_no)
        if row is None:
            raise invalid("line_not_found", f"sale has no line {line_no}", line_no=line_no)
        done = row["refunded_qty"] + qty
        if done > row["qty"]:
            raise conflict(
                "refund_exceeds_sale",
                f"line {line_no}: {row['qty'] - row['refunded_qty']} left to refund, {qty} asked",
                line_no=line_no, refundable=row["qty"] - row["refunded_qty"],
            )
        before = (_cumulative(row["net"], row["refunded_qty"], row["qty"])
                  if basis is not None else row["refunded_amount"])
        shares.append(_cumulative(row["net"], done, row["qty"]) - before)
        line_points.append(_cumulative(row["points"], done, row["qty"]) - row["points_reversed"])
    discounts_reversed = _repriced(sale, sold, wanted, shares, basis) if basis else 0
    out_lines = [RefundLine(line_no=n, qty=q, amount=a, points_reversed=p) for (n, q), a, p
                 in zip(sorted(wanted.items()), shares, line_points, strict=True)]
    reversed_points = sum(line_points)
    total = sum(shares) - discounts_reversed

    tenders = conn.execute(
        "SELECT * FROM sale_tenders WHERE sale_id = ? ORDER BY tender_no", (sale_id,)
    ).fetchall()
    shares = allocate(total, [t["amount"] - t["refunded_amount"] for t in tenders])
    member_id = sale["member_id"]
    back: list[Tender] = []
    pts_returned = sv_p = sv_b = 0
    for t, share in zip(tenders, shares, strict=True):
        if share == 0:
            continue
        done = t["refunded_amount"] + share
        p_back = (_cumulative(t["points"], done, t["amount"]) - t["refunded_points"]
                  if t["amount"] else 0)
        # principal rounds down and bonus takes the rest, so the two always add up to the share
        prin = (_cumulative(t["sv_principal"], done, t["amount"]) - t["refunded_principal"]
                if t["amount"] else 0)
        bonus = share - prin if t["kind"] == "stored_value" else 0
        if t["kind"] != "stored_value":
            prin = 0
        conn.execute(
            "UPDATE sale_tenders SET refunded_amount = refunded_amount + ?, refunded_points ="
            " refunded_points + ?, refunded_principal = refunded_principal + ?, refunded_bonus ="
            " refunded_bonus + ? WHERE sale_id = ? AND tender_no = ?",
            (share, p_back, prin, bonus, sale_id, t["tender_no"]),
        )
        back.append(Tender(kind=t["kind"], amount=share, points=p_back, sv_principal=prin,
                           sv_bonus=bonus, reference=t["reference"]))
        pts_returned += p_back
        sv_p += prin
        sv_b += bonus

    fully = all(
        r["refunded_qty"] + wanted.get(n, 0) == r["qty"] for n, r in sold.items()
    )
    reopen = None
    if fully:
        row = conn.execute("SELECT coupon_code FROM sale_coupons WHERE sale_id = ?",
                           (sale_id,)).fetchone()
        reopen = row[0] if row is not None else None

    taken = shortfall = 0
    event = RefundCompleted(
        v=REPRICED_REFUND if discounts_reversed else body_version(cashier_id),
        cashier_id=cashier_id, discounts_reversed=discounts_reversed,
        refund_id=refund_id, sale_id=sale_id, terminal_id=terminal_id, member_id=member_id,
        currency=sale["currency"], lines=out_lines, amount=total,
        tenders=back or [Tender(kind="external", amount=0)],
        points_reversed=0, points_shortfall=0, points_returned=pts_returned,
        coupon_reopened=reopen,
    )
    if member_id is not None:
        # Returned points go back first so a reversal can draw on them like on any others.
        points.return_redeemed(conn, ctx, member_id, sale_id, pts_returned, refund_id)
        stored_value.refund(conn, ctx, member_id, sale_id, refund_id, sv_p, sv_b)
        taken, shortfall = points.reverse_earned(
            conn, ctx, member_id, reversed_points, sale_id, refund_id, sale["earned_lot_id"]
        )
        allowance.give_back(conn, ctx, member_id, pts_returned, sv_p + sv_b)
        conn.execute("UPDATE members SET spend_total = max(0, spend_total - ?)"
                     " WHERE member_id = ?", (total, member_id))
        event = event.model_copy(update={"points_reversed": taken,
                                         "points_shortfall": shortfall})
    ev = outbox.append(conn, ctx, event)
    for r in out_lines:
        conn.execute(
            "UPDATE sale_lines SET refunded_qty = refunded_qty + ?, refunded_amount ="
            " refunded_amount + ?, points_reversed = points_reversed + ?"
            " WHERE sale_id = ? AND line_no = ?",
            (r.qty, r.amount, r.points_reversed, sale_id, r.line_no),
        )
    conn.execute("UPDATE sales SET refunded_total = refunded_total + ? WHERE sale_id = ?",
                 (total, sale_id))
    if reopen is not None:
        coupons.reopen(conn, ctx, reopen, sale_id, refund_id)
    result = event.model_dump(mode="json")
    result.pop("type", None)
    result.pop("v", None)
    conn.execute(
        "INSERT INTO refunds(refund_id, sale_id, terminal_id, amount, created_at, hlc, result,"
        " cashier_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (refund_id, sale_id, terminal_id, total, ctx.now().isoformat(), ev.hlc,
         json.dumps(result), cashier_id),
    )
    return result
