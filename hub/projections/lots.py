"""Points lots: every lot a store (or HQ) wrote, what is left of it and when it expires.

What is left is a sum — the earning, less the draws of redemptions and expiry, plus or minus
the lots an adjustment names (a refund gives redeemed points back to their lots, a reversal
or a debt repayment takes from them) — so the stores' logs give the same rows in any order
they merge in: a draw merged before its lot's earning is counted and the earning adds to it.
The member is the id the store wrote; ``members.merged_into`` says who that is now. What
expires when (the member 360 card, segments' "points expiring within N days", the accounts'
liabilities) reads these rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.core.db import Tx
from hub.core.projections import Logged

EARNED, REDEEMED, EXPIRED, ADJUSTED = ("points.earned", "points.redeemed", "points.expired",
                                       "points.adjusted")
_EARN = (
    "INSERT INTO point_lots(lot_id, member_id, store_id, earned, remaining, expires_on)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(lot_id) DO UPDATE SET"
    " member_id = excluded.member_id, store_id = excluded.store_id,"
    " earned = point_lots.earned + excluded.earned,"
    " remaining = point_lots.remaining + excluded.remaining, expires_on = excluded.expires_on")
_DRAW = (
    "INSERT INTO point_lots(lot_id, member_id, store_id, earned, remaining, expires_on)"
    " VALUES (?, NULL, NULL, 0, ?, NULL) ON CONFLICT(lot_id) DO UPDATE SET"
    " remaining = point_lots.remaining + excluded.remaining")


class PointLots:
    name = "point_lots"
    tables: tuple[str, ...] = ("point_lots",)
    types = frozenset({EARNED, REDEEMED, EXPIRED, ADJUSTED})
    after: tuple[str, ...] = ()

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        earned: list[tuple[Any, ...]] = []
        drawn: dict[str, int] = {}
        for e in events:
            b = e.event.body
            if e.type == EARNED:
                expires = b.expires_on.isoformat() if b.expires_on is not None else None
                earned.append((b.lot_id, b.member_id, e.store_id, b.points, b.points, expires))
            elif e.type == EXPIRED:
                drawn[b.lot_id] = drawn.get(b.lot_id, 0) - b.points
            else:
                sign = -1 if e.type == REDEEMED or b.delta < 0 else 1
                for draw in b.lots:
                    drawn[draw.lot_id] = drawn.get(draw.lot_id, 0) + sign * draw.points
        # Earnings first: a lot earned and drawn in one page is inserted whole, then drawn.
        tx.executemany(_EARN, earned)
        tx.executemany(_DRAW, sorted(drawn.items()))
