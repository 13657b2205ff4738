"""What was changed of a member at this store's tills, where and by whom: the record a store
manager or an auditor reads back (``GET /v1/members/{id}/changes``). Written in the same
transaction as the change itself; a PIN's value or hash is never written here."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from edge.context import StoreContext


def record(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, what: str,
           detail: dict[str, Any], *, terminal_id: str | None, cashier_id: str | None) -> None:
    """``what``: ``profile`` (detail: field -> [before, after]), ``card`` or ``pin``."""
    conn.execute(
        "INSERT INTO member_changes(member_id, at, terminal_id, cashier_id, what, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (member_id, ctx.now().isoformat(), terminal_id, cashier_id, what,
         json.dumps(detail, ensure_ascii=False, default=str)))


def history(conn: sqlite3.Connection, member_id: str, *, limit: int,
            before: int | None) -> dict[str, Any]:
    """Newest first, a page at a time: ``next_before`` continues where this page ended."""
    rows = conn.execute(
        "SELECT change_id, at, terminal_id, cashier_id, what, detail FROM member_changes"
        " WHERE member_id = ? AND change_id < ? ORDER BY change_id DESC LIMIT ?",
        (member_id, before if before is not None else 2**63 - 1, limit + 1)).fetchall()
    page = rows[:limit]
    return {
        "member_id": member_id,
        "changes": [{"change_id": r["change_id"], "at": r["at"], "terminal_id": r["terminal_id"],
                     "cashier_id": r["cashier_id"], "what": r["what"],
                     "detail": json.loads(r["detail"])} for r in page],
        "next_before": page[-1]["change_id"] if len(rows) > limit else None,
    }
