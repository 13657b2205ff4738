"""Offline spending allowances (escrow) per member at this store.

A store may let a member spend points and stored value only up to what it holds in escrow for
them: two stores that are both offline can then never spend the same balance twice. Until the
hub grants an allowance, the configured default applies. What a refund gives back to the member
becomes spendable here again.
"""

from __future__ import annotations

import sqlite3

from edge.context import StoreContext
from edge.errors import conflict


def _row(conn: sqlite3.Connection, ctx: StoreContext, member_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM allowances WHERE member_id = ?", (member_id,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO allowances(member_id, points_limit, sv_limit) VALUES (?, ?, ?)",
            (member_id, ctx.config.allowance.points, ctx.config.allowance.stored_value),
        )
        row = conn.execute("SELECT * FROM allowances WHERE member_id = ?",
                           (member_id,)).fetchone()
    return row  # type: ignore[no-any-return]


def remaining(conn: sqlite3.Connection, ctx: StoreContext, member_id: str) -> tuple[int, int]:
    """(points, stored value) this store may still let the member spend."""
    row = conn.execute("SELECT * FROM allowances WHERE member_id = ?", (member_id,)).fetchone()
    if row is None:
        return ctx.config.allowance.points, ctx.config.allowance.stored_value
    return (max(0, row["points_limit"] - row["points_used"]),
            max(0, row["sv_limit"] - row["sv_used"]))


def consume(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, stored_value: int
) -> None:
    if points == 0 and stored_value == 0:
        return  # nothing spent: no allowance row to create or touch
    row = _row(conn, ctx, member_id)
    p_left = row["points_limit"] - row["points_used"]
    sv_left = row["sv_limit"] - row["sv_used"]
    if points > p_left:
        raise conflict(
            "allowance_exceeded",
            f"this store may let the member spend {max(0, p_left)} more points offline;"
            " more needs online authorisation by the hub",
            what="points", allowed=max(0, p_left), requested=points,
        )
    if stored_value > sv_left:
        raise conflict(
            "allowance_exceeded",
            f"this store may let the member spend {max(0, sv_left)} more stored value offline;"
            " more needs online authorisation by the hub",
            what="stored_value", allowed=max(0, sv_left), requested=stored_value,
        )
    conn.execute(
        "UPDATE allowances SET points_used = points_used + ?, sv_used = sv_used + ?"
        " WHERE member_id = ?",
        (points, stored_value, member_id),
    )


def give_back(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, stored_value: int
) -> None:
    _row(conn, ctx, member_id)
    conn.execute(
        "UPDATE allowances SET points_used = max(0, points_used - ?),"
        " sv_used = max(0, sv_used - ?) WHERE member_id = ?",
        (points, stored_value, member_id),
    )


def grant(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int,
          stored_value: int) -> None:
    """Raise the member's allowance here by what the hub authorised online."""
    _row(conn, ctx, member_id)
    conn.execute(
        "UPDATE allowances SET points_limit = points_limit + ?, sv_limit = sv_limit + ?,"
        " granted_by = 'hub' WHERE member_id = ?", (points, stored_value, member_id))
