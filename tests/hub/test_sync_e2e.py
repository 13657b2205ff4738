"""Two stores and the hub through a real Mosquitto: uplink, directory, offline, campaigns."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge import demo
from edge.errors import EdgeError
from edge.gateway import StoreGateway, open_gateway
from edge.service import EdgeService
from hub.app import Hub
from hub.config import HubConfig
from hub.ledger import audit
from hub.members import directory
from protocol import signing, topics
from protocol.codec import CodecError, decode, encode
from protocol.events import Event, EventBatch, MemberProfileChanged
from protocol.mqtt import MqttClient
from protocol.sync import DirectoryPage
from tests.edge.conftest import make_config, register, sell
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def hub_config(tmp_path: Path, broker: Mosquitto, database: str | None = None,
               api_token: str | None = None) -> HubConfig:
    return HubConfig.model_validate({
        "hub": {"database": database or str(tmp_path / "hub" / "hub.db"),
                "data_dir": str(tmp_path / "hub")},
        "broker": {"host": broker.host, "port": broker.port},
        **({"api": {"token": api_token}} if api_token else {}),
    })


async def start_store(tmp_path: Path, store_id: str, number: int, broker: Mosquitto,
                      hub: Hub, **sync: Any) -> EdgeService:
    (tmp_path / store_id).mkdir(exist_ok=True)
    cfg = make_config(tmp_path / store_id, store={"store_id": store_id, "store_number": number},
                      sync={"broker_host": broker.host, "broker_port": broker.port,
                            "hub_public_key": signing.public_b64(hub.key),
                            "ack_timeout_s": 2.0, **sync})
    svc = await open_gateway(cfg)
    await svc.apply_bundle(demo.demo_bundle())
    return svc


@pytest.fixture
async def hub(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Hub]:
    async with Hub(hub_config(tmp_path, mosquitto)) as h:
        yield h


async def drained(svc: EdgeService) -> bool:
    assert svc.sync is not None
    status = await svc.sync.status()
    return status.outbox_depth == 0 and status.acked_seq == status.last_seq


async def test_a_member_of_store_a_is_known_in_store_b_and_balances_agree(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        m = await register(a, "13700000001", card="04C0FFEE", name="王芳")
        mid = m["member_id"]
        await sell(a, [("A", "grocery", 2, 10_000)], member_id=mid)
        await wait_for(lambda: drained(a), "store A drained")

        async def b_knows() -> bool:
            try:
                return bool(await b.find_member_id("card_uid", "04C0FFEE") == mid)
            except Exception:
                return False

        await wait_for(b_knows, "store B to recognise the card")

        async def b_shows_the_points() -> bool:
            return bool((await b.member(mid))["points"] == 200)

        # The registration and the sale may reach the hub in two batches, and B the member's
        # entry between them: B recognises the card first, then shows the sale's points.
        await wait_for(b_shows_the_points, "store B to show the points earned at A")
        assert (await b.find_member_id("phone", "13700000001")) == mid

        # Store B loses the broker and keeps selling.
        mosquitto.kill()
        await sell(b, [("B", "grocery", 1, 5_000)], member_id=mid)
        assert (await b.member(mid))["points"] == 250
        await asyncio.sleep(0.5)
        mosquitto.start()
        await wait_for(lambda: drained(b), "store B drained after the outage")
        await wait_for(lambda: drained(a), "store A drained after the outage")

        async def a_sees_b() -> bool:
            return bool((await a.member(mid))["points"] == 250)

        await wait_for(a_sees_b, "store A to see store B's points")
        held = await hub.db.transaction(audit.balances)
        assert held[mid] == (250, 0, 0)
        check = await hub.db.transaction(audit.compare)
        assert check["mismatches"] == []

        # A campaign pushed from HQ reaches both stores, verified and applied.
        bundle = demo.demo_bundle().model_copy(update={"version": 2})
        await hub.push_campaigns(bundle)

        async def both_have_v2() -> bool:
            sa, sb = await a.sync.status(), await b.sync.status()  # type: ignore[union-attr]
            return sa.campaign_versions.get("fleet") == 2 == sb.campaign_versions.get("fleet")

        await wait_for(both_have_v2, "campaign version 2 in both stores")
        status = await hub.status()
        assert {s["store_id"] for s in status["stores"]} == {"S001", "S002"}
    finally:
        await a.close()
        await b.close()


async def test_forged_or_stale_campaigns_are_refused(tmp_path: Path, mosquitto: Mosquitto,
                                                     hub: Hub) -> None:
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        assert a.sync is not None
        await a.sync.mqtt.wait_connected(10)
        rogue_key = signing.new_private_key()
        from hub.campaigns.bundles import manifest

        forged = manifest(demo.demo_bundle().model_copy(update={"version": 9}), rogue_key)
        await a.apply_bundle(demo.demo_bundle().model_copy(update={"version": 2}))
        stale = manifest(demo.demo_bundle(), hub.key)  # version 1: the store holds 2
        async with MqttClient(mosquitto.host, mosquitto.port, client_id="rogue") as rogue:
            await rogue.wait_connected(10)
            await rogue.publish(topics.FLEET_CAMPAIGNS, forged)
            await rogue.publish(topics.FLEET_CAMPAIGNS, stale)
            await rogue.publish(topics.FLEET_CAMPAIGNS, b"\xc1garbage")

        async def refused() -> bool:
            r = a.sync.refused  # type: ignore[union-attr]
            return r["bad_signature"] >= 1 and r["stale_version"] >= 1 and r["malformed"] >= 1

        await wait_for(refused, "the store to refuse all three")
        assert (await a.sync.status()).campaign_versions == {"fleet": 2}
    finally:
        await a.close()


async def test_a_store_catches_up_in_its_page_size_and_refuses_a_malformed_page(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    """A store asks for the page size it is configured with (each page is one write
    transaction its checkouts wait behind; a store that has not sold yet asks for
    ``directory_page_idle``); a malformed page is refused with a counter, nothing of it
    applied, and the catch-up goes on."""
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    pages: list[DirectoryPage] = []
    try:
        ids = [(await register(b, f"1370000{i:04d}", name=f"会员{i}"))["member_id"]
               for i in range(7)]
        await wait_for(lambda: drained(b), "store B drained")
        async with MqttClient(mosquitto.host, mosquitto.port, client_id="watcher") as watch:
            await watch.wait_connected(10)
            await watch.subscribe(topics.directory_page("S001"), qos=1)

            async def collect() -> None:
                async for message in watch.messages():
                    with contextlib.suppress(CodecError):
                        pages.append(decode(message.payload, DirectoryPage))

            collecting = asyncio.create_task(collect())
            a = await start_store(tmp_path, "S001", 1, mosquitto, hub, directory_page_idle=3)
            try:
                async def a_knows_all() -> bool:  # from its own directory, not online
                    marks = ",".join("?" * len(ids))
                    return bool(await a.db.read(lambda c: c.execute(
                        f"SELECT count(*) FROM members WHERE member_id IN ({marks})",
                        ids).fetchone()[0]) == len(ids))

                await wait_for(a_knows_all, "store A to know B's seven members")
                assert len(pages) >= 3 and all(len(p.members) <= 3 for p in pages)

                assert a.sync is not None
                # Quiet first: the hub's keeper gives members their lifecycle stage (a new
                # change each, the stores told), and store A takes those pages too.
                await hub.keep_segments()
                head = await hub.db.read(directory.head)

                async def a_at_head() -> bool:
                    return a.sync is not None and a.sync.checkpoint >= head

                await wait_for(a_at_head, "store A at the directory's head")
                checkpoint = a.sync.checkpoint
                await watch.publish(topics.directory_page("S001"), b"\x81\xa1v\x01")
                await watch.publish(topics.directory_page("S001"), b"\xc1garbage")

                async def refused() -> bool:
                    return a.sync is not None and (
                        a.sync.refused["malformed"] + a.sync.refused["invalid"] >= 2)

                await wait_for(refused, "store A to refuse both pages")
                assert a.sync.checkpoint == checkpoint  # nothing of them applied
                late = (await register(b, "13711112222", name="后来者"))["member_id"]

                async def a_knows_late() -> bool:
                    return bool(await a.db.read(lambda c: c.execute(
                        "SELECT count(*) FROM members WHERE member_id = ?",
                        (late,)).fetchone()[0]) == 1)

                await wait_for(a_knows_late, "store A to catch up after the bad pages")
            finally:
                await a.close()
                collecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collecting
    finally:
        await b.close()


async def test_a_selling_store_asks_for_small_pages_and_a_quiet_one_for_large(
        tmp_path: Path) -> None:
    from edge.sync import SELLING_WINDOW_S, SyncClient

    config = make_config(tmp_path, sync={"broker_host": "127.0.0.1", "directory_page": 7,
                                         "directory_page_idle": 700})
    async with StoreGateway(config.model_copy(
            update={"sync": config.sync.model_copy(update={"broker_host": None})})) as svc:
        client = SyncClient(svc, config.sync)  # not started: only its choice is asked
        assert client.page_size() == 700  # nothing sold since the start
        await register(svc, "13722223333")  # a till's write
        assert client.page_size() == 7
        svc.last_till_write -= SELLING_WINDOW_S + 1  # a minute later, nothing more
        assert client.page_size() == 700


async def test_bad_uplink_input_is_refused_and_the_link_keeps_working(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    mid = "01900000-0000-7000-8000-000000000001"

    def batch(store: str, seq: int) -> bytes:
        body = MemberProfileChanged(member_id=mid, name=f"n{seq}", changed=["name"])
        return encode(EventBatch(store_id=store, epoch=1, events=[Event(
            event_id=f"{store}-{seq}", store_id=store, epoch=1, seq=seq, hlc=seq, body=body)]))

    assert hub.link.mqtt is not None
    await hub.link.mqtt.wait_connected(10)  # the hub is subscribed before anything is published
    async with MqttClient(mosquitto.host, mosquitto.port, client_id="edge-S001") as c:
        await c.wait_connected(10)
        await c.publish(topics.events("S001"), b"\x92\x01")  # msgpack, but not a map
        await c.publish(topics.events("S001"), b"\xc1\xc1")  # not msgpack
        await c.publish(topics.events("S001"), batch("S002", 1))  # another store's events
        oversized = b"\x91" + b"\xc4" + b"\x00"  # truncated bin: malformed
        await c.publish(topics.events("S001"), oversized)
        await c.publish(topics.events("S001"), b"\x00" * (hub.config.hub.max_payload_bytes + 1))
        await c.publish(topics.events("S001"), batch("S001", 1))  # and then a good one

        async def counted() -> bool:
            return hub.pipeline.applied_events == 1

        await wait_for(counted, "the good batch applied after the bad ones")
    assert hub.refusals.counts["wrong_store"] == 1
    assert hub.refusals.counts["oversized"] == 1
    assert hub.refusals.counts["malformed"] + hub.refusals.counts["invalid"] == 3
    status = await hub.status()
    s001 = next(s for s in status["stores"] if s["store_id"] == "S001")
    assert s001["acked_seq"] == 1 and sum(s001["refused_at_hub"].values()) == 5


async def test_requests_in_another_stores_name_are_refused_and_change_nothing(
        mosquitto: Mosquitto, hub: Hub) -> None:
    from protocol.sync import DirectoryRequest, RpcRequest, StoreStatus

    assert hub.link.mqtt is not None
    await hub.link.mqtt.wait_connected(10)
    before = await hub.db.transaction(lambda tx: (
        tx.scalar("SELECT count(*) FROM grants", default=0),
        tx.scalar("SELECT count(*) FROM stores", default=0)))
    async with MqttClient(mosquitto.host, mosquitto.port, client_id="edge-S001") as c:
        await c.wait_connected(10)
        await c.subscribe(topics.rpc_reply("S001"), qos=1)
        await c.subscribe(topics.directory_page("S001"), qos=1)
        await c.publish(topics.rpc_request("S001"), encode(RpcRequest(
            request_id="r1", store_id="S002", kind="authorize", member_id="m", points=5)))
        await c.publish(topics.directory_request("S001"), encode(DirectoryRequest(
            store_id="S002", after=0, request_id="d1")))
        await c.publish(topics.status("S001"), encode(StoreStatus(
            store_id="S002", epoch=1, last_seq=0, acked_seq=0, outbox_depth=0,
            directory_checkpoint=0, at_ms=0)))
        await c.publish(topics.rpc_request("S001"), b"\xc1")  # and one that is not msgpack

        async def counted() -> bool:
            return sum(hub.refusals.counts.values()) == 4

        await wait_for(counted, "four refusals")
        # Refused before any work: no reply went out on S001's topics.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for message in c.messages():
                    raise AssertionError(f"a refused request was answered on {message.topic}")
    assert hub.refusals.counts["wrong_store"] == 3 and hub.refusals.counts["malformed"] == 1
    after = await hub.db.transaction(lambda tx: (
        tx.scalar("SELECT count(*) FROM grants", default=0),
        tx.scalar("SELECT count(*) FROM stores WHERE status IS NOT NULL", default=0)))
    assert after == (before[0], 0)


async def test_hq_adjustments_and_coupons_reach_every_store_through_the_directory(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        mid = (await register(a, "13700000002", card="04C0FFEF"))["member_id"]
        await sell(a, [("A", "grocery", 2, 10_000)], member_id=mid)
        await wait_for(lambda: drained(a), "store A drained")
        answer = await hub.adjust_points(mid, delta=500, reason="apology for a late delivery",
                                         actor="li.wei@hq", key="adj-1")
        assert answer.status == 201 and answer.body["points"] == 700

        async def shows(svc: EdgeService, points: int) -> bool:
            try:
                return bool((await svc.member(mid))["points"] == points)
            except Exception:  # not in this store's directory yet
                return False

        # Each store shows its own ledger plus the other streams' shares, HQ's among them.
        await wait_for(lambda: shows(b, 700), "store B to show the adjusted balance")
        await wait_for(lambda: shows(a, 700), "store A to show the adjusted balance")

        issued = await hub.issue_coupon(mid, kind="amount_off", value=1_000, min_spend=0,
                                        categories=[], expires_on=None, campaign_id=None,
                                        key="cpn-1")
        code = issued.body["coupon_code"]

        async def holds_coupon(svc: EdgeService) -> bool:
            return code in [c["coupon_code"] for c in (await svc.member(mid))["coupons"]]

        await wait_for(lambda: holds_coupon(a), "store A to hold the HQ coupon")
        await wait_for(lambda: holds_coupon(b), "store B to hold the HQ coupon")
        # Store B is cut off and redeems it from what it holds (the till scans its QR).
        mosquitto.kill()
        sale = await sell(b, [("B", "grocery", 1, 5_000)], member_id=mid,
                          coupons=[issued.body["qr"]])
        assert sale["total"] == 4_000
        mosquitto.start()
        await wait_for(lambda: drained(b), "store B drained after the outage")

        async def a_retired() -> bool:
            return not await holds_coupon(a)

        # The hub saw it redeemed: the entry drops it, and store A retires it.
        await wait_for(a_retired, "store A to retire the redeemed coupon")
        with pytest.raises(EdgeError, match="already been used"):
            await sell(a, [("A", "grocery", 1, 5_000)], member_id=mid, coupons=[code])
        check = await hub.db.read(audit.compare)
        assert check["mismatches"] == []
        status = await hub.status()
        assert {s["store_id"] for s in status["stores"]} == {"S001", "S002"}
    finally:
        await a.close()
        await b.close()


async def test_nobody_sends_in_the_name_of_a_hub_stream(mosquitto: Mosquitto, hub: Hub) -> None:
    assert hub.link.mqtt is not None
    await hub.link.mqtt.wait_connected(10)
    batch = EventBatch(store_id="HQ", epoch=1, events=[Event(
        event_id="forged", store_id="HQ", epoch=1, seq=1, hlc=1,
        body=MemberProfileChanged(member_id="m", name="x", changed=["name"]))])
    async with MqttClient(mosquitto.host, mosquitto.port, client_id="rogue") as rogue:
        await rogue.wait_connected(10)
        await rogue.publish(topics.events("HQ"), encode(batch))

        async def refused() -> bool:
            return hub.refusals.counts["reserved_store"] == 1

        await wait_for(refused, "the forged HQ batch to be refused")
    assert await hub.db.read(lambda tx: tx.scalar("SELECT count(*) FROM events")) == 0
