"""What a store restored from a backup gets back: its lost box's events after the backup.

The lost box sold on after its last backup, and the hub applied those events; the restored box
never had them. Its own ledgers (lots, balances, coupons used) must include them or the member's
balance at this store would be short of what HQ and every other store show. The hub sends the
events that move points, stored value, coupons or a member's spend, page by page
(``edge.recovery`` replays them without sending them again). Read on a reader: the events of
a finished epoch never change.
"""

from __future__ import annotations

from hub.core.db import Tx
from protocol.codec import decode
from protocol.events import Event
from protocol.sync import RecoveryPage, RecoveryRequest

# The event types whose effect a restored store takes back into its own books.
RECOVERED = ("sale.finalized", "refund.completed", "points.earned", "points.redeemed",
             "points.expired", "points.adjusted", "sv.topped_up", "sv.spent", "sv.refunded",
             "coupon.issued", "coupon.redeemed", "coupon.reopened", "coupon.voided")


def tail_page(tx: Tx, req: RecoveryRequest) -> RecoveryPage:
    rows = tx.all("SELECT seq, type, payload FROM events WHERE store_id = ? AND epoch = ?"
                  " AND seq > ? ORDER BY seq LIMIT ?",
                  (req.store_id, req.epoch, req.after_seq, req.limit))
    events = [decode(bytes(payload), Event) for _seq, kind, payload in rows if kind in RECOVERED]
    upto = int(rows[-1][0]) if rows else req.after_seq
    return RecoveryPage(request_id=req.request_id, epoch=req.epoch, upto=upto,
                        more=len(rows) == req.limit, events=events)
