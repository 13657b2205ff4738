"""The store's own channel, end to end with a real store: a journey's in-store message and its
coupon travel in the member's directory entry, the till shows it when the member is identified
and prints it (with the coupon's QR) on their next receipt only, the store reports it shown, and
the hub marks it delivered and takes it out of the entry so no other till prints it again."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

from edge import directory as edge_directory
from edge.receipt_layout import build_receipt
from edge.service import EdgeService
from hub.automation import journeys
from hub.automation.engine import JourneyEngine
from hub.core.db import HubDatabase
from hub.ledger.apply import apply_batch
from hub.ledger.hq_events import Merge
from hub.members import directory
from hub.notify import outbox
from hub.notify.channels.store import StoreChannel
from hub.notify.dispatcher import Dispatcher, NotifySettings
from protocol.hlc import HybridClock
from protocol.ids import coupon_qr
from tests.edge.conftest import register, sell
from tests.hub.test_ingest import _store, batches

ZONE = "Asia/Shanghai"


async def sync(svc: EdgeService, db: HubDatabase) -> None:
    for batch in batches(str(svc.config.database.path), "S001", 100):
        await db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))


async def tell_store(svc: EdgeService, db: HubDatabase, member_id: str) -> None:
    """What the store's next directory page brings for the member."""
    entry = await db.read(lambda tx: directory.entry(tx, member_id))
    assert entry is not None
    await svc._write(lambda conn, ctx: edge_directory.apply_entry(conn, ctx, entry))


def state(db_path: Path, member_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT key, shown_sale IS NOT NULL FROM till_messages WHERE member_id = ?",
            (member_id,))]


async def test_a_message_left_at_the_tills_prints_once_and_is_delivered(
        tmp_path: Path, hub_db: HubDatabase) -> None:
    now = [1_800_000_000_000]
    made = await hub_db.transaction(lambda tx: journeys.create(tx, {
        "name": "新会员礼", "trigger": {"kind": "registered"},
        "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 500,
                     "valid_days": 30},
                    {"kind": "message", "channel": "store",
                     "text": "{name}，欢迎入会！送您{coupon_value}元券"}]},
        by="mkt", now_ms=now[0], today=date(2027, 1, 15), zone=ZONE,
        check_message=lambda *_: None))
    svc = await _store(tmp_path, "S001", 1)
    try:
        m = await register(svc, "13800138001", name="王芳")
        mid = m["member_id"]
        await sync(svc, hub_db)
        clock = HybridClock()
        await JourneyEngine(hub_db, ZONE, dict, lambda at: Merge(clock, at, zone=ZONE),
                            now_ms=lambda: now[0]).run()
        moved: list[int] = []
        channel = StoreChannel(hub_db, lambda: now[0], lambda: moved.append(1))
        d = Dispatcher(hub_db, {"store": channel}, NotifySettings(), ZONE, dict,
                       lambda: now[0])
        await d.round("store")
        sent = await hub_db.read(lambda tx: outbox.listing(tx, member_id=mid))
        assert [(s["channel"], s["state"]) for s in sent] == [("store", "sent")]
        assert moved == [1]  # the fleet was told
        code = await hub_db.read(lambda tx: tx.scalar(
            "SELECT coupon_code FROM coupons WHERE campaign_id = ?", (made["journey_id"],)))

        # The store's next page: the till shows it when the member is identified ...
        await tell_store(svc, hub_db, mid)
        view = await svc.member(mid)
        assert view["messages"] == [{"key": sent[0]["key"], "text": "王芳，欢迎入会！送您5元券",
                                     "coupon_code": code}]
        # ... and prints it on their receipt, with the coupon's QR, once.
        sale = await sell(svc, [("A", "grocery", 1, 3_000)], member_id=mid)
        assert sale["messages"] == [{"text": "王芳，欢迎入会！送您5元券", "coupon_code": code}]
        doc = build_receipt(sale, store_name="S", currency="CNY", width=32)
        text = repr(doc)
        assert "王芳，欢迎入会" in text and coupon_qr(code) in text
        assert (await svc.member(mid))["messages"] == []
        again = await sell(svc, [("A", "grocery", 1, 3_000)], member_id=mid)
        assert again["messages"] == []
        reprinted = await svc.receipt(sale["sale_id"])
        assert reprinted["messages"] == sale["messages"]  # a reprint is the same slip

        # The hub hears it was shown: delivered, and out of the entry for every other till.
        await sync(svc, hub_db)
        row = (await hub_db.read(lambda tx: outbox.listing(tx, member_id=mid)))[0]
        assert (row["state"], row["provider_id"]) == ("delivered", "S001/POS-1")
        entry = await hub_db.read(lambda tx: directory.entry(tx, mid))
        assert entry is not None and entry.messages == []
        await tell_store(svc, hub_db, mid)
        assert state(svc.config.database.path, mid) == [(sent[0]["key"], 1)]
    finally:
        await svc.close()
