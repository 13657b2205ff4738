"""The day's receipts at this store: sales finalized and refunds made on one store-local date.

Sales and refunds are recorded with the store's local time (ISO with its offset), so the first
ten characters are the store's calendar day (indexed since schema 9). Entries come oldest first,
so a page already read stays the same while the day goes on; the totals cover the whole day.
"""

from __future__ import annotations

import sqlite3
from datetime import date
from typing import Any

from edge import paging
from edge.context import StoreContext

_DAY = """
    SELECT 'sale' AS kind, sale_id AS id, sale_id, terminal_id, member_id, total AS amount,
           finalized_at AS at
      FROM sales WHERE substr(finalized_at, 1, 10) = :day
    UNION ALL
    SELECT 'refund', r.refund_id, r.sale_id, r.terminal_id, s.member_id, r.amount, r.created_at
      FROM refunds r JOIN sales s ON s.sale_id = r.sale_id
     WHERE substr(r.created_at, 1, 10) = :day
"""


def day(conn: sqlite3.Connection, ctx: StoreContext, on: date, *, limit: int,
        offset: int) -> dict[str, Any]:
    params = {"day": on.isoformat(), "limit": limit, "offset": offset}
    entries = [dict(r) for r in conn.execute(
        f"SELECT * FROM ({_DAY}) ORDER BY at, id LIMIT :limit OFFSET :offset", params)]
    sales_n, sales_sum = conn.execute(
        "SELECT count(*), coalesce(sum(total), 0) FROM sales"
        " WHERE substr(finalized_at, 1, 10) = :day", params).fetchone()
    refunds_n, refunds_sum = conn.execute(
        "SELECT count(*), coalesce(sum(amount), 0) FROM refunds"
        " WHERE substr(created_at, 1, 10) = :day", params).fetchone()
    total = sales_n + refunds_n
    return {
        "date": on.isoformat(), "store_id": ctx.store_id, "currency": ctx.currency,
        "entries": entries,
        "next_offset": paging.next_offset(offset, len(entries), total),
        "totals": {"sales": sales_n, "sales_amount": sales_sum, "refunds": refunds_n,
                   "refunds_amount": refunds_sum, "net_amount": sales_sum - refunds_sum},
    }
