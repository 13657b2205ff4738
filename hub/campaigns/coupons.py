"""Coupons at the hub: the ones HQ issues to a member, and the conflicts the merge records when
one coupon is redeemed twice."""

from __future__ import annotations

from datetime import date
from typing import Any

from hub.core.db import Tx
from hub.ledger.hq_events import Merge, append, envelope, live_member
from hub.stores.registry import HQ
from protocol.events import CouponIssued, CouponKind
from protocol.ids import coupon_code, coupon_qr

MAX_PERCENT_OFF = 10_000  # basis points: 100 %


def conflicts(tx: Tx) -> list[dict[str, Any]]:
    """Every later redemption of a single-use coupon, with the one that was kept."""
    return [dict(r) for r in tx.all(
        "SELECT coupon_code, store_id, sale_id, hlc, amount, kept_store, kept_sale"
        " FROM coupon_conflicts ORDER BY coupon_code, hlc")]


def issue(tx: Tx, member_id: str, *, kind: CouponKind, value: int, min_spend: int,
          categories: list[str], expires_on: date | None, campaign_id: str | None,
          merge: Merge) -> dict[str, Any]:
    """A single-use coupon for the member, as a ``coupon.issued`` event of the HQ stream. Its
    code is minted as a store mints one (``protocol.ids.coupon_code``: 60 random bits and a
    check character, so a till validates it offline) and drawn again in the rare case the hub
    already knows it from any stream. Stores learn of it with the member's directory entry
    and redeem it offline; the hub arbitrates a second redemption like any coupon's."""
    member = live_member(tx, member_id)
    code = coupon_code()
    while _known(tx, code):
        code = coupon_code()
    events, _result = append(tx, HQ, [CouponIssued(
        coupon_code=code, member_id=member, campaign_id=campaign_id, kind=kind, value=value,
        min_spend=min_spend, categories=categories, expires_on=expires_on)], merge)
    return {"coupon_code": code, "qr": coupon_qr(code), "member_id": member,
            "campaign_id": campaign_id, "kind": kind, "value": value, "min_spend": min_spend,
            "categories": categories,
            "expires_on": expires_on.isoformat() if expires_on else None,
            **envelope(events[0])}


def _known(tx: Tx, code: str) -> bool:
    return tx.scalar("SELECT 1 FROM coupons WHERE coupon_code = ? UNION ALL"
                     " SELECT 1 FROM coupon_redemptions WHERE coupon_code = ?",
                     (code, code)) is not None
