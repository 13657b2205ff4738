"""Offline spending allowances (escrow) per member at this store.

A store may let a member spend points and stored value only up to what it holds in escrow for
them: two stores that are both offline can then never spend the same balance twice. What a
refund gives back to the member becomes spendable here again.

Where the limit comes from, for points and for stored value each:

- Until the hub has granted this store anything for the member, the configured default
  (``[allowance]`` in the edge config) applies.
- Once it has, the limit is the hub's cumulative grant to this store (the standing allowance it
  tops up by itself and what it authorised online, together) plus ``base``; the default no
  longer applies. ``used`` is the member's cumulative spending here (refunds give back), the
  hub's ``spent`` is the part of it the hub has acknowledged, and so ``limit - used`` is what is
  left of the escrow the hub holds for this store — never more. ``base`` is spending the hub's
  books never count (what was spent under the default before schema v8); 0 for newer rows.
- The hub's figure arrives by two roads in any order: the member's directory entry and the
  reply to an online authorisation. Both are cumulative totals that only grow, so the row keeps
  the largest seen (``hub_*_granted``) and the limit follows it: applying a figure twice, or an
  older one after a newer one, changes nothing, and the limit never goes down (except once,
  from the default to the hub's first grant).
- A merge at the hub moves the merged id's grants onto the member it became (per store), so
  this store hears a combined cumulative grant in the member's entry. The merged id's row here
  is folded into the member's first (``fold``): its spending counts against the combined
  limit, or the store could spend that part again. Rows are kept under the member's current id
  (every function here follows merges), so a cart opened under the old id spends from it too.
"""

from __future__ import annotations

import sqlite3

from edge.context import StoreContext
from edge.errors import conflict
from edge.members import resolve


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
    member_id = resolve(conn, member_id)
    row = conn.execute("SELECT * FROM allowances WHERE member_id = ?", (member_id,)).fetchone()
    if row is None:
        return ctx.config.allowance.points, ctx.config.allowance.stored_value
    return (max(0, row["points_limit"] - row["points_used"]),
            max(0, row["sv_limit"] - row["sv_used"]))


def _online_request(row: sqlite3.Row, kind: str, requested: int) -> int:
    """What to ask the hub to authorise so that ``requested`` fits here afterwards.

    After a grant the limit is the hub's cumulative grant + base, also when it is the first
    grant and the configured default was in force until then: what is left of the default is
    gone. So the request is measured against what is left under the hub's figure alone, not
    against ``allowed``. Spending here beyond the hub's grants (under the default) is the hub's
    to cover: it grows the grant past what it has seen spent before it adds the request."""
    left: int = row[f"hub_{kind}_granted"] + row[f"{kind}_base"] - row[f"{kind}_used"]
    return max(1, requested - max(0, left))


def consume(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, stored_value: int
) -> None:
    """Count spending against the allowance, or refuse with ``allowance_exceeded``: details
    ``allowed`` (what may still be spent offline), ``requested`` and ``online_request`` (what the
    hub would have to authorise for the request to pass)."""
    if points == 0 and stored_value == 0:
        return  # nothing spent: no allowance row to create or touch
    member_id = resolve(conn, member_id)
    row = _row(conn, ctx, member_id)
    p_left = row["points_limit"] - row["points_used"]
    sv_left = row["sv_limit"] - row["sv_used"]
    if points > p_left:
        raise conflict(
            "allowance_exceeded",
            f"this store may let the member spend {max(0, p_left)} more points offline;"
            " more needs online authorisation by the hub",
            what="points", allowed=max(0, p_left), requested=points,
            online_request=_online_request(row, "points", points),
        )
    if stored_value > sv_left:
        raise conflict(
            "allowance_exceeded",
            f"this store may let the member spend {max(0, sv_left)} more stored value offline;"
            " more needs online authorisation by the hub",
            what="stored_value", allowed=max(0, sv_left), requested=stored_value,
            online_request=_online_request(row, "sv", stored_value),
        )
    conn.execute(
        "UPDATE allowances SET points_used = points_used + ?, sv_used = sv_used + ?"
        " WHERE member_id = ?",
        (points, stored_value, member_id),
    )


def give_back(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, stored_value: int
) -> None:
    count_used(conn, ctx, member_id, -points, -stored_value)


def count_used(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, stored_value: int
) -> None:
    """Add to what was spent here (negative: given back) without a check: spending that
    already happened (``give_back``, or a lost box's, taken back by ``edge.recovery``)."""
    member_id = resolve(conn, member_id)
    _row(conn, ctx, member_id)
    conn.execute(
        "UPDATE allowances SET points_used = max(0, points_used + ?),"
        " sv_used = max(0, sv_used + ?) WHERE member_id = ?",
        (points, stored_value, member_id),
    )


def grant(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int,
          stored_value: int, *, points_total: int = 0, sv_total: int = 0) -> None:
    """Raise the member's allowance here by what the hub authorised online.

    ``points_total`` / ``sv_total`` are this store's cumulative grant after the authorisation
    (``RpcReply.points_granted_total`` / ``sv_granted_total``): folded in like the directory's
    figure, so the reply and the directory may arrive in either order. Without them (a hub that
    predates standing allowances) the increment is added to the limit, as it always was.
    The hub grants to the member an id became (it follows merges), and so does this.
    """
    member_id = resolve(conn, member_id)
    apply_hub_grant(conn, ctx, member_id, points_total, sv_total)
    add_points = points if points_total == 0 else 0
    add_sv = stored_value if sv_total == 0 else 0
    if add_points or add_sv:
        _row(conn, ctx, member_id)
        conn.execute(
            "UPDATE allowances SET points_limit = points_limit + ?, sv_limit = sv_limit + ?,"
            " granted_by = 'hub' WHERE member_id = ?", (add_points, add_sv, member_id))


def _folded(limit: int, known: int, total: int, base: int) -> int:
    """The limit after learning the hub's cumulative grant ``total`` (``known``: the largest
    seen before, 0 if none)."""
    if total <= known:
        return limit  # nothing new: the same figure again, or an older one
    if known == 0:
        return total + base  # the hub's first grant: the configured default no longer applies
    return max(limit, total + base)


def apply_hub_grant(conn: sqlite3.Connection, ctx: StoreContext, member_id: str,
                    points_total: int, sv_total: int) -> None:
    """Fold in the hub's cumulative grant to this store for the member (from its directory
    entry or an online reply; ``member_id`` not merged into another); idempotent and
    monotonic, see the module's docstring."""
    if points_total <= 0 and sv_total <= 0:
        return  # the hub has granted this store nothing: the configured default stands
    row = _row(conn, ctx, member_id)
    if points_total <= row["hub_points_granted"] and sv_total <= row["hub_sv_granted"]:
        return  # nothing new (a snapshot or a resent entry): no row rewritten
    conn.execute(
        "UPDATE allowances SET points_limit = ?, sv_limit = ?,"
        " hub_points_granted = max(hub_points_granted, ?), hub_sv_granted = max(hub_sv_granted, ?),"
        " granted_by = 'hub' WHERE member_id = ?",
        (_folded(row["points_limit"], row["hub_points_granted"], points_total, row["points_base"]),
         _folded(row["sv_limit"], row["hub_sv_granted"], sv_total, row["sv_base"]),
         points_total, sv_total, member_id))


def fold(conn: sqlite3.Connection, ctx: StoreContext, alias: str, member_id: str) -> None:
    """``alias`` was merged into ``member_id``: its row here joins the member's. Spending adds
    up (and spending the hub's books never count); the hub's cumulative grants add up as the
    hub's own rows did when it merged them, and the limit follows them — or, if the hub has
    granted neither anything here, the member's configured default stays, now with the alias's
    spending counted against it. Once folded, the alias has no row: folding again (the same
    entry applied twice, or the merge heard through both ids' entries) changes nothing."""
    a = conn.execute("SELECT * FROM allowances WHERE member_id = ?", (alias,)).fetchone()
    if a is None or alias == member_id:
        return
    m = _row(conn, ctx, member_id)
    merged: dict[str, int] = {}
    for kind in ("points", "sv"):
        known = m[f"hub_{kind}_granted"] + a[f"hub_{kind}_granted"]
        base = m[f"{kind}_base"] + a[f"{kind}_base"]
        merged[f"hub_{kind}_granted"], merged[f"{kind}_base"] = known, base
        merged[f"{kind}_used"] = m[f"{kind}_used"] + a[f"{kind}_used"]
        merged[f"{kind}_limit"] = known + base if known > 0 else m[f"{kind}_limit"]
    by_hub = merged["hub_points_granted"] > 0 or merged["hub_sv_granted"] > 0
    conn.execute(
        "UPDATE allowances SET points_limit = :points_limit, points_used = :points_used,"
        " points_base = :points_base, hub_points_granted = :hub_points_granted,"
        " sv_limit = :sv_limit, sv_used = :sv_used, sv_base = :sv_base,"
        " hub_sv_granted = :hub_sv_granted,"
        " granted_by = CASE WHEN :by_hub THEN 'hub' ELSE granted_by END"
        " WHERE member_id = :member_id",
        {**merged, "by_hub": by_hub, "member_id": member_id})
    conn.execute("DELETE FROM allowances WHERE member_id = ?", (alias,))
