"""What a store says about its link to the hub (real Mosquitto, real hub): the status shows
whether it is connected, since when and the last ack; a member it does not know, asked while
the hub cannot answer, is ``hub_unreachable`` (503) and never a plain not-found; campaign
bundles delivered again are not refusals, older ones are, and the hub's fleet table counts them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge import demo
from edge.errors import EdgeError
from edge.gateway import StoreGateway
from edge.service import EdgeService
from hub.app import Hub
from hub.campaigns import bundles as campaigns
from hub.cli import main as hub_main
from protocol import signing, topics
from protocol.ids import member_code
from protocol.mqtt import MqttClient
from tests.edge.conftest import TOKEN, make_config, register
from tests.edge.invariants import snapshot
from tests.hub.test_sync_e2e import drained, hub, start_store, wait_for  # noqa: F401
from tests.support.mosquitto import Mosquitto, free_port, mosquitto_fixture  # noqa: F401
from tests.support.serving import pos_server, serving


async def link(svc: EdgeService) -> dict[str, Any]:
    return dict((await svc.status())["hub"])


async def test_the_status_shows_the_hub_link_connected_since_and_last_ack(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        async def connected() -> bool:
            return bool((await link(a))["connected"])

        await wait_for(connected, "the link recorded as connected")
        up = await link(a)
        assert up["broker"] == f"{mosquitto.host}:{mosquitto.port}" and up["since"]
        await register(a, "13800001111")
        await wait_for(lambda: drained(a), "the registration acknowledged")
        acked = await link(a)
        assert acked["acked_seq"] == (await a.status())["last_seq"] >= 1
        assert acked["last_ack_at"] is not None

        mosquitto.kill()

        async def disconnected() -> bool:
            return not (await link(a))["connected"]

        await wait_for(disconnected, "the link recorded as lost")
        down = await link(a)
        assert down["since"] >= up["since"] and down["acked_seq"] == acked["acked_seq"]
        assert down["last_ack_at"] == acked["last_ack_at"]
    finally:
        await a.close()


def _offline_store(tmp_path: Path, port: int) -> StoreGateway:
    return StoreGateway(make_config(tmp_path, sync={"broker_host": "127.0.0.1",
                                                    "broker_port": port}))


@pytest.mark.parametrize(("by", "value"), [("phone", "13900001234"), ("card_uid", "04ABCDEF"),
                                           ("member_code", member_code(7, 42))])
async def test_an_unknown_member_with_the_hub_unreachable_is_not_a_plain_not_found(
        tmp_path: Path, by: str, value: str) -> None:
    # Nothing listens on the broker's port: the store runs, the hub cannot be asked.
    async with _offline_store(tmp_path, free_port()) as svc, \
            serving(pos_server(svc)) as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {TOKEN}"}) as pos:
        before = snapshot(svc.config.database.path)
        r = await pos.get("/v1/members/lookup", params={by: value})
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "hub_unreachable"
        assert error["details"]["online"] == "unreachable"
        assert error["details"]["local_code"] in ("member_not_found", "unknown_card")
        sid = (await pos.post("/v1/sales")).json()["sale_id"]
        r = await pos.post(f"/v1/sales/{sid}/member", json={by: value},
                           headers={"Idempotency-Key": "id-1"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "hub_unreachable"
        assert snapshot(svc.config.database.path) == before


async def test_an_unknown_member_with_the_hub_silent_is_a_timeout(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    # The broker is up, no hub answers: the POS gets its answer after the online wait.
    async with _offline_store(tmp_path, mosquitto.port) as svc:
        assert svc.sync is not None
        await svc.sync.mqtt.wait_connected(10)
        with pytest.raises(EdgeError) as err:
            await svc.lookup_member("phone", "13900001234")
        assert (err.value.code, err.value.status) == ("hub_unreachable", 503)
        assert err.value.details["online"] == "timeout"


async def test_a_member_the_hub_does_not_know_is_still_not_found(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        assert a.sync is not None
        await a.sync.mqtt.wait_connected(10)
        with pytest.raises(EdgeError) as err:
            await a.lookup_member("phone", "13900001234")
        assert (err.value.code, err.value.status) == ("member_not_found", 404)
    finally:
        await a.close()


async def test_a_bundle_delivered_again_is_no_refusal_an_older_one_is_and_the_hub_counts_it(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        assert a.sync is not None
        await a.sync.mqtt.wait_connected(10)
        v2 = demo.demo_bundle().model_copy(update={"version": 2})
        await hub.push_campaigns(v2)

        async def has_v2() -> bool:
            return (await a.status())["campaign_versions"].get("fleet") == 2

        await wait_for(has_v2, "version 2 applied")
        async with MqttClient(mosquitto.host, mosquitto.port, client_id="replay") as replay:
            await replay.wait_connected(10)
            # What a reconnect brings: the retained bundle the store already runs, again.
            await replay.publish(topics.FLEET_CAMPAIGNS, campaigns.manifest(v2, hub.key))
            # Then an older one, on the same topic (so after it): that one is a refusal.
            await replay.publish(topics.FLEET_CAMPAIGNS,
                                 campaigns.manifest(demo.demo_bundle(), hub.key))

        async def refused_once() -> bool:
            return a.sync is not None and a.sync.refused["stale_version"] >= 1

        await wait_for(refused_once, "the older bundle refused")
        assert a.sync.refused["stale_version"] == 1

        await a.sync.publish_status()

        async def hub_has_it() -> bool:
            stores = (await hub.status())["stores"]
            return any(s["store_id"] == "S001" and s["campaign_refusals"] == 1 for s in stores)

        await wait_for(hub_has_it, "the hub to hear of the refusal")
        cfg = tmp_path / "hub.toml"
        cfg.write_text(f'[hub]\ndatabase = "{tmp_path / "hub" / "hub.db"}"\n'
                       f'data_dir = "{tmp_path / "hub"}"\n', encoding="utf-8")
        assert await asyncio.to_thread(hub_main, ["--config", str(cfg), "status"]) == 0
        header, row = capsys.readouterr().out.splitlines()[:2]
        column = header.split().index("campaign_refusals")
        assert row.split()[0] == "S001" and row.split()[column] == "1"
        assert signing.key_id(hub.key)  # the same key signed both bundles
    finally:
        await a.close()


async def test_a_card_tapped_with_the_hub_unreachable_says_so_on_the_lane(
        tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sync={"broker_host": "127.0.0.1", "broker_port": free_port()},
                      lanes=[{"terminal_id": "POS-1", "simulated": True}])
    async with StoreGateway(cfg) as svc:
        assert svc.devices is not None
        reader = svc.devices.by_terminal["POS-1"].sim_reader
        assert reader is not None
        events = svc.bus.subscribe("POS-1")
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.05)  # let the subscription start
        await reader.tap("04FFFFFF")
        event = await asyncio.wait_for(waiting, 10)
        while event["type"] != "card.unknown":
            event = await asyncio.wait_for(anext(events), 10)
        assert event["uid"] == "04FFFFFF" and event["online"] == "unreachable"
