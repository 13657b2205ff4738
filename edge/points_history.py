"""A member's points history (积分明细) as this store knows it: its own points ledger.

Other stores' earning and spending are not in it (the hub sends their sums, not their rows):
the history is this store's view, and the balance beside it adds the other stores' shares.
Entries of members merged into this one (the same phone registered twice) are included.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge import members
from edge.context import StoreContext
from protocol.hlc import wall_ms


def history(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, *, limit: int,
            before: int | None) -> dict[str, Any]:
    """Newest first, ``limit`` entries with an entry id below ``before`` (the previous page's
    ``next_before``); an unknown member is ``member_not_found``."""
    m = members.get_member(conn, member_id)
    points, _, _ = members.shown_balances(conn, m)
    ids = [member_id, *(r[0] for r in conn.execute(
        "SELECT member_id FROM members WHERE merged_into = ?", (member_id,)))]
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        "SELECT l.entry_id, l.delta, l.reason, l.ref_id, l.hlc, p.expires_on,"
        " r.refund_id, r.sale_id AS refunded_sale"
        " FROM points_ledger l LEFT JOIN point_lots p ON p.lot_id = l.lot_id"
        " LEFT JOIN refunds r ON r.refund_id = l.ref_id"
        f" WHERE l.member_id IN ({marks}) AND l.entry_id < ?"
        " ORDER BY l.entry_id DESC LIMIT ?",
        (*ids, before if before is not None else 2**63 - 1, limit + 1)).fetchall()
    zone = ZoneInfo(ctx.config.store.timezone)
    entries = []
    for r in rows[:limit]:
        at = datetime.fromtimestamp(wall_ms(r["hlc"]) / 1000, zone)
        entries.append({
            "entry_id": r["entry_id"], "date": at.date().isoformat(),
            "at": at.isoformat(timespec="seconds"), "delta": r["delta"], "reason": r["reason"],
            "sale_id": r["refunded_sale"] if r["refund_id"] is not None else r["ref_id"],
            "refund_id": r["refund_id"], "lot_expires_on": r["expires_on"]})
    more = len(rows) > limit
    return {
        "member_id": member_id, "store_id": ctx.store_id,
        "balance": {"points": points, "points_here": m["points_balance"],
                    "points_debt": m["points_debt"]},
        "entries": entries,
        "next_before": entries[-1]["entry_id"] if more else None,
    }
