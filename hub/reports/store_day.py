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
    mine = scope.store_ids(tx)
    if mine is not None and store_id not in mine:
        raise ServiceError("store_not_found", "no store with this id", 404, store_id=store_id)
    rows = tx.all(f"SELECT category, {', '.join(_SUMS)} FROM daily_rollups"
                  " WHERE store_id = ? AND day = ? ORDER BY category", (store_id, day))
    categories = [{"category": r[0], **{k: int(r[i + 1]) for i, k in enumerate(_SUMS)}}
                  for r in rows]
    totals = {k: sum(c[k] for c in categories) for k in _SUMS}
    totals["net_amount"] = totals["amount"] - totals["refund_amount"]
    return {"store_id": store_id, "day": day, "categories": categories, "totals": totals}
