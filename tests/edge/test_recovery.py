"""A restored box replays its lost predecessor's events after the backup (``edge.recovery``):
its books end as the lost box's were — balances, lots, allowance, coupons, spend — and a page
replayed twice changes nothing."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from edge import backup, coupons, demo, recovery
from edge.checkout import TenderRequest
from edge.config import EdgeConfig
from edge.service import EdgeService
from hub.ledger.recovery import RECOVERED
from protocol.codec import decode
from protocol.events import Event
from protocol.ids import uuid7
from protocol.sync import RecoveryPage
from tests.edge.conftest import key, register, sell


def _books(conn: sqlite3.Connection, member_id: str) -> dict[str, Any]:
    """What this store holds of the member, beyond the view: lots, allowance, coupons."""
    return {
        "lots": conn.execute("SELECT lot_id, expires_on, remaining FROM point_lots"
                             " WHERE member_id = ? ORDER BY lot_id", (member_id,)).fetchall(),
        "allowance": conn.execute("SELECT points_used, sv_used FROM allowances"
                                  " WHERE member_id = ?", (member_id,)).fetchall(),
        "coupons": conn.execute("SELECT coupon_code, state, sale_id FROM coupons"
                                " WHERE member_id = ? ORDER BY coupon_code",
                                (member_id,)).fetchall(),
        "member": conn.execute("SELECT points_balance, points_debt, remote_points_used,"
                               " sv_principal, sv_bonus, spend_total, visits, last_visit"
                               " FROM members WHERE member_id = ?", (member_id,)).fetchall(),
    }


async def test_the_lost_tail_replayed_leaves_the_books_as_the_lost_box_had_them(
        tmp_path: Path, config: EdgeConfig) -> None:
    copy = tmp_path / "backup.db"
    async with EdgeService(config) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        mid = (await register(svc))["member_id"]
        await sell(svc, [("A", "grocery", 1, 80_000)], member_id=mid)  # a lot of 740
        await svc.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=30_000)
        early = await svc._write(lambda c, x: coupons.issue(
            c, x, member_id=mid, campaign_id=None, kind="amount_off", value=1_500))
        taken = backup.backup(config.database.path, copy, lambda _m: None)
        # After the backup: points, stored value and a coupon spent, the sale refunded (all
        # of it back), more sales, a coupon issued and voided, lots expired.
        paid = await sell(svc, [("B", "grocery", 1, 20_000)], member_id=mid, coupons=[early],
                          tenders=[TenderRequest(kind="points", points=300),
                                   TenderRequest(kind="stored_value", amount=10_000),
                                   TenderRequest(kind="cash", amount=8_200)])
        await svc.refund(terminal_id="POS-1", idem_key=key(), sale_id=paid["sale_id"],
                         lines=None)
        await sell(svc, [("C", "grocery", 1, 5_000)], member_id=mid,
                   tenders=[TenderRequest(kind="stored_value", amount=5_000)])
        late = await svc._write(lambda c, x: coupons.issue(
            c, x, member_id=mid, campaign_id=None, kind="amount_off", value=500))
        await svc._write(lambda c, x: coupons.void(c, x, late, "test"))
        svc.context.today_override = svc.context.today() + timedelta(days=800)
        assert await svc.expire_points() > 0
        svc.context.today_override = None
        await sell(svc, [("D", "grocery", 1, 3_000)], member_id=mid)
        lost_view = await svc.member(mid)
        lost = await svc.db.read(lambda c: _books(c, mid))
        tail = await svc.db.read(lambda c: [decode(bytes(r[0]), Event) for r in c.execute(
            "SELECT payload FROM outbox WHERE seq > ? ORDER BY seq", (taken["last_seq"],))])
    kinds = {e.body.type for e in tail}
    assert {"points.redeemed", "points.expired", "points.adjusted", "sv.spent", "sv.refunded",
            "coupon.redeemed", "coupon.reopened", "coupon.voided"} <= kinds

    backup.restore(copy, config.database.path, config.store.store_id, lambda _m: None)
    async with EdgeService(config) as svc:
        assert await svc.db.read(lambda c: _books(c, mid)) != lost  # the backup lacks the tail
        events = [e for e in tail if e.body.type in RECOVERED]
        half = len(events) // 2
        pages = [RecoveryPage(request_id=uuid7(), epoch=taken["epoch"],
                              upto=events[half - 1].seq, more=True, events=events[:half]),
                 RecoveryPage(request_id=uuid7(), epoch=taken["epoch"], upto=tail[-1].seq,
                              events=events[half:])]
        for page in (pages[0], pages[0], pages[1], pages[1]):  # each page twice: once counts
            await svc.db.write(lambda c, p=page: recovery.apply_page(c, svc.context, p))
        assert await svc.db.read(lambda c: _books(c, mid)) == lost
        assert await svc.member(mid) == lost_view
        assert await svc.db.read(recovery.pending) is None
        assert svc.context.epoch > taken["epoch"]
