"""One store's day (its own calendar day), by category, from the daily rollups: what a store
manager reads in the morning, and a region manager for each of their stores."""

from __future__ import annotations

from typing import Any

from hub.auth.scope import Scope
from hub.core.db import Tx
from protocol.errors import ServiceError

_SUMS = ("sales", "items", "gross", "discount", "amount", "member_amount", "refunds",
         "refund_items", "refund_amount")


def store_day(tx: Tx, scope: Scope, store_id: str, day: str) -> dict[str, Any]:
    scope.require("reports.read")
    # One query for everyone: the store if the scope covers it, and its day's rows. No row:
    # no such store for this caller (404, as for a store that does not exist); one row with
    # no category: the store sold nothing that day.
    where, params = scope.store_filter("s")
    rows = tx.all(f"SELECT r.category, {', '.join(f'r.{c}' for c in _SUMS)} FROM (SELECT 1 AS"
                  f" ok FROM stores s WHERE s.store_id = ? AND {where}) v LEFT JOIN"
                  " daily_rollups r ON r.store_id = ? AND r.day = ? ORDER BY r.category",
                  (store_id, *params, store_id, day))
    if not rows:
        raise ServiceError("store_not_found", "no store with this id", 404, store_id=store_id)
    categories = [{"category": r[0], **{k: int(r[i + 1]) for i, k in enumerate(_SUMS)}}
                  for r in rows if r[0] is not None]
    totals = {k: sum(c[k] for c in categories) for k in _SUMS}
    totals["net_amount"] = totals["amount"] - totals["refund_amount"]
    return {"store_id": store_id, "day": day, "categories": categories, "totals": totals}
