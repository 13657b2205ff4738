"""Pricing a basket and finalizing a sale: one SQLite transaction from tenders to outbox."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import Any

from edge import (
    allowance,
    coupons,
    members,
    outbox,
    payment_pin,
    points,
    pricing_basis,
    stored_value,
)
from edge.cart import Cart
from edge.context import StoreContext
from edge.errors import EdgeError, conflict, invalid
from edge.stored_value import SpendOrder
from protocol import pricing
from protocol.campaigns import Campaign, Targeting
from protocol.events import (
    BirthdayGiftGiven,
    SaleDiscount,
    SaleFinalized,
    SaleLine,
    Tender,
    TillMessageShown,
    body_version,
)
from protocol.ids import member_qr
from protocol.money import MAX_AMOUNT
from protocol.pricing import CouponSpec, MemberContext, Quote, RedemptionTerms

EXTERNAL_TENDERS = ("cash", "bank_card", "external")


@dataclass(frozen=True)
class TenderRequest:
    kind: str  # "points" | "stored_value" | "cash" | "bank_card" | "external"
    amount: int = 0  # cash value, for every kind but points
    points: int = 0  # for kind == "points"
    sv_order: SpendOrder | None = None
    reference: str | None = None


@dataclass
class Priced:
    quote: Quote
    member: sqlite3.Row | None
    member_ctx: MemberContext | None
    coupon_specs: list[CouponSpec]


def default_terms(ctx: StoreContext) -> RedemptionTerms:
    p = ctx.config.points
    return RedemptionTerms(
        points_per_unit=p.redemption_points_per_unit, unit_value=p.redemption_unit_value,
        max_share_bp=p.redemption_max_share_bp, min_points=p.redemption_min_points,
    )


def member_context(row: sqlite3.Row | None) -> MemberContext | None:
    if row is None:
        return None
    bday = date.fromisoformat(row["birthday"]) if row["birthday"] else None
    return MemberContext(tier=row["tier"], birthday=bday, targeting=targeting(row))


def targeting(row: sqlite3.Row) -> Targeting:
    """What campaigns with an audience see of the member: every tag (the store's, HQ's, the
    rules'), the till segments, the RFM group and the stage the directory brought."""
    return Targeting(
        tags=frozenset(json.loads(row["tags"])) | frozenset(json.loads(row["hq_tags"])),
        segments=frozenset(s["segment_id"] for s in json.loads(row["till_segments"])),
        rfm_group=row["rfm_group"], stage=row["stage"], member_id=row["member_id"])


def price(
    conn: sqlite3.Connection, ctx: StoreContext, cart: Cart, campaigns: list[Campaign]
) -> Priced:
    member = members.get_member(conn, cart.member_id) if cart.member_id else None
    mctx = member_context(member)
    specs = [coupons.usable(conn, code, cart.member_id, ctx.today()) for code in cart.coupons]
    basket = cart.basket()
    # evaluate() is pure: the same basket, campaigns, member context, day and coupons give the
    # same quote, so the one the POS was just shown is reused (a tenth of a checkout).
    inputs = (basket, mctx, ctx.today(), specs)
    cached = cart.priced
    if cached is not None and cached[0][0] is campaigns and cached[0][1] == inputs:
        quote = cached[1]
    else:
        quote = pricing.evaluate(basket, campaigns, mctx, ctx.today(), specs)
        cart.priced = ((campaigns, inputs), quote)
    if member is not None and (member["birthday_gift_year"] or 0) >= ctx.today().year:
        quote = replace(quote, birthday_gifts=())  # one birthday gift a year
    return Priced(quote, member, mctx, specs)


def _line_dict(ql: pricing.QuotedLine, line: Any) -> dict[str, Any]:
    # Field by field, not dataclasses.asdict: asdict deep-copies and was a tenth of a checkout.
    return {"line_no": ql.line_no, "gross": ql.gross, "discount": ql.discount, "net": ql.net,
            "points": ql.points, "sku": line.sku, "name": line.name, "qty": line.qty,
            "unit_price": line.unit_price}


def quote_view(
    conn: sqlite3.Connection, ctx: StoreContext, cart: Cart, campaigns: list[Campaign]
) -> dict[str, Any]:
    """What the POS shows before payment: prices, promotions and what the member can pay with."""
    priced = price(conn, ctx, cart, campaigns)
    q = priced.quote
    out: dict[str, Any] = {
        "sale_id": cart.sale_id,
        "currency": ctx.currency,
        "member_id": cart.member_id,
        "lines": [
            _line_dict(ql, cart.lines[ql.line_no]) for ql in q.lines
        ],
        "discounts": [_discount_dict(d) for d in q.discounts],
        "subtotal": q.subtotal,
        "discount_total": q.discount_total,
        "total": q.total,
        "points_to_earn": q.points_earned if priced.member is not None else 0,
        "coupons": [{"coupon_code": c, "valid": c not in dict(q.coupon_errors),
                     "reason": dict(q.coupon_errors).get(c)} for c in cart.coupons],
        "birthday_gifts": [
            {"campaign_id": g.campaign_id, "points": g.points,
             "coupon": g.coupon.model_dump() if g.coupon is not None else None}
            for g in q.birthday_gifts
        ] if priced.member is not None else [],
        "points": None,
        "stored_value": None,
    }
    if priced.member is not None:
        mid = priced.member["member_id"]
        terms = pricing.redemption_terms(campaigns, priced.member_ctx, ctx.today(),
                                         default_terms(ctx))
        avail = points.available(conn, mid, ctx.today())
        p_allow, sv_allow = allowance.remaining(conn, ctx, mid)
        redeemable = min(pricing.max_redeemable_points(avail, q.total, terms), p_allow)
        redeemable = pricing.points_needed(pricing.points_value(redeemable, terms), terms)
        principal, bonus = stored_value.balances(conn, mid)
        out["points"] = {
            "balance": avail,
            "redeemable": redeemable,
            "redeemable_value": pricing.points_value(redeemable, terms),
            "offline_allowance": p_allow,
            "terms": asdict(terms),
        }
        out["stored_value"] = {
            "principal": principal, "bonus": bonus, "total": principal + bonus,
            "usable": min(principal + bonus, sv_allow, q.total), "offline_allowance": sv_allow,
        }
    return out


def _discount_dict(d: pricing.AppliedDiscount) -> dict[str, Any]:
    return {"kind": d.kind, "label": d.label, "amount": d.amount, "campaign_id": d.campaign_id,
            "coupon_code": d.coupon_code, "per_line": [list(p) for p in d.per_line]}


@dataclass
class _PlannedTender:
    kind: str
    amount: int
    points: int = 0
    sv_principal: int = 0
    sv_bonus: int = 0
    reference: str | None = None


def _plan_tenders(
    conn: sqlite3.Connection, ctx: StoreContext, priced: Priced, requests: list[TenderRequest],
    campaigns: list[Campaign],
) -> tuple[list[_PlannedTender], int]:
    """Check every tender and work out what each covers; (tenders, change due in cash)."""
    total = priced.quote.total
    if not requests:
        raise invalid("no_tender", "a sale needs at least one tender")
    if len(requests) > 20:
        raise invalid("too_many_tenders", "at most 20 tenders")
    member = priced.member
    left = total
    planned: list[_PlannedTender] = []
    change = 0
    # Member balances go first, whatever order the POS listed them in: the external tender
    # then covers exactly what is left, and cash change is computed on that.
    ordered = sorted(requests, key=lambda t: {"points": 0, "stored_value": 1}.get(t.kind, 2))
    for i, t in enumerate(ordered):
        if t.kind in ("points", "stored_value") and member is None:
            raise conflict("member_required", f"paying with {t.kind} needs an identified member")
        if t.kind == "points":
            terms = pricing.redemption_terms(campaigns, priced.member_ctx, ctx.today(),
                                             default_terms(ctx))
            if t.points <= 0:
                raise invalid("invalid_points", "points to redeem must be above zero")
            assert member is not None
            avail = points.available(conn, member["member_id"], ctx.today())
            if t.points > avail:
                raise conflict("insufficient_points", f"member has {avail} points",
                               available=avail, requested=t.points)
            cap = pricing.max_redeemable_points(avail, total, terms)
            if t.points > cap:
                raise conflict("points_over_limit",
                               f"at most {cap} points can pay for this sale", allowed=cap)
            value = min(pricing.points_value(t.points, terms), left)
            used = pricing.points_needed(value, terms)
            if value <= 0 or used <= 0:
                raise invalid("points_below_unit",
                              f"{t.points} points do not make a whole redemption unit")
            planned.append(_PlannedTender("points", value, points=used))
            left -= value
        elif t.kind == "stored_value":
            assert member is not None
            if t.amount <= 0 or t.amount > MAX_AMOUNT:
                raise invalid("invalid_amount", "stored value amount must be above zero")
            if t.amount > left:
                raise conflict("tender_over", f"stored value {t.amount} exceeds the {left} due")
            have_p, have_b = stored_value.balances(conn, member["member_id"])
            order = t.sv_order or ctx.config.stored_value.spend_order
            p, b = stored_value.split(t.amount, have_p, have_b, order)
            planned.append(_PlannedTender("stored_value", t.amount, sv_principal=p, sv_bonus=b))
            left -= t.amount
        elif t.kind in EXTERNAL_TENDERS:
            if t.amount <= 0 or t.amount > MAX_AMOUNT:
                raise invalid("invalid_amount", f"{t.kind} amount must be above zero")
            covers = min(t.amount, left)
            if t.amount > left:
                if t.kind != "cash" or i != len(ordered) - 1:
                    raise conflict("tender_over", f"{t.kind} {t.amount} exceeds the {left} due")
                change = t.amount - left
            if covers > 0:
                planned.append(_PlannedTender(t.kind, covers, reference=t.reference))
            left -= covers
        else:
            raise invalid("invalid_tender", f"unknown tender kind {t.kind!r}")
    if left > 0:
        raise conflict("tender_short", f"tenders leave {left} unpaid", due=left)
    if not planned:  # a zero-total sale (all discounted) still records how it was settled
        planned.append(_PlannedTender("external", 0))
    return planned, change


def finalize(
    conn: sqlite3.Connection, ctx: StoreContext, cart: Cart, requests: list[TenderRequest],
    campaigns: list[Campaign], *, pin_ok: bool | None = None,
) -> dict[str, Any]:
    """Settle ``cart``: must run inside one write transaction (``Database.write``).
    ``pin_ok``: the member's payment PIN was given and verified (``edge.payment_pin``)."""
    if not cart.lines:
        raise conflict("empty_sale", "a sale needs at least one line")
    priced = price(conn, ctx, cart, campaigns)
    q = priced.quote
    if q.coupon_errors:
        code, reason = q.coupon_errors[0]
        raise conflict("coupon_not_applicable", f"coupon {code}: {reason}", coupon_code=code)
    planned, change = _plan_tenders(conn, ctx, priced, requests, campaigns)
    member = priced.member
    member_id = member["member_id"] if member is not None else None
    if member is not None:
        payment_pin.require(
            conn, member, sum(t.amount for t in planned if t.kind in ("points", "stored_value")),
            pin_ok=pin_ok, cfg=ctx.config.payment_pin)
    sale_id = cart.sale_id
    earn = q.points_earned if member is not None else 0
    pts_spent = sum(t.points for t in planned)
    sv_spent = sum(t.amount for t in planned if t.kind == "stored_value")
    if member_id is not None:
        allowance.consume(conn, ctx, member_id, pts_spent, sv_spent)

    # The guide the POS named, else the member's own shopping guide.
    guide = cart.guide_id or (member["guide_id"] if member is not None else None)
    event = SaleFinalized(
        v=body_version(cart.cashier_id, guide),
        sale_id=sale_id, terminal_id=cart.terminal_id, member_id=member_id,
        cashier_id=cart.cashier_id, guide_id=guide,
        currency=ctx.currency,
        lines=[
            SaleLine(line_no=ql.line_no, sku=cart.lines[ql.line_no].sku,
                     name=cart.lines[ql.line_no].name, category=cart.lines[ql.line_no].category,
                     qty=cart.lines[ql.line_no].qty, unit_price=cart.lines[ql.line_no].unit_price,
                     gross=ql.gross, discount=ql.discount, net=ql.net,
                     points=ql.points if member is not None else 0)
            for ql in q.lines
        ],
        discounts=[SaleDiscount(kind=d.kind, label=d.label, amount=d.amount,
                                campaign_id=d.campaign_id, coupon_code=d.coupon_code)
                   for d in q.discounts],
        tenders=[Tender(kind=t.kind, amount=t.amount, points=t.points,
                        sv_principal=t.sv_principal, sv_bonus=t.sv_bonus, reference=t.reference)
                 for t in planned],
        subtotal=q.subtotal, discount_total=q.discount_total, total=q.total, points_earned=earn,
    )
    ev = outbox.append(conn, ctx, event)
    conn.execute(
        "INSERT INTO sales(sale_id, terminal_id, member_id, currency, subtotal, discount_total,"
        " total, points_earned, finalized_at, hlc, discounts, cashier_id, guide_id,"
        " pricing_basis) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (sale_id, cart.terminal_id, member_id, ctx.currency, q.subtotal, q.discount_total,
         q.total, earn, ctx.now().isoformat(), ev.hlc,
         json.dumps([_discount_dict(d) for d in q.discounts]), cart.cashier_id, guide,
         pricing_basis.dumps(q, campaigns, priced.member_ctx, ctx.today(),
                             priced.coupon_specs)),
    )
    conn.executemany(
        "INSERT INTO sale_lines(sale_id, line_no, sku, name, category, qty, unit_price, gross,"
        " discount, net, points) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [(sale_id, ln.line_no, ln.sku, ln.name, ln.category, ln.qty, ln.unit_price, ln.gross,
          ln.discount, ln.net, ln.points) for ln in event.lines],
    )
    conn.executemany(
        "INSERT INTO sale_tenders(sale_id, tender_no, kind, amount, points, sv_principal,"
        " sv_bonus, reference) VALUES (?,?,?,?,?,?,?,?)",
        [(sale_id, i, t.kind, t.amount, t.points, t.sv_principal, t.sv_bonus, t.reference)
         for i, t in enumerate(planned, 1)],
    )
    for t in planned:
        if t.kind == "points" and member_id is not None:
            points.redeem(conn, ctx, member_id, t.points, sale_id)
        elif t.kind == "stored_value" and member_id is not None:
            stored_value.spend(conn, ctx, member_id, sale_id, t.sv_principal, t.sv_bonus)
    for d in q.discounts:
        if d.coupon_code is not None:
            coupons.redeem(conn, ctx, d.coupon_code, sale_id, member_id, d.amount)
    issued: list[dict[str, Any]] = []
    if member_id is not None:
        lot = points.earn(conn, ctx, member_id, earn, reason="sale", sale_id=sale_id,
                          # None from the earning campaign means these points never expire
                          expires_after_days=q.points_expire_days)
        conn.execute("UPDATE sales SET earned_lot_id = ? WHERE sale_id = ?", (lot, sale_id))
        for gift in q.birthday_gifts:
            points.earn(conn, ctx, member_id, gift.points, reason="birthday",
                        expires_after_days=ctx.config.points.default_expiry_days)
            if gift.coupon is not None:
                code = coupons.issue(
                    conn, ctx, member_id=member_id, campaign_id=gift.campaign_id,
                    kind=gift.coupon.kind, value=gift.coupon.value,
                    min_spend=gift.coupon.min_spend, valid_days=gift.coupon.valid_days,
                )
                issued.append({"coupon_code": code, "campaign_id": gift.campaign_id})
        if q.birthday_gifts:
            # Every store hears of it through the hub: one gift a year, wherever it is given.
            outbox.append(conn, ctx, BirthdayGiftGiven(member_id=member_id,
                                                       year=ctx.today().year, sale_id=sale_id))
            conn.execute("UPDATE members SET birthday_gift_year = ? WHERE member_id = ?",
                         (ctx.today().year, member_id))
        conn.execute(
            "UPDATE members SET spend_total = spend_total + ?, visits = visits + 1,"
            " last_visit = ? WHERE member_id = ?",
            (q.total, ctx.today().isoformat(), member_id),
        )
        # Messages HQ left for the member print on this receipt; the hub hears they were
        # shown (and takes them out of the member's entry for every other till).
        for (key,) in conn.execute("SELECT key FROM till_messages WHERE member_id = ? AND"
                                   " shown_sale IS NULL ORDER BY key", (member_id,)).fetchall():
            conn.execute("UPDATE till_messages SET shown_sale = ? WHERE member_id = ? AND"
                         " key = ?", (sale_id, member_id, key))
            outbox.append(conn, ctx, TillMessageShown(member_id=member_id, key=key,
                                                      terminal_id=cart.terminal_id,
                                                      sale_id=sale_id))
    receipt = receipt_view(conn, ctx, sale_id)
    receipt["change"] = change
    receipt["coupons_issued"] = issued
    return receipt


def finalized_receipt(conn: sqlite3.Connection, ctx: StoreContext, sale_id: str
                      ) -> dict[str, Any] | None:
    """The receipt of ``sale_id`` if it was finalized here, else None."""
    if conn.execute("SELECT 1 FROM sales WHERE sale_id = ?", (sale_id,)).fetchone() is None:
        return None
    return receipt_view(conn, ctx, sale_id)


def receipt_view(conn: sqlite3.Connection, ctx: StoreContext, sale_id: str) -> dict[str, Any]:
    sale = conn.execute("SELECT * FROM sales WHERE sale_id = ?", (sale_id,)).fetchone()
    if sale is None:
        raise EdgeError("sale_not_found", "no finalized sale with this id", 404, sale_id=sale_id)
    lines = [dict(r) for r in conn.execute(
        "SELECT line_no, sku, name, category, qty, unit_price, gross, discount, net, points,"
        " refunded_qty, refunded_amount FROM sale_lines WHERE sale_id = ? ORDER BY line_no",
        (sale_id,))]
    tenders = [dict(r) for r in conn.execute(
        "SELECT tender_no, kind, amount, points, sv_principal, sv_bonus, reference,"
        " refunded_amount FROM sale_tenders WHERE sale_id = ? ORDER BY tender_no", (sale_id,))]
    out: dict[str, Any] = {
        "sale_id": sale_id,
        "store_id": ctx.store_id,
        "terminal_id": sale["terminal_id"],
        "cashier_id": sale["cashier_id"],
        "guide_id": sale["guide_id"],
        "finalized_at": sale["finalized_at"],
        "currency": sale["currency"],
        "lines": lines,
        "discounts": json.loads(sale["discounts"]),
        "tenders": tenders,
        "subtotal": sale["subtotal"],
        "discount_total": sale["discount_total"],
        "total": sale["total"],
        "refunded_total": sale["refunded_total"],
        "points_earned": sale["points_earned"],
        "member": None,
    }
    if sale["member_id"]:
        m = members.get_member(conn, sale["member_id"])
        points_now, principal, bonus = members.shown_balances(conn, m)
        out["member"] = {
            "member_id": m["member_id"], "member_code": m["member_code"],
            "qr": member_qr(m["member_code"]), "tier": m["tier"],
            "points_balance": points_now, "points_debt": m["points_debt"],
            "stored_value": principal + bonus,
        }
    out["messages"] = [{"text": r["text"], "coupon_code": r["coupon_code"]}
                       for r in conn.execute("SELECT text, coupon_code FROM till_messages"
                                             " WHERE shown_sale = ? ORDER BY key", (sale_id,))]
    return out
