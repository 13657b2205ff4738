"""The store's devices wired into checkout, lane by lane.

A lane maps a POS terminal to its scanners, card reader, printer and display. Input devices turn
into POS events on that terminal's WebSocket (and, for a member QR, a coupon code or a card tap,
into the identification or coupon on the lane's open sale); a finalized sale shows its total,
change and points on the display. A device failing never fails a sale: it shows up as health.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

from drivers.base import (
    CardError,
    CardInserted,
    CardRemoved,
    DeviceKind,
    DeviceStatus,
    Health,
    HealthChanged,
    ScanError,
    ScanEvent,
)
from drivers.card_reader import CardReaderConfig, CardReaderMonitor, SimulatedCardReader
from drivers.display import DisplayConfig, PoleDisplay, SimulatedDisplay
from drivers.printer import (
    File,
    Network,
    ReceiptPrinter,
    Serial,
    SimulatedPrinter,
    Usb,
    render_escpos,
)
from drivers.scanner import EvdevOpener, SerialScanner, SimulatedScanner, WedgeScanner
from edge import print_queue
from edge.config import DisplaySection, LaneSection, PrinterSection
from edge.errors import EdgeError
from edge.receipt_layout import build_receipt
from edge.scan import apply_scan, device_key, open_sale_for
from protocol import tasks
from protocol.ids import COUPON_QR_PREFIX, MEMBER_QR_PREFIX
from protocol.money import format_amount

if TYPE_CHECKING:
    from edge.service import EdgeService

log = logging.getLogger("membergate.edge.devices")

Printer = ReceiptPrinter | SimulatedPrinter
Display = PoleDisplay | SimulatedDisplay


class Lane:
    def __init__(self, config: LaneSection) -> None:
        self.config = config
        self.terminal_id = config.terminal_id
        self.scanners: list[Any] = []
        self.printer: Printer | None = None
        self.printer_config: PrinterSection | None = None
        self.display: Display | None = None
        self.sim_scanner: SimulatedScanner | None = None
        self.sim_reader: SimulatedCardReader | None = None
        self.reader_pattern = re.compile(config.card_reader) if config.card_reader else None


def make_printer(cfg: PrinterSection, device_id: str,
                 on_health: Callable[[HealthChanged], None] | None = None) -> Printer:
    if cfg.kind == "simulated":
        return SimulatedPrinter(device_id, encoding=cfg.encoding, on_health=on_health)
    transport: Any
    if cfg.kind == "network":
        if not cfg.host:
            raise ValueError("a network printer needs a host")
        transport = Network(cfg.host, cfg.port, timeout=cfg.status_timeout_s)
    elif cfg.kind == "serial":
        transport = Serial(_need(cfg.devfile, "devfile"), cfg.baudrate,
                           timeout=cfg.status_timeout_s)
    elif cfg.kind == "usb":
        transport = Usb(_need(cfg.usb_vendor, "usb_vendor"), _need(cfg.usb_product,
                                                                  "usb_product"))
    else:
        transport = File(_need(cfg.devfile, "devfile"))
    return ReceiptPrinter(transport, encoding=cfg.encoding, device_id=device_id,
                          on_health=on_health)


def make_display(cfg: DisplaySection, device_id: str) -> Display:
    if cfg.kind == "simulated":
        return SimulatedDisplay(cfg.command_set, cfg.encoding, device_id=device_id)
    return PoleDisplay(DisplayConfig(port=_need(cfg.port, "port"), baudrate=cfg.baudrate,
                                     command_set=cfg.command_set, encoding=cfg.encoding,
                                     device_id=device_id))


T = TypeVar("T")


def _need(value: T | None, name: str) -> T:
    if value is None:
        raise ValueError(f"this device needs {name}")
    return value


class DeviceManager:
    """The lanes' devices, opened by ``start()`` and closed by ``close()``.

    ``lanes`` defaults to the service's configured lanes. ``scanner_opener`` opens the evdev path
    of each configured wedge scanner (default ``evdev.InputDevice``): development and tests hand
    in devices that are not under /dev/input (a pipe-fed ``InputDevice``). A manager built this
    way may be set as ``service.devices`` on a service started without lanes; the service closes
    it with itself.
    """

    def __init__(self, service: EdgeService, *, lanes: Sequence[LaneSection] | None = None,
                 scanner_opener: EvdevOpener | None = None) -> None:
        self.service = service
        self.scanner_opener = scanner_opener
        self.lanes = [Lane(c) for c in (service.config.lanes if lanes is None else lanes)]
        self.by_terminal = {lane.terminal_id: lane for lane in self.lanes}
        self.health: dict[str, DeviceStatus] = {}
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.monitor: CardReaderMonitor | None = None
        self.queue: print_queue.PrintQueue | None = None

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self) -> DeviceManager:
        for lane in self.lanes:
            await self._open_lane(lane)
        printers = {lane.printer.device_id: lane.printer for lane in self.lanes
                    if lane.printer is not None}
        if printers:
            self.queue = print_queue.PrintQueue(self.service.db, printers,
                                                on_event=self._print_event)
            await self.queue.start()
        patterns = [lane.config.card_reader for lane in self.lanes
                    if lane.config.card_reader and not lane.config.simulated]
        if patterns:
            self.monitor = CardReaderMonitor(CardReaderConfig(
                reader_name_pattern="|".join(f"(?:{p})" for p in patterns)))
            try:
                await self._stack.enter_async_context(self.monitor)
                self._follow(self.monitor.events(), None)
            except Exception as exc:  # no pcscd: the lanes still sell, the reader shows red
                self._set(DeviceStatus("pcscd", DeviceKind.CARD_READER, Health.ERROR, str(exc)))
        return self

    async def _open_lane(self, lane: Lane) -> None:
        cfg, tid = lane.config, lane.terminal_id
        for path in cfg.scanners:
            lane.scanners.append(WedgeScanner(path, layout=cfg.scanner_layout,
                                              opener=self.scanner_opener))
        for s in cfg.serial_scanners:
            lane.scanners.append(SerialScanner(s.port, baudrate=s.baudrate, encoding=s.encoding))
        if cfg.simulated:
            lane.sim_scanner = SimulatedScanner(f"{tid} simulated scanner")
            lane.scanners.append(lane.sim_scanner)
            lane.sim_reader = SimulatedCardReader(device_id=f"{tid} simulated reader")
        for scanner in lane.scanners:
            await self._stack.enter_async_context(scanner)
            self._follow(scanner.events(), lane)
        if lane.sim_reader is not None:
            await self._stack.enter_async_context(lane.sim_reader)
            self._follow(lane.sim_reader.events(), lane)
        printer_cfg = cfg.printer or (PrinterSection() if cfg.simulated else None)
        if printer_cfg is not None:
            lane.printer = make_printer(
                printer_cfg, f"{tid} printer",
                on_health=functools.partial(self._health_on_lane, lane))
            lane.printer_config = printer_cfg
            await self._stack.enter_async_context(lane.printer)
            self._set(lane.printer.last_status)
        display_cfg = cfg.display or (DisplaySection() if cfg.simulated else None)
        if display_cfg is not None:
            lane.display = make_display(display_cfg, f"{tid} display")
            await self._stack.enter_async_context(lane.display)
            self._set(lane.display.status)
            self._follow(lane.display.events(), lane)

    def _follow(self, events: AsyncIterator[Any], lane: Lane | None) -> None:
        async def pump() -> None:
            async for event in events:
                try:
                    await self.handle(event, lane)
                except Exception:
                    log.exception("device event not handled: %r", event)

        self._tasks.append(asyncio.create_task(pump()))

    async def __aenter__(self) -> DeviceManager:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await tasks.stop(task)
        await self._stack.aclose()

    # -- events in -----------------------------------------------------------------------------

    def _lane_of_reader(self, reader: str) -> Lane | None:
        for lane in self.lanes:
            if lane.reader_pattern is not None and lane.reader_pattern.search(reader):
                return lane
        return None

    def _set(self, status: DeviceStatus) -> None:
        self.health[status.device_id] = status

    def _health_on_lane(self, lane: Lane, event: HealthChanged) -> None:
        self._health_changed(event, lane)

    def _health_changed(self, event: HealthChanged, lane: Lane | None) -> None:
        self._set(event.status)
        terminal = lane.terminal_id if lane else None
        self.service.bus.publish("device.health", terminal, device_id=event.status.device_id,
                                 device_kind=str(event.status.kind),
                                 health=str(event.status.health), detail=event.status.detail)

    async def handle(self, event: Any, lane: Lane | None) -> None:
        if isinstance(event, HealthChanged):
            self._health_changed(event, lane)
            return
        if lane is None and isinstance(event, CardInserted | CardRemoved | CardError):
            lane = self._lane_of_reader(event.device_id)
            if lane is None:
                return  # a reader that belongs to no lane
        assert lane is not None
        if isinstance(event, ScanEvent):
            await self.on_scan(lane, event.code, event.device_id)
        elif isinstance(event, ScanError):
            self.service.bus.publish("scan.error", lane.terminal_id, device_id=event.device_id,
                                     reason=event.reason)
        elif isinstance(event, CardInserted):
            await self.on_card(lane, event)
        elif isinstance(event, CardRemoved):
            self.service.bus.publish("card.removed", lane.terminal_id, device_id=event.device_id)
        elif isinstance(event, CardError):
            self.service.bus.publish("card.error", lane.terminal_id, device_id=event.device_id,
                                     reason=event.reason)

    async def on_scan(self, lane: Lane, code: str, device_id: str) -> None:
        tid = lane.terminal_id
        self.service.bus.publish("scan", tid, device_id=device_id, code=code)
        if not (lane.config.scan_adds_products or code.startswith(
                (MEMBER_QR_PREFIX, COUPON_QR_PREFIX))):
            return  # the POS front end handles product scans itself
        try:
            done = await apply_scan(self.service, tid, code)
        except EdgeError as exc:
            self.service.bus.publish("scan.refused", tid, code=code, error=exc.code,
                                     message=exc.message)
            return
        if done["action"] == "member_identified":
            await self.greet(lane, done["sale"].get("member_id"))
        elif done["action"] == "product_added":
            product = done["product"]
            cur = self.service.config.store.currency
            await self.show(lane, str(product["name"])[:20],
                            f"{format_amount(product['unit_price'], cur)}"
                            f"  合计 {format_amount(done['sale']['total'], cur)}")

    async def on_card(self, lane: Lane, event: CardInserted) -> None:
        tid = lane.terminal_id
        tries: list[tuple[Any, str]] = [("card_uid", event.uid)]
        if event.member_number:
            tries.append(("member_code", event.member_number))
        online: str | None = None  # why the hub could not be asked, when it could not
        for by, value in tries:
            try:
                member_id = await self.service.find_member_id(by, value)
            except EdgeError as exc:
                if exc.code == "hub_unreachable":
                    online = str(exc.details["online"])
                continue
            sid = await open_sale_for(self.service, tid)
            await self.service.identify_on_sale(sid, tid, device_key(), by, value)
            await self.greet(lane, member_id)
            return
        if online is not None:  # perhaps a member of another store: say so, not "unknown"
            self.service.bus.publish("card.unknown", tid, device_id=event.device_id,
                                     uid=event.uid, online=online)
            await self.show(lane, "总部连接中断", "HQ unreachable")
            return
        self.service.bus.publish("card.unknown", tid, device_id=event.device_id, uid=event.uid)
        await self.show(lane, "未登记的会员卡", "Unknown card")

    # -- commands out --------------------------------------------------------------------------

    async def show(self, lane: Lane, line1: str, line2: str) -> None:
        if lane.display is not None:
            await lane.display.show(line1, line2)

    async def greet(self, lane: Lane, member_id: str | None) -> None:
        if member_id is None or lane.display is None:
            return
        m = await self.service.member(member_id)
        # A message HQ left for the member takes the second line (the receipt prints it whole).
        second = (m["messages"][0]["text"] if m.get("messages")
                  else f"{m['tier']} 积分 {m['points']}")
        await self.show(lane, f"欢迎 {m['name']}"[:20], second[:20])

    def _print_event(self, event: dict[str, Any]) -> None:
        printer_id = event.get("printer_id")
        lane = next((ln for ln in self.lanes
                     if ln.printer is not None and ln.printer.device_id == printer_id), None)
        data = {k: v for k, v in event.items() if k != "type"}
        self.service.bus.publish(str(event.get("type", "print")),
                                 lane.terminal_id if lane else None, **data)

    def receipt_bytes(self, lane: Lane, receipt: dict[str, Any], *, reprint: bool = False
                      ) -> bytes:
        cfg = lane.printer_config or PrinterSection()
        store = self.service.config.store
        doc = build_receipt(receipt, store_name=store.name, currency=store.currency,
                            width=cfg.width, reprint=reprint)
        return render_escpos(doc, cfg.encoding)

    def enqueue_receipt(self, conn: sqlite3.Connection, terminal_id: str,
                        receipt: dict[str, Any]) -> None:
        """Inside the finalize transaction: the sale and its print job commit together, so a
        receipt is neither lost to a crash nor printed twice by a retry."""
        lane = self.by_terminal.get(terminal_id)
        if lane is None or lane.printer is None:
            return
        print_queue.enqueue(conn, printer_id=lane.printer.device_id,
                            sale_id=receipt["sale_id"], kind="receipt",
                            payload=self.receipt_bytes(lane, receipt))

    async def reprint(self, terminal_id: str, sale_id: str) -> str:
        lane = self.by_terminal.get(terminal_id)
        if lane is None or lane.printer is None:
            raise EdgeError("no_printer", "this terminal has no receipt printer", 409)
        receipt = await self.service.receipt(sale_id)
        payload = self.receipt_bytes(lane, receipt, reprint=True)
        printer_id = lane.printer.device_id
        job: str = await self.service.db.write(
            lambda conn: print_queue.reprint(conn, sale_id, printer_id, payload))
        if self.queue is not None:
            self.queue.wake(printer_id)
        return job

    async def after_finalize(self, terminal_id: str, receipt: dict[str, Any]) -> None:
        lane = self.by_terminal.get(terminal_id)
        if lane is None:
            return
        if self.queue is not None and lane.printer is not None:
            self.queue.wake(lane.printer.device_id)
        if lane.display is None:
            return
        cur = receipt.get("currency", "CNY")
        await self.show(lane, f"合计 {format_amount(receipt['total'], cur)}",
                        f"找零 {format_amount(receipt.get('change', 0), cur)}"
                        f" +{receipt['points_earned']}分")

    def statuses(self) -> list[DeviceStatus]:
        return sorted(self.health.values(), key=lambda s: s.device_id)
