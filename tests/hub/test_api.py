"""The HQ API over a running hub (real Mosquitto): token, status, conflicts, members, campaigns."""

from __future__ import annotations

from pathlib import Path

import httpx

from edge import demo
from hub.api import create_app
from hub.config import HubConfig
from hub.service import HubService
from protocol import topics
from protocol.codec import encode
from protocol.events import CouponRedeemed, Event, EventBatch
from protocol.mqtt import MqttClient
from tests.hub.test_sync_e2e import wait_for
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

TOKEN = "hq-test-token-0001"


async def test_hq_api(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path)},
        "broker": {"host": mosquitto.host, "port": mosquitto.port},
        "api": {"token": TOKEN}})
    async with HubService(cfg) as hub:
        app = create_app(hub)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hq",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            r = await c.get("/v1/status", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert hub.mqtt is not None
            await hub.mqtt.wait_connected(10)  # subscribed: nothing published now is lost
            async with MqttClient(mosquitto.host, mosquitto.port, client_id="x") as edge:
                await edge.wait_connected(10)
                for store, hlc in (("S002", 2_000), ("S001", 1_000)):
                    body = CouponRedeemed(coupon_code="CPN0000000009", sale_id=f"s-{store}",
                                          amount=300)
                    batch = EventBatch(store_id=store, epoch=1, events=[Event(
                        event_id=f"e{store}", store_id=store, epoch=1, seq=1, hlc=hlc,
                        body=body)])
                    await edge.publish(topics.events(store), encode(batch))

                async def both() -> bool:
                    return hub.applied_events == 2

                await wait_for(both, "both batches applied")
            conflicts = (await c.get("/v1/conflicts/coupons")).json()["conflicts"]
            assert [(x["store_id"], x["kept_store"]) for x in conflicts] == [("S002", "S001")]
            status = (await c.get("/v1/status")).json()
            assert {s["store_id"] for s in status["stores"]} == {"S001", "S002"}
            ingest = status["ingest"]  # the uplink's way through the hub, for the operator
            assert ingest["received_batches"] >= 2 and ingest["commits"] >= 1
            assert ingest["validate_workers"] == 1 and ingest["validator_restarts"] == 0
            assert ingest["validation_fallbacks"] == 0  # the edge encodes canonically
            assert (await c.get("/v1/members/nobody")).status_code == 404
            bundle = demo.demo_bundle().model_dump(mode="json")
            r = await c.post("/v1/campaigns", json=bundle)
            assert r.status_code == 201 and r.json()["topic"] == topics.FLEET_CAMPAIGNS
            r = await c.post("/v1/campaigns", json=bundle)  # the same version again
            assert r.status_code == 409 and r.json()["error"]["code"] == "stale_version"
            assert (await c.get("/v1/rebuild")).json()["mismatch_count"] == 0
