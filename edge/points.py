"""Points as lots and a ledger.

Every change is a ledger row (signed delta) plus the matching lot change, in the caller's
transaction; ``members.points_balance`` is the running sum of the ledger and always equals the
sum of ``remaining`` over the member's lots. Redemption draws from the lot that expires soonest;
lots without expiry go last.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta

from edge import outbox
from edge.context import StoreContext
from edge.errors import conflict
from protocol.events import LotDraw, PointsAdjusted, PointsEarned, PointsExpired, PointsRedeemed
from protocol.ids import uuid7


def ledger_entry(
    conn: sqlite3.Connection, member_id: str, delta: int, reason: str, lot_id: str | None,
    ref_id: str | None, hlc: int, balance_delta: int | None = None,
) -> None:
    conn.execute(
        "INSERT INTO points_ledger(member_id, delta, reason, lot_id, ref_id, hlc)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (member_id, delta, reason, lot_id, ref_id, hlc),
    )
    conn.execute(
        "UPDATE members SET points_balance = points_balance + ? WHERE member_id = ?",
        (delta if balance_delta is None else balance_delta, member_id),
    )


# Points the member holds in other stores, as one pseudo-lot drawn after every local lot.
REMOTE_LOT = "remote"


def remote_available(conn: sqlite3.Connection, member_id: str) -> int:
    """Other stores' points (as the hub last reported) not yet spent here."""
    row = conn.execute("SELECT remote_points - remote_points_used FROM members"
                       " WHERE member_id = ?", (member_id,)).fetchone()
    return max(0, int(row[0])) if row is not None else 0


def available(conn: sqlite3.Connection, member_id: str, today: date, *,
              remote: bool = True) -> int:
    """Points the member can spend today: lots already past their date do not count; points
    held in other stores do, unless ``remote`` is false."""
    row = conn.execute(
        "SELECT coalesce(sum(remaining), 0) FROM point_lots WHERE member_id = ? AND remaining > 0"
        " AND (expires_on IS NULL OR expires_on >= ?)",
        (member_id, today.isoformat()),
    ).fetchone()
    return int(row[0]) + (remote_available(conn, member_id) if remote else 0)


def earn(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, *, reason: str,
    expires_after_days: int | None, sale_id: str | None = None,
) -> str | None:
    """Credit ``points`` as a new lot; an outstanding debt (refund shortfall) is paid first."""
    if points <= 0:
        return None
    today = ctx.today()
    lot_id = uuid7()
    expires = (
        (today + timedelta(days=expires_after_days)).isoformat() if expires_after_days else None
    )
    ev = outbox.append(
        conn, ctx,
        PointsEarned(member_id=member_id, lot_id=lot_id, points=points,
                     expires_on=date.fromisoformat(expires) if expires else None,
                     reason=reason, sale_id=sale_id),
    )
    conn.execute(
        "INSERT INTO point_lots(lot_id, member_id, earned_on, expires_on, points, remaining,"
        " reason, sale_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (lot_id, member_id, today.isoformat(), expires, points, points, reason, sale_id),
    )
    ledger_entry(conn, member_id, points, "earned", lot_id, sale_id, ev.hlc)
    debt = int(conn.execute("SELECT points_debt FROM members WHERE member_id = ?",
                            (member_id,)).fetchone()[0])
    repay = min(debt, points)
    if repay:
        ev = outbox.append(
            conn, ctx,
            PointsAdjusted(member_id=member_id, delta=-repay, reason="debt_repayment",
                           lots=[LotDraw(lot_id=lot_id, points=repay)], sale_id=sale_id),
        )
        conn.execute("UPDATE point_lots SET remaining = remaining - ? WHERE lot_id = ?",
                     (repay, lot_id))
        conn.execute("UPDATE members SET points_debt = points_debt - ? WHERE member_id = ?",
                     (repay, member_id))
        ledger_entry(conn, member_id, -repay, "debt_repayment", lot_id, sale_id, ev.hlc)
    return lot_id


def _draw(
    conn: sqlite3.Connection, member_id: str, points: int, today: date,
    first_lot: str | None = None, remote: bool = False,
) -> list[tuple[str, int]]:
    """Take ``points`` from open lots, soonest expiry first (``first_lot`` before all), then,
    when ``remote``, from the points the member holds in other stores."""
    rows = conn.execute(
        "SELECT lot_id, remaining FROM point_lots WHERE member_id = ? AND remaining > 0"
        " AND (expires_on IS NULL OR expires_on >= ?)"
        " ORDER BY lot_id != coalesce(?, ''), expires_on IS NULL, expires_on, lot_id",
        (member_id, today.isoformat(), first_lot),
    ).fetchall()
    draws: list[tuple[str, int]] = []
    left = points
    for lot_id, remaining in rows:
        if left == 0:
            break
        take = min(left, int(remaining))
        draws.append((str(lot_id), take))
        left -= take
    if left and remote:
        take = min(left, remote_available(conn, member_id))
        if take:
            draws.append((REMOTE_LOT, take))
            left -= take
    if left:
        raise conflict("insufficient_points", f"member has {points - left} points to spend,"
                       f" {points} asked", available=points - left, requested=points)
    for lot_id, take in draws:
        if lot_id == REMOTE_LOT:
            conn.execute("UPDATE members SET remote_points_used = remote_points_used + ?"
                         " WHERE member_id = ?", (take, member_id))
        else:
            conn.execute("UPDATE point_lots SET remaining = remaining - ? WHERE lot_id = ?",
                         (take, lot_id))
    return draws


def redeem(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, sale_id: str
) -> list[tuple[str, int]]:
    draws = _draw(conn, member_id, points, ctx.today(), remote=True)
    ev = outbox.append(
        conn, ctx,
        PointsRedeemed(member_id=member_id, points=points, sale_id=sale_id,
                       lots=[LotDraw(lot_id=lot, points=p) for lot, p in draws]),
    )
    conn.executemany(
        "INSERT INTO redemption_draws(sale_id, lot_id, points) VALUES (?, ?, ?)",
        [(sale_id, lot, p) for lot, p in draws],
    )
    # The ledger takes the whole redemption; the local balance only what local lots gave.
    remote_part = sum(p for lot, p in draws if lot == REMOTE_LOT)
    ledger_entry(conn, member_id, -points, "redeemed", None, sale_id, ev.hlc,
            balance_delta=-(points - remote_part))
    return draws


def return_redeemed(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, sale_id: str, points: int,
    refund_id: str,
) -> None:
    """Give ``points`` of a sale's redemption back to the lots they came from.

    Latest-expiring draws are returned first, so what comes back lives as long as it can.
    A lot that expired meanwhile takes its points back and the next expiry run expires them.
    """
    if points <= 0:
        return
    # Points drawn from other stores go back first (they are the member's everywhere), then
    # the latest-expiring local lots.
    rows = conn.execute(
        "SELECT d.lot_id, d.points - d.returned FROM redemption_draws d"
        " LEFT JOIN point_lots l ON l.lot_id = d.lot_id WHERE d.sale_id = ?"
        " AND d.points > d.returned AND (l.lot_id IS NOT NULL OR d.lot_id = ?)"
        " ORDER BY d.lot_id = ? DESC, l.expires_on IS NULL DESC, l.expires_on DESC, d.lot_id",
        (sale_id, REMOTE_LOT, REMOTE_LOT),
    ).fetchall()
    left, back = points, []
    for lot_id, open_points in rows:
        give = min(left, int(open_points))
        if give:
            back.append((str(lot_id), give))
            left -= give
    if left:  # the sale's draws are the bound: callers compute ``points`` from them
        raise conflict("refund_exceeds_sale", "more points to return than the sale redeemed")
    ev = outbox.append(
        conn, ctx,
        PointsAdjusted(member_id=member_id, delta=points, reason="refund_return",
                       lots=[LotDraw(lot_id=lot, points=p) for lot, p in back],
                       sale_id=sale_id, refund_id=refund_id),
    )
    for lot_id, give in back:
        if lot_id == REMOTE_LOT:
            conn.execute("UPDATE members SET remote_points_used = remote_points_used - ?"
                         " WHERE member_id = ?", (give, member_id))
        else:
            conn.execute("UPDATE point_lots SET remaining = remaining + ? WHERE lot_id = ?",
                         (give, lot_id))
        conn.execute("UPDATE redemption_draws SET returned = returned + ? WHERE sale_id = ?"
                     " AND lot_id = ?", (give, sale_id, lot_id))
    remote_part = sum(g for lot, g in back if lot == REMOTE_LOT)
    ledger_entry(conn, member_id, points, "refund_return", None, refund_id, ev.hlc,
            balance_delta=points - remote_part)


def reverse_earned(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, points: int, sale_id: str,
    refund_id: str, earned_lot: str | None,
) -> tuple[int, int]:
    """Take back ``points`` a refunded sale had earned: (taken, shortfall).

    The sale's own lot goes first. What the member has already spent cannot be taken from the
    balance; it becomes ``points_debt``, paid from later earnings, never silently dropped.
    """
    if points <= 0:
        return 0, 0
    today = ctx.today()
    have = available(conn, member_id, today, remote=False)  # this store's own lots only
    take = min(points, have)
    shortfall = points - take
    draws = _draw(conn, member_id, take, today, first_lot=earned_lot) if take else []
    ev = outbox.append(
        conn, ctx,
        PointsAdjusted(member_id=member_id, delta=-take, reason="refund_reversal",
                       lots=[LotDraw(lot_id=lot, points=p) for lot, p in draws],
                       shortfall=shortfall, sale_id=sale_id, refund_id=refund_id),
    )
    if take:
        ledger_entry(conn, member_id, -take, "refund_reversal", None, refund_id, ev.hlc)
    if shortfall:
        conn.execute("UPDATE members SET points_debt = points_debt + ? WHERE member_id = ?",
                     (shortfall, member_id))
    return take, shortfall


def expire_due(conn: sqlite3.Connection, ctx: StoreContext, limit: int = 5000) -> int:
    """Expire lots whose date has passed; returns how many points expired in this pass."""
    today = ctx.today().isoformat()
    rows = conn.execute(
        "SELECT lot_id, member_id, remaining FROM point_lots WHERE remaining > 0"
        " AND expires_on IS NOT NULL AND expires_on < ? ORDER BY expires_on, lot_id LIMIT ?",
        (today, limit),
    ).fetchall()
    total = 0
    for lot_id, member_id, remaining in rows:
        ev = outbox.append(
            conn, ctx, PointsExpired(member_id=member_id, lot_id=lot_id, points=remaining)
        )
        conn.execute("UPDATE point_lots SET remaining = 0 WHERE lot_id = ?", (lot_id,))
        ledger_entry(conn, member_id, -int(remaining), "expired", lot_id, None, ev.hlc)
        total += int(remaining)
    return total
