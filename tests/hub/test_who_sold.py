"""Who sold it: the cashier and the shopping guide (导购) of a sale, a refund's cashier and a
member's assigned guide travel from the POS to the hub (version 2 of those events), and a store
still on the previous release, sending version 1, keeps syncing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgpack

from hub.app import Hub
from hub.ledger import audit
from hub.members import directory
from protocol import topics
from protocol.codec import decode
from protocol.events import Event
from protocol.ids import uuid7
from protocol.mqtt import MqttClient
from protocol.sync import Ack
from tests.edge.conftest import TOKEN
from tests.edge.invariants import snapshot
from tests.hub.test_sync_e2e import drained, hub, start_store, wait_for  # noqa: F401
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401
from tests.support.serving import pos_server, serving


async def _logged(the_hub: Hub, kind: str) -> list[Event]:
    """The events of ``kind`` in the hub's log, as the store sent them."""
    return [decode(bytes(r[0]), Event) for r in await the_hub.db.read(lambda tx: tx.all(
        "SELECT payload FROM events WHERE type = ? ORDER BY store_id, seq", (kind,)))]


async def test_cashier_and_guides_reach_the_hub_and_the_other_stores(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        async with serving(pos_server(a)) as port, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"}) as pos:
            def key() -> dict[str, str]:
                return {"Idempotency-Key": uuid7()}

            r = await pos.post("/v1/members", headers=key(), json={
                "phone": "13800001111", "name": "王芳", "card_uid": "04C0FFEE",
                "guide_id": "G07"})
            assert r.status_code == 201 and r.json()["guide_id"] == "G07", r.text
            mid = r.json()["member_id"]
            def books() -> dict[str, Any]:  # the sync link's own meta rows move meanwhile
                return {k: v for k, v in snapshot(a.config.database.path).items() if k != "meta"}

            before = books()
            r = await pos.post("/v1/sales", json={"cashier_id": "C" * 65})  # beyond the bound
            assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
            assert books() == before and (await a.status())["live"]["open_sales"] == 0
            # The cashier is known when the sale opens; the guide is the member's own.
            sale = (await pos.post("/v1/sales", json={"cashier_id": "C01"})).json()
            sid = sale["sale_id"]
            await pos.post(f"/v1/sales/{sid}/member", headers=key(), json={"card_uid": "04C0FFEE"})
            await pos.post(f"/v1/sales/{sid}/lines", headers=key(), json={
                "sku": "6901234567892", "name": "牛奶", "category": "dairy", "qty": 2,
                "unit_price": 1_200})
            r = await pos.post(f"/v1/sales/{sid}/finalize", headers=key(), json={
                "tenders": [{"kind": "cash", "amount": 5_000}]})
            assert r.status_code == 200, r.text
            assert (r.json()["cashier_id"], r.json()["guide_id"]) == ("C01", "G07")
            # Another sale: the guide named at finalize wins over the member's.
            sid2 = (await pos.post("/v1/sales")).json()["sale_id"]
            await pos.post(f"/v1/sales/{sid2}/member", headers=key(),
                           json={"card_uid": "04C0FFEE"})
            await pos.post(f"/v1/sales/{sid2}/lines", headers=key(), json={
                "sku": "6901234567893", "name": "面包", "category": "bakery", "qty": 1,
                "unit_price": 800})
            r = await pos.post(f"/v1/sales/{sid2}/finalize", headers=key(), json={
                "tenders": [{"kind": "cash", "amount": 800}], "cashier_id": "C02",
                "guide_id": "G09"})
            assert (r.json()["cashier_id"], r.json()["guide_id"]) == ("C02", "G09")
            r = await pos.post("/v1/refunds", headers=key(), json={
                "sale_id": sid, "lines": [{"line_no": 1, "qty": 1}], "cashier_id": "C03"})
            assert r.status_code == 201 and r.json()["cashier_id"] == "C03", r.text
            r = await pos.patch(f"/v1/members/{mid}", headers=key(), json={"guide_id": "G11"})
            assert r.status_code == 200 and r.json()["guide_id"] == "G11", r.text

        await wait_for(lambda: drained(a), "store A drained")
        sales = [e.body for e in await _logged(hub, "sale.finalized")]
        assert [(b.v, b.cashier_id, b.guide_id) for b in sales] == [  # type: ignore[union-attr]
            (2, "C01", "G07"), (2, "C02", "G09")]
        refund = (await _logged(hub, "refund.completed"))[0].body
        assert (refund.v, refund.cashier_id) == (2, "C03")  # type: ignore[union-attr]
        changed = (await _logged(hub, "member.profile_changed"))[0].body
        assert (changed.v, changed.changed) == (2, ["guide_id"])  # type: ignore[union-attr]
        entry = await hub.db.read(lambda tx: directory.entry(tx, mid))
        assert entry is not None and entry.guide_id == "G11"

        async def b_knows() -> bool:
            try:
                return (await b.member(mid))["guide_id"] == "G11"
            except Exception:
                return False

        await wait_for(b_knows, "store B to learn the member's guide")

        async def projected() -> list[Any]:
            await hub.projections.catch_up()
            return list(await hub.db.read(lambda tx: tx.all(
                "SELECT sale_id, kind, cashier_id, guide_id FROM sales_facts"
                " WHERE kind IN ('sale', 'refund') ORDER BY hlc")))

        rows = [tuple(r) for r in await projected()]
        assert (sid, "sale", "C01", "G07") in rows and (sid2, "sale", "C02", "G09") in rows
        assert any(r[1] == "refund" and r[2] == "C03" for r in rows), rows
        assert (await hub.db.read(audit.compare))["mismatches"] == []
    finally:
        await a.close()
        await b.close()


def _old_release_batch(store_id: str) -> bytes:
    """A batch exactly as the previous release's store encoded it: version 1 bodies, without
    the new fields (no cashier, no guide)."""
    member = uuid7()
    line = {"line_no": 1, "sku": "6901234567892", "name": "牛奶", "category": "dairy",
            "qty": 1, "unit_price": 1200, "gross": 1200, "discount": 0, "net": 1200,
            "points": 12}
    tender = {"kind": "cash", "amount": 1200, "points": 0, "sv_principal": 0, "sv_bonus": 0,
              "coupon_code": None, "reference": None}
    bodies: list[dict[str, Any]] = [
        {"type": "member.registered", "v": 1, "member_id": member, "member_code": "900001",
         "phone": "+8613900009999", "name": "老版本", "birthday": None, "card_uid": None,
         "tier": "standard", "tags": []},
        {"type": "sale.finalized", "v": 1, "sale_id": uuid7(), "terminal_id": "POS-1",
         "member_id": member, "currency": "CNY", "lines": [line], "discounts": [],
         "tenders": [tender], "subtotal": 1200, "discount_total": 0, "total": 1200,
         "points_earned": 12},
        {"type": "points.earned", "v": 1, "member_id": member, "lot_id": uuid7(), "points": 12,
         "expires_on": None, "reason": "sale", "sale_id": None},
    ]
    events = [{"event_id": uuid7(), "store_id": store_id, "epoch": 1, "seq": seq,
               "hlc": 1_000 + seq, "body": body} for seq, body in enumerate(bodies, 1)]
    packed: bytes = msgpack.packb({"v": 1, "store_id": store_id, "epoch": 1, "events": events},
                                  use_bin_type=True)
    return packed


async def test_a_store_on_the_previous_release_keeps_syncing(
        mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    async with MqttClient(mosquitto.host, mosquitto.port, client_id="S009") as old_store:
        await old_store.subscribe(topics.ack("S009"), qos=1)
        await old_store.wait_connected(10)
        await old_store.publish(topics.events("S009"), _old_release_batch("S009"))
        stream = old_store.messages()
        ack = decode((await anext(stream)).payload, Ack)
        while ack.seq < 3:
            ack = decode((await anext(stream)).payload, Ack)
    assert (ack.store_id, ack.epoch, ack.seq, ack.resend) == ("S009", 1, 3, False)
    assert hub.refusals.counts == {}
    held = await hub.db.read(audit.compare)
    assert held["mismatches"] == [] and held["events"] == 3
    guide = await hub.db.read(lambda tx: tx.scalar(
        "SELECT count(*) FROM members WHERE name = '老版本' AND guide_id IS NULL"))
    assert guide == 1
    assert json.dumps(await hub.status())  # and the fleet view takes the old store too
