"""Coupons: issued → redeemed | voided; a refund of the whole sale reopens a redeemed coupon."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, timedelta

from edge import outbox
from edge.context import StoreContext
from edge.errors import conflict, invalid, not_found
from protocol.events import CouponIssued, CouponRedeemed, CouponReopened, CouponVoided
from protocol.ids import COUPON_QR_PREFIX, coupon_code, is_coupon_code
from protocol.pricing import CouponSpec


def parse_code(raw: str) -> str:
    code = raw.strip().upper()
    if code.startswith(COUPON_QR_PREFIX):
        code = code[len(COUPON_QR_PREFIX):]
    if not is_coupon_code(code):
        raise invalid("invalid_coupon_code", f"{raw!r} is not a valid coupon code")
    return code


def issue(
    conn: sqlite3.Connection, ctx: StoreContext, *, member_id: str | None, campaign_id: str | None,
    kind: str, value: int, min_spend: int = 0, categories: tuple[str, ...] = (),
    valid_days: int | None = None,
) -> str:
    code = coupon_code()
    expires = ctx.today() + timedelta(days=valid_days) if valid_days else None
    ev = outbox.append(
        conn, ctx,
        CouponIssued(coupon_code=code, member_id=member_id, campaign_id=campaign_id,
                     kind=kind, value=value, min_spend=min_spend,
                     categories=list(categories), expires_on=expires),
    )
    conn.execute(
        "INSERT INTO coupons(coupon_code, member_id, campaign_id, kind, value, min_spend,"
        " categories, expires_on, state, updated_hlc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'issued', ?)",
        (code, member_id, campaign_id, kind, value, min_spend, json.dumps(list(categories)),
         expires.isoformat() if expires else None, ev.hlc),
    )
    return code


def usable(
    conn: sqlite3.Connection, code: str, member_id: str | None, today: date
) -> CouponSpec:
    """The coupon as the pricing evaluator wants it, or a clear reason it cannot be used."""
    row = conn.execute("SELECT * FROM coupons WHERE coupon_code = ?", (code,)).fetchone()
    if row is None:
        raise not_found("coupon_not_found", "no such coupon", coupon_code=code)
    if row["state"] == "redeemed":
        raise conflict("coupon_used", "this coupon has already been used", coupon_code=code)
    if row["state"] == "voided":
        raise conflict("coupon_voided", "this coupon was voided", coupon_code=code)
    if row["expires_on"] and row["expires_on"] < today.isoformat():
        raise conflict("coupon_expired", f"this coupon expired on {row['expires_on']}",
                       coupon_code=code)
    if row["member_id"] and row["member_id"] != member_id:
        raise conflict("coupon_not_yours", "this coupon belongs to another member",
                       coupon_code=code)
    return CouponSpec(code=code, kind=row["kind"], value=int(row["value"]),
                      min_spend=int(row["min_spend"]),
                      categories=tuple(json.loads(row["categories"])))


def redeem(
    conn: sqlite3.Connection, ctx: StoreContext, code: str, sale_id: str, member_id: str | None,
    amount: int,
) -> None:
    ev = outbox.append(
        conn, ctx,
        CouponRedeemed(coupon_code=code, sale_id=sale_id, member_id=member_id, amount=amount),
    )
    cur = conn.execute(
        "UPDATE coupons SET state = 'redeemed', sale_id = ?, updated_hlc = ?"
        " WHERE coupon_code = ? AND state = 'issued'",
        (sale_id, ev.hlc, code),
    )
    if cur.rowcount != 1:
        raise conflict("coupon_used", "this coupon has already been used", coupon_code=code)
    conn.execute("INSERT INTO sale_coupons(sale_id, coupon_code, amount) VALUES (?, ?, ?)",
                 (sale_id, code, amount))


def reopen(conn: sqlite3.Connection, ctx: StoreContext, code: str, sale_id: str,
           refund_id: str) -> None:
    ev = outbox.append(conn, ctx,
                       CouponReopened(coupon_code=code, sale_id=sale_id, refund_id=refund_id))
    conn.execute(
        "UPDATE coupons SET state = 'issued', sale_id = NULL, updated_hlc = ?"
        " WHERE coupon_code = ? AND state = 'redeemed' AND sale_id = ?",
        (ev.hlc, code, sale_id),
    )


def void(conn: sqlite3.Connection, ctx: StoreContext, code: str, reason: str) -> None:
    row = conn.execute("SELECT state FROM coupons WHERE coupon_code = ?", (code,)).fetchone()
    if row is None:
        raise not_found("coupon_not_found", "no such coupon", coupon_code=code)
    if row["state"] != "issued":
        raise conflict("coupon_not_open", f"a {row['state']} coupon cannot be voided")
    ev = outbox.append(conn, ctx, CouponVoided(coupon_code=code, reason=reason))
    conn.execute("UPDATE coupons SET state = 'voided', updated_hlc = ? WHERE coupon_code = ?",
                 (ev.hlc, code))
