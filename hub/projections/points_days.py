"""Points by store and store-local day, and what is left of the lots by expiry month.

``points_days``: earned, redeemed, given back to their lots by refunds (``returned``),
expired, and every other adjustment (signed: a refund's reversal of earned points, a debt
repaid, HQ's manual changes), per store and store-local day. Each is a sum of the store's
events, so the stores' logs give the same rows in any order; their running sum over every
column is the store's share of the points balances (``shares.points``: merges move shares
between members, never between stores). What the points report reads for a store's
outstanding points and for the history of redemption against expiry (breakage).

``points_expiry``: what is left of every lot (``point_lots``, applied first), summed by the
store that issued it and the month it expires: the expiry schedule without reading every lot.
After each page it is exactly that sum over the lots as they then are — every lot the page
touched leaves the bucket it was in and joins the one it is in now — so however the log was
paged, the rows are the same. A lot drawn on before its earning merged (another store's
redemption, the earning store offline) sits in ('', '') until the earning names its store and
expiry.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.core.db import Tx, in_chunks
from hub.core.projections import Logged
from hub.projections.lots import ADJUSTED, EARNED, EXPIRED, REDEEMED
from hub.projections.places import Places, local_time

_SUMS = ("earned", "redeemed", "returned", "expired", "adjusted")
_UPSERT = (
    f"INSERT INTO points_days(store_id, day, region, {', '.join(_SUMS)})"
    f" VALUES ({', '.join('?' * (3 + len(_SUMS)))})"
    " ON CONFLICT(store_id, day) DO UPDATE SET region = excluded.region, "
    + ", ".join(f"{c} = points_days.{c} + excluded.{c}" for c in _SUMS))
_ADD_EXPIRY = (
    "INSERT INTO points_expiry(store_id, month, points) VALUES (?, ?, ?)"
    " ON CONFLICT(store_id, month) DO UPDATE SET points = points_expiry.points + excluded.points")
UNKNOWN = ("", "")  # the bucket of lots whose earning has not merged yet


def bucket(store: str | None, expires_on: str | None) -> tuple[str, str]:
    if store is None:
        return UNKNOWN
    return store, expires_on[:7] if expires_on else "never"


class PointsDays:
    name = "points_days"
    tables: tuple[str, ...] = ("points_days", "points_expiry")
    types = frozenset({EARNED, REDEEMED, EXPIRED, ADJUSTED})
    after: tuple[str, ...] = ("point_lots",)  # the lots as this page leaves them

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        sums: dict[tuple[str, str], list[int]] = {}
        regions: dict[str, str | None] = {}
        moved: dict[str, int] = {}  # lot -> what this page changed of what is left of it
        earned: dict[str, int] = {}  # lot -> what this page earned in it
        for e in events:
            b = e.event.body
            region, zone = places.of(e.store_id)
            regions[e.store_id] = region
            key = (e.store_id, local_time(zone, e.hlc)[0])
            row = sums.get(key)
            if row is None:
                row = sums[key] = [0] * len(_SUMS)
            if e.type == EARNED:
                row[0] += b.points
                moved[b.lot_id] = moved.get(b.lot_id, 0) + b.points
                earned[b.lot_id] = earned.get(b.lot_id, 0) + b.points
            elif e.type == EXPIRED:
                row[3] += b.points
                moved[b.lot_id] = moved.get(b.lot_id, 0) - b.points
            else:
                if e.type == REDEEMED:
                    row[1] += b.points
                elif b.reason == "refund_return":
                    row[2] += b.delta
                else:
                    row[4] += b.delta
                sign = -1 if e.type == REDEEMED or b.delta < 0 else 1  # as PointLots draws
                for draw in b.lots:
                    moved[draw.lot_id] = moved.get(draw.lot_id, 0) + sign * draw.points
        tx.executemany(_UPSERT, [(*k, regions[k[0]], *v) for k, v in sums.items()])
        expiry: dict[tuple[str, str], int] = {}
        for chunk, marks in in_chunks(sorted(moved)):
            for lot, store, expires_on, total, left in tx.all(
                    "SELECT lot_id, store_id, expires_on, earned, remaining FROM point_lots"
                    f" WHERE lot_id IN ({marks})", chunk):
                now = bucket(store, expires_on)
                # Where the lot was before this page: unknown if nothing had been earned in it.
                was = now if int(total) - earned.get(lot, 0) else UNKNOWN
                expiry[was] = expiry.get(was, 0) - (int(left) - moved[lot])
                expiry[now] = expiry.get(now, 0) + int(left)
        tx.executemany(_ADD_EXPIRY, [(*k, v) for k, v in sorted(expiry.items()) if v])
        # A bucket with nothing left keeps no row, whichever pages emptied it.
        tx.executemany("DELETE FROM points_expiry WHERE store_id = ? AND month = ?"
                       " AND points = 0", sorted(expiry))
