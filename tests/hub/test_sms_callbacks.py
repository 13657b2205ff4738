"""Alibaba Cloud's pushes to the hub: delivery reports mark messages delivered or failed by their
key; a member's opt-out reply (回T退订) withdraws their SMS consent as an HQ-stream event; both
need the callback secret in the URL (404 without it, as for no route), malformed pushes are a
422 and change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from hub.api.app import create_app
from hub.app import Hub
from hub.config import HubConfig
from hub.core.db import HubDatabase
from hub.core.schema import migrate
from hub.ledger.apply import apply_batch
from hub.notify import outbox
from protocol.events import ConsentChanged, Event, EventBatch, MemberRegistered

TOKEN = "cb-secret-0001"


async def test_reports_and_opt_out_replies(tmp_path: Path) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0},
        "broker": {"embedded_port": 0}, "api": {"token": "hq-token-000001"},
        "channels": {"sms": {"access_key_id": "id", "access_key_secret": "secret",
                             "sign_name": "会员中心", "callback_token": TOKEN}}})
    # Seeded before the hub starts: its SMS loop must never see these as due (the provider
    # is not reachable from here); they were sent, the provider reports on them.
    async with HubDatabase(cfg.database_url) as db:
        await db.transaction(migrate)
        batch = EventBatch(store_id="S001", epoch=1, events=[Event(
            event_id=f"e{i}", store_id="S001", epoch=1, seq=i, hlc=1_000 + i, body=body)
            for i, body in enumerate((
                MemberRegistered(member_id="m1", member_code="C1", phone="+8613800138001"),
                MemberRegistered(member_id="m2", member_code="C2", phone="+8613800138002"),
                ConsentChanged(member_id="m1", channel="sms", purpose="marketing",
                               granted=True, text_version="v1"),
                ConsentChanged(member_id="m2", channel="sms", purpose="marketing",
                               granted=True, text_version="v1")), 1)])
        await db.transaction(lambda tx: apply_batch(tx, batch, 1))
        await db.transaction(lambda tx: outbox.enqueue(tx, [
            outbox.Message(key=k, member_id="m1", channel="sms", purpose="marketing",
                           template="SMS_1", params={}, text="hi 回T退订")
            for k in ("k1", "k2")], 1))
        await db.transaction(lambda tx: tx.execute(
            "UPDATE outbox SET state = 'sent', sent_ms = 1, provider_id = 'biz-' || key"))
    async with Hub(cfg) as hub:
        transport = httpx.ASGITransport(app=create_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hq") as c:
            reports = json.dumps([
                {"phone_number": "13800138001", "send_time": "2026-12-05 10:00:00",
                 "report_time": "2026-12-05 10:00:05", "success": True,
                 "err_code": "DELIVERED", "err_msg": "用户接收成功", "sms_size": "1",
                 "biz_id": "biz-k1", "out_id": "k1"},
                {"phone_number": "13800138001", "send_time": "2026-12-05 10:00:00",
                 "report_time": "2026-12-05 10:00:05", "success": False,
                 "err_code": "MK:0001", "err_msg": "停机", "sms_size": "1",
                 "biz_id": "biz-k2", "out_id": "k2"}], ensure_ascii=False)
            for params in ({}, {"token": "wrong"}):
                r = await c.post("/v1/providers/sms/receipts", params=params, content=reports)
                assert r.status_code == 404
            r = await c.post("/v1/providers/sms/receipts", params={"token": TOKEN},
                             content=b"[{\"success\": 1}]")
            assert r.status_code == 422
            states = await hub.db.read(lambda tx: sorted(
                (str(k), str(s)) for k, s in tx.all("SELECT key, state FROM outbox")))
            assert states == [("k1", "sent"), ("k2", "sent")]
            r = await c.post("/v1/providers/sms/receipts", params={"token": TOKEN},
                             content=reports)
            assert r.json() == {"code": 0, "msg": "成功"}
            got = await hub.db.read(lambda tx: sorted(
                (str(k), str(s), str(e)) for k, s, e in tx.all(
                    "SELECT key, state, error FROM outbox")))
            assert got == [("k1", "delivered", ""), ("k2", "failed", "MK:0001 停机")] or (
                got[0] == ("k1", "delivered", "") and got[1][:2] == ("k2", "failed")
                and "MK:0001" in got[1][2])
            # m1 replies T: their SMS consent is withdrawn, m2's stays.
            replies = json.dumps([{"phone_number": "13800138001", "send_time": "x",
                                   "content": "Ｔ", "sign_name": "会员中心",
                                   "dest_code": "1", "sequence_id": 1},
                                  {"phone_number": "13800138002", "send_time": "x",
                                   "content": "谢谢", "sign_name": "会员中心",
                                   "dest_code": "1", "sequence_id": 2}], ensure_ascii=False)
            r = await c.post("/v1/providers/sms/replies", params={"token": TOKEN},
                             content=replies)
            assert r.status_code == 200, r.text
            held = await hub.db.read(lambda tx: sorted(tuple(x) for x in tx.all(
                "SELECT member_id, granted, store_id, text_version FROM consents")))
            assert held == [("m1", 0, "HQ", "sms-reply"), ("m2", 1, "S001", "v1")]
            # A journey whose SMS the provider would not take is refused, nothing saved.
            hq = {"Authorization": "Bearer hq-token-000001"}
            for text, says in (("会员日全场九折", "退订"), ("长" * 495 + "回T退订", "500")):
                r = await c.post("/v1/journeys", headers=hq, json={
                    "name": "会员日", "trigger": {"kind": "registered"},
                    "actions": [{"kind": "message", "channel": "sms", "template": "SMS_9",
                                 "text": text}]})
                assert r.status_code == 422 and says in r.text, r.text
            assert (await c.get("/v1/journeys", headers=hq)).json() == []
