"""Lanes on real device paths, seen by the POS on its WebSocket (real uvicorn + websockets client).

- Card readers: pyscard → a private pcscd → vpcd → a virtual card (``tests/support/vpcd.py``,
  fixtures reused from ``tests/drivers/conftest.py``); the lane's ``card_reader`` pattern picks the
  reader, exactly as configured in production.
- Wedge scanners: there is no /dev/input here (see shared NOTES), so each configured scanner path
  is opened through ``DeviceManager(scanner_opener=...)`` as a real ``evdev.InputDevice`` reading
  packed ``input_event`` records from a pipe (``tests/drivers/test_scanner.py``).

Timeouts are safety limits only; nothing here measures speed (``membergate-edge bench-devices``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from drivers.base import Health
from drivers.scanner import EvdevDevice
from edge import demo
from edge.config import LaneSection
from edge.devices import DeviceManager
from edge.gateway import StoreGateway
from edge.service import EdgeService
from protocol.ids import member_qr
from tests.drivers import conftest as driver_fixtures
from tests.drivers.conftest import MakeVirtualCard
from tests.drivers.test_scanner import ENTER, PipeInputDevice, us_keys
from tests.edge.conftest import TOKEN, TOKEN2, make_config, register
from tests.support.serving import pos_server, serving
from tests.support.vpcd import IsoMemberCard, UidCard

# The driver tests' PC/SC fixtures, as they are: a private pcscd with the vpcd readers (an instance
# of this module's own when the driver tests run in the same session: whichever was started last
# is the one PC/SC clients reach, see drivers/vpcd_card.py), and virtual cards that are removed,
# and seen gone, after each test.
pcscd_harness = driver_fixtures.pcscd_harness
make_virtual_card = driver_fixtures.make_virtual_card

LIMIT = 10.0  # seconds any one expected event may take: a safety net against hangs
READER0, READER1 = "Virtual PCD 00 00", "Virtual PCD 00 01"
UID = bytes.fromhex("04A1B2C3")
UNBOUND = bytes.fromhex("04FFEE01")
UNBOUND7 = bytes.fromhex("04112233445566")
EAN_A, EAN_B = "6901234567892", "4006381333931"
SCANNER_A = "/dev/input/by-id/usb-Lane1_Scanner-event-kbd"
SCANNER_B = "/dev/input/by-id/usb-Lane2_Scanner-event-kbd"


# --------------------------------------------------------------------------------------------
# The POS side: a real server and WebSocket clients


@contextlib.asynccontextmanager
async def serve(service: EdgeService) -> AsyncIterator[str]:
    async with serving(pos_server(service), LIMIT) as port:
        yield f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def pos(address: str, token: str) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(f"ws://{address}/v1/events?token={token}") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), LIMIT))
        assert hello["type"] == "hello"
        yield ws


async def next_event(ws: ClientConnection, kind: str, seen: list[dict[str, Any]] | None = None
                     ) -> dict[str, Any]:
    """The next event of ``kind`` on ``ws``; the ones skipped on the way go to ``seen``."""
    skipped: list[dict[str, Any]] = [] if seen is None else seen
    try:
        async with asyncio.timeout(LIMIT):
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == kind:
                    return event
                skipped.append(event)
    except TimeoutError:
        pytest.fail(f"no {kind} within {LIMIT}s; saw {[e['type'] for e in skipped]}")


async def nothing_but(ws: ClientConnection, service: EdgeService, terminal: str,
                      allowed: set[str]) -> list[dict[str, Any]]:
    """Everything ``terminal`` received up to a marker published now: only ``allowed`` kinds."""
    service.bus.publish("test.marker", terminal)
    seen: list[dict[str, Any]] = []
    await next_event(ws, "test.marker", seen)
    assert {e["type"] for e in seen} <= allowed, seen
    return seen


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(int(LIMIT / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"not within {LIMIT}s: {what}")


# --------------------------------------------------------------------------------------------
# Card readers over PC/SC


@pytest.fixture
async def card_lanes(tmp_path: Path, make_virtual_card: MakeVirtualCard
                     ) -> AsyncIterator[tuple[EdgeService, str]]:
    """POS-1 owns vpcd slot 0, POS-2 slot 1; the service opens them itself from its config.

    ``make_virtual_card`` comes first: it (re)starts this test's pcscd before the monitor opens.
    """
    cfg = make_config(tmp_path, lanes=[
        {"terminal_id": "POS-1", "card_reader": f"^{READER0}$"},
        {"terminal_id": "POS-2", "card_reader": f"^{READER1}$"},
    ])
    async with StoreGateway(cfg) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        devices = svc.devices
        assert devices is not None and devices.monitor is not None
        await until(lambda: all(
            (s := devices.health.get(r)) is not None and s.health is Health.CONNECTED
            for r in (READER0, READER1)), "both vpcd readers connected")
        async with serve(svc) as address:
            yield svc, address


async def test_card_tap_identifies_the_member_on_the_lanes_open_sale(
        card_lanes: tuple[EdgeService, str], make_virtual_card: MakeVirtualCard
) -> None:
    svc, address = card_lanes
    m = await register(svc, "13700000001", card=UID.hex().upper(), name="王芳")
    async with pos(address, TOKEN) as ws:
        card = make_virtual_card(UidCard(UID), slot=0)
        identified = await next_event(ws, "member.identified")
        assert identified["terminal_id"] == "POS-1"
        assert identified["member_id"] == m["member_id"] and identified["by"] == "card_uid"
        cart = svc.carts.latest_open("POS-1")
        assert cart is not None and cart.member_id == m["member_id"]
        assert cart.sale_id == identified["sale_id"]

        card.remove()
        assert (await next_event(ws, "card.removed"))["device_id"] == READER0
        card.insert()
        again = await next_event(ws, "member.identified")
        assert again["member_id"] == m["member_id"]
        assert again["sale_id"] == identified["sale_id"]  # the same open sale, not a new one
        assert card.apdus.count(bytes.fromhex("FFCA000000")) == 2
    assert svc.carts.latest_open("POS-2") is None


async def test_unknown_card_is_an_event_and_opens_no_sale(
        card_lanes: tuple[EdgeService, str], make_virtual_card: MakeVirtualCard
) -> None:
    svc, address = card_lanes
    async with pos(address, TOKEN) as ws:
        make_virtual_card(UidCard(UNBOUND), slot=0)
        unknown = await next_event(ws, "card.unknown")
        assert unknown["uid"] == UNBOUND.hex().upper() and unknown["device_id"] == READER0
        await nothing_but(ws, svc, "POS-1", {"device.health"})
    assert svc.carts.latest_open("POS-1") is None


async def test_member_number_on_the_card_identifies_by_member_code(
        card_lanes: tuple[EdgeService, str], make_virtual_card: MakeVirtualCard
) -> None:
    svc, address = card_lanes
    m = await register(svc, "13700000002", name="Zhao Lei")  # no card bound
    async with pos(address, TOKEN) as ws:
        card = make_virtual_card(IsoMemberCard(m["member_code"], uid=UNBOUND7), slot=0)
        identified = await next_event(ws, "member.identified")
        assert identified["member_id"] == m["member_id"] and identified["by"] == "member_code"
        assert card.apdus[0] == bytes.fromhex("FFCA000000")  # the UID was tried first
    cart = svc.carts.latest_open("POS-1")
    assert cart is not None and cart.member_id == m["member_id"]


async def test_each_reader_belongs_to_its_own_lane(
        card_lanes: tuple[EdgeService, str], make_virtual_card: MakeVirtualCard
) -> None:
    svc, address = card_lanes
    m = await register(svc, "13700000003", card=UID.hex().upper())
    async with pos(address, TOKEN) as ws1, pos(address, TOKEN2) as ws2:
        make_virtual_card(UidCard(UID), slot=1)
        identified = await next_event(ws2, "member.identified")
        assert identified["terminal_id"] == "POS-2" and identified["member_id"] == m["member_id"]
        await nothing_but(ws1, svc, "POS-1", {"device.health"})
    assert svc.carts.latest_open("POS-1") is None
    cart = svc.carts.latest_open("POS-2")
    assert cart is not None and cart.member_id == m["member_id"]


# --------------------------------------------------------------------------------------------
# Wedge scanners through evdev's read path


@pytest.fixture
def pipe_scanners() -> Iterator[dict[str, PipeInputDevice]]:
    devices = {SCANNER_A: PipeInputDevice("Lane 1 Scanner"),
               SCANNER_B: PipeInputDevice("Lane 2 Scanner")}
    yield devices
    for device in devices.values():
        device.close_writer()
        if not device.closed:
            device.close()


@pytest.fixture
async def scanner_lanes(tmp_path: Path, pipe_scanners: dict[str, PipeInputDevice]
                        ) -> AsyncIterator[tuple[EdgeService, str]]:
    """A service started without lanes, then given a manager whose scanner paths open pipes."""
    opened: list[str] = []

    def opener(path: str) -> EvdevDevice:
        opened.append(path)
        return pipe_scanners[path]

    async with StoreGateway(make_config(tmp_path)) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        assert svc.devices is None  # no lanes configured: the service opened nothing
        lanes = [LaneSection(terminal_id="POS-1", scanners=[SCANNER_A], scan_adds_products=False),
                 LaneSection(terminal_id="POS-2", scanners=[SCANNER_B],
                             scan_adds_products=False)]
        svc.devices = await svc.around(DeviceManager(svc, lanes=lanes, scanner_opener=opener))
        devices = svc.devices
        await until(lambda: all(
            (s := devices.health.get(p)) is not None and s.health is Health.CONNECTED
            for p in (SCANNER_A, SCANNER_B)), "both scanners connected")
        assert sorted(opened) == [SCANNER_A, SCANNER_B]
        assert {h.device_id for h in svc.device_health()} == {SCANNER_A, SCANNER_B}
        async with serve(svc) as address:
            yield svc, address
    # The service closed the manager it was given: the scanners let their devices go.
    assert svc.devices is None
    assert all(d.closed and not d.grabbed for d in pipe_scanners.values())


async def test_member_qr_from_a_wedge_scanner_identifies_on_its_lane(
        scanner_lanes: tuple[EdgeService, str], pipe_scanners: dict[str, PipeInputDevice]
) -> None:
    svc, address = scanner_lanes
    m = await register(svc, "13700000004")
    code = member_qr(m["member_code"])
    async with pos(address, TOKEN) as ws:
        pipe_scanners[SCANNER_A].send(us_keys(code) + ENTER)
        scan = await next_event(ws, "scan")
        assert scan["code"] == code and scan["device_id"] == SCANNER_A
        identified = await next_event(ws, "member.identified")
        assert identified["member_id"] == m["member_id"] and identified["by"] == "qr"
    cart = svc.carts.latest_open("POS-1")
    assert cart is not None and cart.member_id == m["member_id"]


async def test_ean_from_a_wedge_scanner_is_a_scan_event(
        scanner_lanes: tuple[EdgeService, str], pipe_scanners: dict[str, PipeInputDevice]
) -> None:
    svc, address = scanner_lanes
    async with pos(address, TOKEN) as ws:
        pipe_scanners[SCANNER_A].send(us_keys(EAN_A) + ENTER)
        scan = await next_event(ws, "scan")
        assert scan == {**scan, "terminal_id": "POS-1", "code": EAN_A, "device_id": SCANNER_A}
        await nothing_but(ws, svc, "POS-1", set())
    assert svc.carts.latest_open("POS-1") is None  # a product code opens nothing by itself


async def test_two_scanners_on_two_lanes_interleaved(
        scanner_lanes: tuple[EdgeService, str], pipe_scanners: dict[str, PipeInputDevice]
) -> None:
    svc, address = scanner_lanes
    m = await register(svc, "13700000005")
    code_b = member_qr(m["member_code"])
    keys_a, keys_b = us_keys(EAN_A) + ENTER, us_keys(code_b) + ENTER
    a, b = pipe_scanners[SCANNER_A], pipe_scanners[SCANNER_B]
    async with pos(address, TOKEN) as ws1, pos(address, TOKEN2) as ws2:
        # A few keys of one, a few of the other, each read before the next chunk is written.
        for i in range(0, max(len(keys_a), len(keys_b)), 4):
            for device, keys in ((a, keys_a), (b, keys_b)):
                if keys[i:i + 4]:
                    device.send(keys[i:i + 4])
                    await device.drained()
        scan_a = await next_event(ws1, "scan")
        scan_b = await next_event(ws2, "scan")
        assert (scan_a["code"], scan_a["device_id"]) == (EAN_A, SCANNER_A)
        assert (scan_b["code"], scan_b["device_id"]) == (code_b, SCANNER_B)
        assert (await next_event(ws2, "member.identified"))["member_id"] == m["member_id"]
        await nothing_but(ws1, svc, "POS-1", set())
        await nothing_but(ws2, svc, "POS-2", {"sale.opened", "member.identified"})
    assert svc.carts.latest_open("POS-1") is None
    cart = svc.carts.latest_open("POS-2")
    assert cart is not None and cart.member_id == m["member_id"]
