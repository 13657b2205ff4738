"""Coupons at the hub: the conflicts the merge records when one coupon is redeemed twice."""

from __future__ import annotations

from typing import Any

from hub.core.db import Tx


def conflicts(tx: Tx) -> list[dict[str, Any]]:
    """Every later redemption of a single-use coupon, with the one that was kept."""
    return [dict(r) for r in tx.all(
        "SELECT coupon_code, store_id, sale_id, hlc, amount, kept_store, kept_sale"
        " FROM coupon_conflicts ORDER BY coupon_code, hlc")]
