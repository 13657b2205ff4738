"""Lanes: card taps and scans become POS events and identifications; finalize shows on the
display (a real pty for the serial display); device health reaches the API."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge import demo
from edge import directory as edge_directory
from edge.api import create_app
from edge.gateway import StoreGateway
from edge.service import EdgeService
from protocol.ids import member_qr
from protocol.sync import MemberEntry, TillMessage
from tests.edge.conftest import TOKEN, make_config, register, sell


async def _next(sub: AsyncIterator[dict[str, Any]], kind: str) -> dict[str, Any]:
    while True:
        event = await asyncio.wait_for(anext(sub), 5)
        if event["type"] == kind:
            return event


@pytest.fixture
def pty_port(tmp_path: Path) -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    yield master, os.ttyname(slave)  # type: ignore[misc]
    os.close(master)
    os.close(slave)


@pytest.fixture
async def lane_service(tmp_path: Path, pty_port: tuple[int, str]) -> AsyncIterator[EdgeService]:
    _, port = pty_port
    cfg = make_config(tmp_path, lanes=[
        {"terminal_id": "POS-1", "simulated": True,
         "display": {"kind": "serial", "port": port, "command_set": "cd5220",
                     "encoding": "gb2312"}},
        {"terminal_id": "POS-2", "simulated": True},
    ])
    async with StoreGateway(cfg) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        yield svc


def _read_display(master: int) -> bytes:
    out = b""
    while True:
        import select

        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            return out
        out += os.read(master, 4096)


async def test_card_tap_identifies_on_the_lane_and_greets(lane_service: EdgeService,
                                                          pty_port: tuple[int, str]) -> None:
    svc = lane_service
    master, _ = pty_port
    m = await register(svc, "13600000001", card="04D00D01", name="李雷")
    assert svc.devices is not None
    lane = svc.devices.by_terminal["POS-1"]
    assert lane.sim_reader is not None
    sub = svc.bus.subscribe("POS-1")
    first = asyncio.ensure_future(anext(sub))  # subscribe before the tap
    await asyncio.sleep(0.05)  # let the subscription start
    await lane.sim_reader.tap("04D00D01")
    events = [await asyncio.wait_for(first, 5)]
    while events[-1]["type"] != "member.identified":
        events.append(await asyncio.wait_for(anext(sub), 5))
    identified = events[-1]
    assert identified["member_id"] == m["member_id"] and identified["by"] == "card_uid"
    cart = svc.carts.latest_open("POS-1")
    assert cart is not None and cart.member_id == m["member_id"]
    # The other lane's sale is untouched.
    assert svc.carts.latest_open("POS-2") is None
    await asyncio.sleep(0.2)
    shown = await asyncio.to_thread(_read_display, master)
    assert "欢迎 李雷".encode("gb2312") in shown and b"\x1bQA" in shown


async def test_a_message_hq_left_greets_the_member_on_the_display(
        lane_service: EdgeService, pty_port: tuple[int, str]) -> None:
    """A journey's in-store message (in the member's directory entry) takes the display's
    second line when the member taps their card."""
    svc = lane_service
    master, _ = pty_port
    m = await register(svc, "13600000002", card="04D00D02", name="韩梅")
    entry = MemberEntry(member_id=m["member_id"], member_code=m["member_code"],
                        phone=m["phone"], name="韩梅", home_store="S001",
                        messages=[TillMessage(key="j:m:o:1", text="生日快乐送您礼券")])
    await svc._write(lambda conn, ctx: edge_directory.apply_entry(conn, ctx, entry))
    assert svc.devices is not None
    lane = svc.devices.by_terminal["POS-1"]
    assert lane.sim_reader is not None
    await asyncio.to_thread(_read_display, master)  # what was shown before
    await lane.sim_reader.tap("04D00D02")
    await asyncio.sleep(0.5)
    shown = await asyncio.to_thread(_read_display, master)
    assert "欢迎 韩梅".encode("gb2312") in shown
    assert "生日快乐送您礼券".encode("gb2312") in shown


async def test_unknown_card_and_bad_scans_are_events_not_crashes(
        lane_service: EdgeService) -> None:
    svc = lane_service
    assert svc.devices is not None
    lane = svc.devices.by_terminal["POS-2"]
    assert lane.sim_reader is not None and lane.sim_scanner is not None
    sub = svc.bus.subscribe("POS-2")
    pending = asyncio.ensure_future(_next(sub, "card.unknown"))
    await asyncio.sleep(0.05)  # let the subscription start
    await lane.sim_reader.tap("04FFFFFF")
    assert (await pending)["uid"] == "04FFFFFF"
    pending = asyncio.ensure_future(_next(sub, "scan.refused"))
    await asyncio.sleep(0.05)  # let the subscription start
    await lane.sim_scanner.scan("MGM:123")  # a member QR with an invalid code
    refused = await pending
    assert refused["error"] == "invalid_member_code"
    pending = asyncio.ensure_future(_next(sub, "scan"))
    await asyncio.sleep(0.05)  # let the subscription start
    await lane.sim_scanner.scan("6901234567892")
    assert (await pending)["code"] == "6901234567892"


async def test_member_qr_scan_identifies_and_finalize_shows_total(
        lane_service: EdgeService, pty_port: tuple[int, str]) -> None:
    svc = lane_service
    master, _ = pty_port
    m = await register(svc, "13600000002", name="韩梅")
    assert svc.devices is not None
    lane = svc.devices.by_terminal["POS-1"]
    assert lane.sim_scanner is not None
    sub = svc.bus.subscribe("POS-1")
    pending = asyncio.ensure_future(_next(sub, "member.identified"))
    await asyncio.sleep(0.05)  # let the subscription start
    await lane.sim_scanner.scan(member_qr(m["member_code"]))
    assert (await pending)["member_id"] == m["member_id"]
    await asyncio.to_thread(_read_display, master)  # drop the greeting
    cart = svc.carts.latest_open("POS-1")
    assert cart is not None
    await svc.add_line(cart.sale_id, "POS-1", "k-line", sku="A", name="A", category="grocery",
                       qty=1, unit_price=2_000)
    from edge.checkout import TenderRequest
    await svc.finalize(cart.sale_id, "POS-1", "k-fin",
                       [TenderRequest(kind="cash", amount=5_000)])
    shown = await asyncio.to_thread(_read_display, master)
    assert "合计 20.00".encode("gb2312") in shown and "找零 30.00".encode("gb2312") in shown


async def test_device_health_in_the_api(lane_service: EdgeService) -> None:
    app = create_app(lane_service, manage_lifetime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        devices = (await c.get("/v1/devices")).json()["devices"]
        kinds = {(d["device_id"], d["health"]) for d in devices}
        assert ("POS-1 display", "connected") in kinds
        assert ("POS-2 printer", "connected") in kinds
        r = await c.post("/v1/devices/simulated/tap", json={"card_uid": "04ABCDEF"})
        assert r.status_code == 200
        r = await c.post("/v1/devices/simulated/scan", json={"code": ""})
        assert r.status_code == 422
    # A sale still works end to end with devices attached.
    m = await register(lane_service, "13600000003")
    receipt = await sell(lane_service, [("A", "grocery", 1, 1_000)], member_id=m["member_id"])
    assert receipt["total"] == 1_000


async def test_finalize_prints_the_receipt_once_and_reprint_is_explicit(tmp_path: Path) -> None:
    from drivers.escpos_decode import decode_escpos, text_lines
    from edge.checkout import TenderRequest
    from tests.support.escpos_printer import TcpEscposPrinter

    with TcpEscposPrinter() as printer:
        cfg = make_config(tmp_path, lanes=[{
            "terminal_id": "POS-1",
            "printer": {"kind": "network", "host": printer.host, "port": printer.port}}])
        async with StoreGateway(cfg) as svc:
            await svc.apply_bundle(demo.demo_bundle())
            m = await register(svc, "13600000009", name="李雷")
            sale = await svc.open_sale("POS-1")
            sid = sale["sale_id"]
            await svc.identify_on_sale(sid, "POS-1", "k-id", "phone", "13600000009")
            await svc.add_line(sid, "POS-1", "k-l", sku="A", name="牛奶", category="dairy",
                               qty=3, unit_price=1_250)
            tenders = [TenderRequest(kind="cash", amount=5_000)]
            first = await svc.finalize(sid, "POS-1", "k-fin", tenders)
            again = await svc.finalize(sid, "POS-1", "k-fin", tenders)  # a POS retry
            assert again == first

            def printed(data: bytes) -> bool:
                return "37.50" in "\n".join(text_lines(decode_escpos(data)))

            await asyncio.to_thread(printer.wait_for, printed)
            await asyncio.sleep(1.5)  # time for a wrong second copy to arrive
            lines = text_lines(decode_escpos(printer.received))
            assert sum("牛奶" in line for line in lines) == 1
            assert any(m["member_code"] in line for line in lines)
            printer.clear()
            job = await svc.devices.reprint("POS-1", sid)  # type: ignore[union-attr]
            assert job
            data = await asyncio.to_thread(printer.wait_for, printed)
            assert any("REPRINT" in line for line in text_lines(decode_escpos(data)))


async def test_a_scanned_barcode_adds_the_product_and_the_display_shows_it(
        lane_service: EdgeService, pty_port: tuple[int, str]) -> None:
    from edge import products

    svc = lane_service
    master, _ = pty_port
    await svc.db.write(lambda c: products.upsert(c, demo.demo_products(), "CNY"))
    assert svc.devices is not None
    lane = svc.devices.by_terminal["POS-1"]
    assert lane.sim_scanner is not None
    sub = svc.bus.subscribe("POS-1")
    pending = asyncio.ensure_future(_next(sub, "sale.changed"))
    await asyncio.sleep(0.05)  # let the subscription start
    await lane.sim_scanner.scan("6901234567892")
    assert (await pending)["total"] == 1_250
    pending = asyncio.ensure_future(_next(sub, "scan.refused"))
    await asyncio.sleep(0.05)  # let the subscription start
    await lane.sim_scanner.scan("6901234567893")  # a misread: wrong check digit
    assert (await pending)["error"] == "invalid_barcode"
    shown = await asyncio.to_thread(_read_display, master)
    assert "牛奶".encode("gb2312") in shown and b"12.50" in shown
    cart = svc.carts.latest_open("POS-1")
    assert cart is not None and [ln.qty for ln in cart.lines.values()] == [1]


async def test_printer_out_of_paper_tells_the_pos_and_the_receipt_waits(
        lane_service: EdgeService) -> None:
    from drivers.base import Health
    from drivers.printer import SimulatedPrinter
    from edge.checkout import TenderRequest

    svc = lane_service
    assert svc.devices is not None
    lane = svc.devices.by_terminal["POS-2"]
    printer = lane.printer
    assert isinstance(printer, SimulatedPrinter)
    sub = svc.bus.subscribe("POS-2")
    pending = asyncio.ensure_future(_next(sub, "device.health"))
    await asyncio.sleep(0.05)  # let the subscription start
    printer.set_health(Health.PAPER_OUT, "paper out")
    assert (await pending)["health"] == "paper_out"
    assert {(h.device_id, h.health) for h in svc.device_health()} >= {
        ("POS-2 printer", "paper_out")}
    sale = await svc.open_sale("POS-2")
    sid = sale["sale_id"]
    await svc.add_line(sid, "POS-2", "k-pl", sku="A", name="牛奶", category="dairy", qty=1,
                       unit_price=1_000)
    waiting = asyncio.ensure_future(_next(sub, "printer.waiting"))
    await asyncio.sleep(0.05)  # let the subscription start
    await svc.finalize(sid, "POS-2", "k-pf", [TenderRequest(kind="cash", amount=1_000)])
    assert (await waiting)["printer_id"] == "POS-2 printer"
    assert printer.jobs == []
    done = asyncio.ensure_future(_next(sub, "print.done"))
    await asyncio.sleep(0.05)  # let the subscription start
    printer.set_health(Health.CONNECTED, "")
    svc.devices.queue.wake()  # type: ignore[union-attr]
    await done
    assert len(printer.jobs) == 1


async def test_receipt_preview_renders_a_sale_to_png(tmp_path: Path) -> None:
    from PIL import Image

    from edge.cli import main

    cfg = make_config(tmp_path)
    async with StoreGateway(cfg) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        m = await register(svc, "13600000011", name="王五")
        receipt = await sell(svc, [("A", "dairy", 2, 1_250)], member_id=m["member_id"])
    out = tmp_path / "r.png"
    code = await asyncio.to_thread(main, ["--log-level", "WARNING", "receipt-preview",
                                          "--db", str(cfg.database.path), "--sale",
                                          receipt["sale_id"], "--out", str(out)])
    assert code == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.height > 200
