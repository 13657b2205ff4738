"""Online answers from the hub through a real Mosquitto: lookup before the directory caught up,
authorisation beyond the offline allowance (escrow), and a clear refusal when the hub is away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.checkout import TenderRequest
from edge.errors import EdgeError
from edge.service import EdgeService
from hub.app import Hub
from hub.ledger import audit
from protocol import topics
from protocol.codec import decode
from protocol.ids import uuid7
from protocol.mqtt import MqttClient
from protocol.sync import RpcRequest
from tests.edge.conftest import register, sell
from tests.hub.test_sync_e2e import drained, hub, start_store, wait_for  # noqa: F401
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401


async def test_a_member_from_another_store_is_found_online_before_catch_up(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        assert b.sync is not None
        await b.sync.mqtt.wait_connected(10)

        async def no_catch_up() -> None:
            return None

        b.sync._request_directory = no_catch_up  # type: ignore[method-assign]
        m = await register(a, "13800009999", card="04E0E0E0", name="周杰")
        await wait_for(lambda: drained(a), "store A drained")
        assert (await b.find_member_id("card_uid", "04e0e0e0")) == m["member_id"]
        assert (await b.find_member_id("phone", "138 0000 9999")) == m["member_id"]
        assert (await b.member(m["member_id"]))["name"] == "周杰"
        with pytest.raises(EdgeError) as err:
            await b.find_member_id("card_uid", "04DEAD00")
        assert err.value.code == "unknown_card"
    finally:
        await a.close()
        await b.close()


async def member_with_points(store: EdgeService, phone: str) -> str:
    """A member registered at ``store`` with 910 points acknowledged by the hub, and an offline
    allowance there of 100 points (the default is 20,000: small, so sales go online)."""
    mid = str((await register(store, phone))["member_id"])
    await sell(store, [("A", "grocery", 1, 100_000)], member_id=mid)  # earns 910 points
    await wait_for(lambda: drained(store), "the store drained")
    await store.db.write(lambda c: c.execute(
        "INSERT INTO allowances(member_id, points_limit, sv_limit) VALUES (?, 100, 0)",
        (mid,)))
    return mid


async def test_spending_beyond_the_allowance_is_authorised_online(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    # Online authorisation alone: no standing allowances, which would hold half of the
    # member's balance at store A (tests/hub/test_allowances.py covers those).
    hub.pipeline.allowance = None
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        await a.sync.mqtt.wait_connected(10)  # type: ignore[union-attr]
        mid = await member_with_points(a, "13800008888")
        receipt = await sell(a, [("B", "grocery", 1, 2_000)], member_id=mid,
                             tenders=[TenderRequest(kind="points", points=500),
                                      TenderRequest(kind="cash", amount=1_500)])
        assert receipt["total"] == 2_000
        assert any(t["kind"] == "points" and t["points"] == 500 for t in receipt["tenders"])
        await wait_for(lambda: drained(a), "store A drained again")
        # The hub holds 910 - 500 + what the second sale earned; store B may not be authorised
        # beyond that (store A's grant of 400 is spent and acknowledged, so nothing is held).
        assert b.sync is not None
        reply = await b.sync.rpc(RpcRequest(request_id=uuid7(), store_id="S002",
                                            kind="authorize", member_id=mid, points=10_000))
        assert not reply.ok and reply.error == "insufficient_balance"
        reply = await b.sync.rpc(RpcRequest(request_id=uuid7(), store_id="S002",
                                            kind="authorize", member_id=mid, points=300))
        assert reply.ok and reply.granted_points == 300
        # With that held for store B, store A cannot be granted the same points again.
        balance = (await a.member(mid))["points"]
        reply = await a.sync.rpc(RpcRequest(  # type: ignore[union-attr]
            request_id=uuid7(), store_id="S001", kind="authorize", member_id=mid,
            points=balance - 300 + 1))
        assert not reply.ok
    finally:
        await a.close()
        await b.close()


async def test_on_the_default_with_spending_not_yet_acknowledged_the_online_grant_suffices(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    """Store A runs on its configured default for the member and has spent 80 points the hub
    has not acknowledged yet. A sale needing 500 more asks online; the hub grants what it sees
    is needed, which misses the 80, so the store asks once more for the exact rest, within the
    same two seconds, and the sale goes through instead of being refused after a grant."""
    hub.pipeline.allowance = None  # online authorisation alone (no standing allowances)
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        assert a.sync is not None
        await a.sync.mqtt.wait_connected(10)
        mid = await member_with_points(a, "13800006666")
        forward = hub.link.on_events

        async def held(store_id: str, payload: bytes) -> None:
            return None  # batches are not applied, so nothing is acknowledged for now

        hub.link.on_events = held  # the link's one seam to the pipeline
        await sell(a, [("B", "grocery", 1, 200)], member_id=mid,
                   tenders=[TenderRequest(kind="points", points=80),  # within the 100
                            TenderRequest(kind="cash", amount=120)])
        # What the store asks is watched on the broker, as any subscriber would see it.
        async with MqttClient(mosquitto.host, mosquitto.port, client_id="rpc-watch") as watch:
            await watch.subscribe(topics.rpc_request("S001"), qos=1)
            await watch.wait_connected(10)
            receipt = await sell(a, [("C", "grocery", 1, 2_000)], member_id=mid,
                                 tenders=[TenderRequest(kind="points", points=500),
                                          TenderRequest(kind="cash", amount=1_500)])
            stream = watch.messages()
            async with asyncio.timeout(10):
                asked = [decode((await anext(stream)).payload, RpcRequest).points
                         for _ in range(2)]
        assert any(t["kind"] == "points" and t["points"] == 500 for t in receipt["tenders"])
        assert asked == [500, 80]  # the need, the rest
        hub.link.on_events = forward
        await wait_for(lambda: drained(a), "store A drained again")
        granted, spent = await hub.db.transaction(lambda tx: tx.one(
            "SELECT points_granted, points_spent FROM grants WHERE member_id = ?"
            " AND store_id = 'S001'", (mid,)))
        assert (granted, spent) == (580, 580)  # exactly what was spent: nothing left held
    finally:
        await a.close()


async def test_beyond_the_allowance_with_the_hub_away_is_a_clear_refusal(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        m = await register(a, "13800007777")
        mid = m["member_id"]
        await sell(a, [("A", "grocery", 1, 100_000)], member_id=mid)
        await a.db.write(lambda c: c.execute(
            "INSERT INTO allowances(member_id, points_limit, sv_limit) VALUES (?, 100, 0)",
            (mid,)))
        before = (await a.member(mid))["points"]
        mosquitto.kill()
        with pytest.raises(EdgeError) as err:
            await sell(a, [("B", "grocery", 1, 2_000)], member_id=mid,
                       tenders=[TenderRequest(kind="points", points=500),
                                TenderRequest(kind="cash", amount=1_500)])
        assert err.value.code == "allowance_exceeded"
        assert err.value.details["online"] in ("unreachable", "timeout")
        assert (await a.member(mid))["points"] == before  # nothing spent
    finally:
        await a.close()


async def test_stored_value_topped_up_in_one_store_is_spent_in_another(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811

    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        m = await register(a, "13800006666", card="04AB0001")
        mid = m["member_id"]
        top = await a.top_up(terminal_id="POS-1", idem_key="t1", member_id=mid, amount=50_000)
        assert top["bonus"] == 5_000  # top up 500 get 50
        await wait_for(lambda: drained(a), "store A drained")

        async def b_sees_it() -> bool:
            try:
                found = await b.find_member_id("card_uid", "04AB0001")
            except EdgeError:
                return False
            return bool((await b.member(found))["stored_value"]["total"] == 55_000)

        await wait_for(b_sees_it, "store B to see the stored value")
        receipt = await sell(b, [("B", "household", 1, 20_000)], member_id=mid,
                             tenders=[TenderRequest(kind="stored_value", amount=20_000)])
        assert receipt["member"]["stored_value"] == 35_000
        await wait_for(lambda: drained(b), "store B drained")

        async def a_sees_spend() -> bool:
            return bool((await a.member(mid))["stored_value"]["total"] == 35_000)

        await wait_for(a_sees_spend, "store A to see store B's spending")
        # Store A cannot spend what store B already spent.
        with pytest.raises(EdgeError) as err:
            await sell(a, [("C", "household", 1, 40_000)], member_id=mid,  # 370.00 due
                       tenders=[TenderRequest(kind="stored_value", amount=37_000)])
        assert err.value.code == "insufficient_stored_value"
        held = await hub.db.transaction(audit.balances)
        assert held[mid][1] + held[mid][2] == 35_000
        assert (await hub.db.transaction(audit.compare))["mismatches"] == []
        from tests.edge import invariants
        invariants.check(a.config.database.path)
        invariants.check(b.config.database.path)
    finally:
        await a.close()
        await b.close()


async def test_points_earned_in_one_store_are_redeemed_in_another_and_refunded(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:  # noqa: F811
    from tests.edge import invariants

    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        m = await register(a, "13800005555", card="04AB0002")
        mid = m["member_id"]
        await sell(a, [("A", "household", 1, 20_000)], member_id=mid)  # earns 200
        await wait_for(lambda: drained(a), "store A drained")

        async def b_sees_points() -> bool:
            try:
                found = await b.find_member_id("card_uid", "04AB0002")
            except EdgeError:
                return False
            return bool((await b.member(found))["points"] == 200)

        await wait_for(b_sees_points, "store B to see the points")
        # 150 points pay 1.50 at store B; the sale earns 10 more there.
        receipt = await sell(b, [("B", "household", 1, 1_150)], member_id=mid,
                             tenders=[TenderRequest(kind="points", points=150),
                                      TenderRequest(kind="cash", amount=1_000)])
        assert receipt["member"]["points_balance"] == 200 - 150 + receipt["points_earned"]
        with pytest.raises(EdgeError) as err:  # only 50 + earned are left anywhere
            await sell(b, [("C", "household", 1, 20_000)], member_id=mid,
                       tenders=[TenderRequest(kind="points", points=10_000),
                                TenderRequest(kind="cash", amount=10_000)])
        assert err.value.code in ("insufficient_points", "points_over_limit")
        invariants.check(b.config.database.path)
        refund = await b.refund(terminal_id="POS-1", idem_key="r-b", sale_id=receipt["sale_id"],
                                lines=None)
        assert refund["amount"] == 1_150
        assert (await b.member(mid))["points"] == 200
        invariants.check(b.config.database.path)
        await wait_for(lambda: drained(b), "store B drained")

        async def a_agrees() -> bool:
            return bool((await a.member(mid))["points"] == 200)

        await wait_for(a_agrees, "store A to agree")
        held = await hub.db.transaction(audit.balances)
        assert held[mid][0] == 200
        assert (await hub.db.transaction(audit.compare))["mismatches"] == []
    finally:
        await a.close()
        await b.close()
