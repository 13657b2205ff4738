"""A restored box takes back into its own books what its lost predecessor did after the backup.

The hub holds those events (``hub.ledger.recovery``); this store's ledgers do not, and a
member's balance here is this store's own ledgers plus the other stores' shares, so without
them the member would be short here of what HQ and every other store show. Each event is
replayed as the code that first wrote it did — the same lots drawn, the same points taken
from other stores, the same coupon used — but sends nothing: the hub has it already.

Progress is kept in ``meta`` with each page (``recovery_after:<epoch>``), so a box that restarts
midway goes on from there and never replays an event twice.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge import allowance, stored_value
from edge.backup import RESTORED_KEY
from edge.context import StoreContext
from edge.outbox import meta_get, meta_set
from edge.points import REMOTE_LOT, ledger_entry
from protocol.events import (
    CouponIssued,
    CouponRedeemed,
    CouponReopened,
    CouponVoided,
    Event,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    RefundCompleted,
    SaleFinalized,
    StoredValueRefunded,
    StoredValueSpent,
    StoredValueToppedUp,
)
from protocol.hlc import wall_ms
from protocol.sync import RecoveryPage

# The last seq of an old epoch taken back, per epoch: a box restored twice (from a backup of a
# box that had itself been restored) must not read the first recovery's progress as its own.
AFTER_KEY = "recovery_after:{epoch}"
DONE_KEY = "recovery_done"  # the old epoch whose events are all taken back
RECOVERED = "recovered"  # the ledger rows' ref_id: taken back from the hub after a restore


def pending(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """(old epoch, after seq) still to ask the hub for, or None when there is nothing."""
    raw = meta_get(conn, RESTORED_KEY)
    if not raw:
        return None
    restored: dict[str, Any] = json.loads(raw)
    epoch = int(restored["epoch"])
    if int(meta_get(conn, DONE_KEY, "0") or 0) == epoch:
        return None
    after = int(meta_get(conn, AFTER_KEY.format(epoch=epoch), "0") or 0)
    return epoch, max(after, int(restored["seq"]))


def apply_page(conn: sqlite3.Connection, ctx: StoreContext, page: RecoveryPage) -> int:
    """Replay ``page`` if it continues from where recovery is; returns events replayed."""
    at = pending(conn)
    if at is None or at[0] != page.epoch:
        return 0
    done = 0
    for event in page.events:
        if event.epoch == page.epoch and event.seq > at[1]:
            _replay(conn, ctx, event)
            done += 1
    meta_set(conn, AFTER_KEY.format(epoch=page.epoch), max(page.upto, at[1]))
    if not page.more:
        meta_set(conn, DONE_KEY, page.epoch)
    return done


def _day(ctx: StoreContext, hlc: int) -> str:
    when = datetime.fromtimestamp(wall_ms(hlc) / 1000, UTC)
    return when.astimezone(ZoneInfo(ctx.config.store.timezone)).date().isoformat()


def _move_lots(conn: sqlite3.Connection, member_id: str, draws: list[tuple[str, int]],
               sign: int) -> int:
    """Take (``sign`` -1) or give back (+1) ``draws``; returns the part from other stores."""
    remote = 0
    for lot_id, points in draws:
        if lot_id == REMOTE_LOT:
            conn.execute("UPDATE members SET remote_points_used = remote_points_used - ?"
                         " WHERE member_id = ?", (sign * points, member_id))
            remote += points
        else:
            # Bounded: the restored box may have drawn a lot the lost box had drawn too.
            conn.execute("UPDATE point_lots SET remaining = min(points, max(0, remaining + ?))"
                         " WHERE lot_id = ?", (sign * points, lot_id))
    return remote


def _replay(conn: sqlite3.Connection, ctx: StoreContext, event: Event) -> None:
    b = event.body
    hlc = event.hlc
    if isinstance(b, SaleFinalized):
        if b.member_id is not None:
            conn.execute("UPDATE members SET spend_total = spend_total + ?, visits = visits + 1,"
                         " last_visit = max(coalesce(last_visit, ''), ?) WHERE member_id = ?",
                         (b.total, _day(ctx, hlc), b.member_id))
    elif isinstance(b, RefundCompleted):
        if b.member_id is not None:
            conn.execute("UPDATE members SET spend_total = max(0, spend_total - ?)"
                         " WHERE member_id = ?", (b.amount, b.member_id))
    elif isinstance(b, PointsEarned):
        conn.execute(
            "INSERT INTO point_lots(lot_id, member_id, earned_on, expires_on, points, remaining,"
            " reason, sale_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (b.lot_id, b.member_id, _day(ctx, hlc),
             b.expires_on.isoformat() if b.expires_on else None, b.points, b.points, b.reason,
             b.sale_id))
        ledger_entry(conn, b.member_id, b.points, "earned", b.lot_id, RECOVERED, hlc)
    elif isinstance(b, PointsRedeemed):
        remote = _move_lots(conn, b.member_id, [(d.lot_id, d.points) for d in b.lots], -1)
        ledger_entry(conn, b.member_id, -b.points, "redeemed", None, RECOVERED, hlc,
                     balance_delta=-(b.points - remote))
        allowance.count_used(conn, ctx, b.member_id, b.points, 0)  # as the checkout counted
    elif isinstance(b, PointsExpired):
        _move_lots(conn, b.member_id, [(b.lot_id, b.points)], -1)
        ledger_entry(conn, b.member_id, -b.points, "expired", b.lot_id, RECOVERED, hlc)
    elif isinstance(b, PointsAdjusted):
        sign = 1 if b.delta > 0 else -1
        remote = _move_lots(conn, b.member_id, [(d.lot_id, d.points) for d in b.lots], sign)
        ledger_entry(conn, b.member_id, b.delta, b.reason, None, RECOVERED, hlc,
                     balance_delta=b.delta - sign * remote)
        if b.reason == "refund_return":  # as the refund gave it back
            allowance.count_used(conn, ctx, b.member_id, -b.delta, 0)
        debt = b.shortfall if b.reason == "refund_reversal" else (
            b.delta if b.reason == "debt_repayment" else 0)
        if debt:
            conn.execute("UPDATE members SET points_debt = max(0, points_debt + ?)"
                         " WHERE member_id = ?", (debt, b.member_id))
    elif isinstance(b, StoredValueToppedUp):
        stored_value.ledger_entry(conn, b.member_id, b.principal, b.bonus, "topup", RECOVERED,
                                  hlc)
    elif isinstance(b, StoredValueRefunded):
        stored_value.ledger_entry(conn, b.member_id, b.principal, b.bonus, "refunded",
                                  RECOVERED, hlc)
        allowance.count_used(conn, ctx, b.member_id, 0, -(b.principal + b.bonus))
    elif isinstance(b, StoredValueSpent):
        local_p, local_b = conn.execute("SELECT sv_principal, sv_bonus FROM members"
                                        " WHERE member_id = ?", (b.member_id,)).fetchone() or (0, 0)
        stored_value.take(conn, b.member_id, RECOVERED, b.principal, b.bonus, hlc,
                          int(local_p), int(local_b))
        allowance.count_used(conn, ctx, b.member_id, 0, b.principal + b.bonus)
    elif isinstance(b, CouponIssued):
        conn.execute(
            "INSERT INTO coupons(coupon_code, member_id, campaign_id, kind, value, min_spend,"
            " categories, expires_on, state, updated_hlc) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
            " 'issued', ?) ON CONFLICT DO NOTHING",
            (b.coupon_code, b.member_id, b.campaign_id, b.kind, b.value, b.min_spend,
             json.dumps(list(b.categories)), b.expires_on.isoformat() if b.expires_on else None,
             hlc))
    elif isinstance(b, CouponVoided):
        conn.execute("UPDATE coupons SET state = 'voided', updated_hlc = ? WHERE coupon_code = ?",
                     (hlc, b.coupon_code))
    elif isinstance(b, CouponRedeemed):
        conn.execute("UPDATE coupons SET state = 'redeemed', sale_id = ?, updated_hlc = ?"
                     " WHERE coupon_code = ? AND updated_hlc <= ?",
                     (b.sale_id, hlc, b.coupon_code, hlc))
    elif isinstance(b, CouponReopened):
        conn.execute("UPDATE coupons SET state = 'issued', sale_id = NULL, updated_hlc = ?"
                     " WHERE coupon_code = ? AND state = 'redeemed' AND sale_id = ?",
                     (hlc, b.coupon_code, b.sale_id))
