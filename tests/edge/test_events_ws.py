"""The POS WebSocket event stream, through a real uvicorn server and a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from edge.service import EdgeService
from tests.edge.conftest import TOKEN, TOKEN2, key
from tests.support.serving import pos_server, serving


@pytest.fixture
async def server(service: EdgeService) -> AsyncIterator[str]:
    # An open WebSocket must not hold the shutdown up (``serving`` waits 10 s at most).
    async with serving(pos_server(service)) as port:
        yield f"127.0.0.1:{port}"


async def _next(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next event of ``kind``, skipping others; fails after 5 s."""
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if event["type"] == kind:
            return event


async def test_a_sale_streams_its_events_to_its_terminal(server: str,
                                                         service: EdgeService) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with websockets.connect(f"ws://{server}/v1/events?token={TOKEN}") as ws, \
            httpx.AsyncClient(base_url=f"http://{server}", headers=headers) as http:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello == {"type": "hello", "terminal_id": "POS-1",
                         "store_id": service.config.store.store_id}
        r = await http.post("/v1/members", json={"phone": "13900139000", "name": "韩梅梅",
                                                  "card_uid": "04AABBCC"},
                            headers={"Idempotency-Key": key()})
        assert r.status_code == 201, r.text
        member_id = r.json()["member_id"]
        assert (await _next(ws, "member.registered"))["member_id"] == member_id

        sid = (await http.post("/v1/sales")).json()["sale_id"]
        assert (await _next(ws, "sale.opened"))["sale_id"] == sid
        await http.post(f"/v1/sales/{sid}/member", json={"card_uid": "04AABBCC"},
                        headers={"Idempotency-Key": key()})
        identified = await _next(ws, "member.identified")
        assert identified["sale_id"] == sid and identified["member_id"] == member_id
        await http.post(f"/v1/sales/{sid}/lines", json={
            "sku": "6901234567892", "name": "牛奶", "category": "dairy", "qty": 3,
            "unit_price": 1_000}, headers={"Idempotency-Key": key()})
        changed = await _next(ws, "sale.changed")
        assert changed["sale_id"] == sid and changed["total"] == 3_000
        r = await http.post(f"/v1/sales/{sid}/finalize",
                            json={"tenders": [{"kind": "cash", "amount": 3_000}]},
                            headers={"Idempotency-Key": key()})
        assert r.status_code == 200, r.text
        done = await _next(ws, "sale.finalized")
        assert done["sale_id"] == sid and done["total"] == 3_000
        assert service.bus.subscribers == 1


async def test_a_terminal_sees_only_its_own_sales(server: str, service: EdgeService) -> None:
    async with websockets.connect(f"ws://{server}/v1/events",
                                  additional_headers={"Authorization": f"Bearer {TOKEN2}"}) as ws2:
        assert json.loads(await ws2.recv())["terminal_id"] == "POS-2"
        await service.open_sale("POS-1")  # another lane's sale
        mine = await service.open_sale("POS-2")
        event = await _next(ws2, "sale.opened")
        assert event["sale_id"] == mine["sale_id"]


async def test_no_token_no_stream(server: str) -> None:
    for url in (f"ws://{server}/v1/events", f"ws://{server}/v1/events?token=wrong"):
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            async with websockets.connect(url) as ws:
                await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_a_client_that_leaves_is_unsubscribed(server: str, service: EdgeService) -> None:
    async with websockets.connect(f"ws://{server}/v1/events?token={TOKEN}") as ws:
        await ws.recv()
        assert service.bus.subscribers == 1
    for _ in range(500):
        if service.bus.subscribers == 0:
            break
        await asyncio.sleep(0.01)
    assert service.bus.subscribers == 0
    # Publishing after it left reaches no one and raises nothing.
    await service.open_sale("POS-1")
