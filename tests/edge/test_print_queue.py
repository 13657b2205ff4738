"""The print queue against a real network printer stand-in and a real edge database.

Waits are bounded only as safety limits (``Harness.wait_for``); nothing asserts how long a
step takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.escpos_decode import QrCode, TextLine, decode_escpos, text_lines
from drivers.printer import Network, ReceiptPrinter, render_escpos, text_cells
from edge import print_queue
from edge.db import Database
from edge.print_queue import PrintQueue
from edge.receipt_layout import REPRINT_BANNER, build_receipt
from tests.support.escpos_printer import TcpEscposPrinter

PRINTER = "lane-1"
STORE = "城东店 East Store"
SALE = "0190-sale-1"

VIEW: dict[str, Any] = {
    "sale_id": SALE,
    "store_id": "S001",
    "terminal_id": "POS-1",
    "finalized_at": "2024-05-01T10:15:30+08:00",
    "currency": "CNY",
    "lines": [
        {
            "line_no": 1,
            "sku": "MILK-1L",
            "name": "牛奶 1L",
            "category": "dairy",
            "qty": 3,
            "unit_price": 1250,
            "gross": 3750,
            "discount": 0,
            "net": 3750,
            "points": 37,
        },
        {
            "line_no": 2,
            "sku": "BREAD",
            "name": "全麦面包 Whole wheat bread, family size loaf",
            "category": "bakery",
            "qty": 1,
            "unit_price": 900,
            "gross": 900,
            "discount": 100,
            "net": 800,
            "points": 8,
        },
    ],
    "discounts": [{"kind": "amount_off", "label": "会员日 Member day", "amount": 100}],
    "tenders": [
        {"tender_no": 0, "kind": "points", "amount": 500, "points": 500},
        {"tender_no": 1, "kind": "cash", "amount": 5000, "points": 0},
    ],
    "subtotal": 4650,
    "discount_total": 100,
    "total": 4550,
    "refunded_total": 0,
    "points_earned": 45,
    "member": {
        "member_id": "m1",
        "member_code": "100000000018",
        "qr": "MGM:100000000018",
        "tier": "gold",
        "points_balance": 1234,
        "points_debt": 0,
        "stored_value": 8800,
    },
    "change": 950,
    "coupons_issued": [],
}


def receipt_bytes(view: dict[str, Any] = VIEW, *, reprint: bool = False) -> bytes:
    doc = build_receipt(view, store_name=STORE, currency="CNY", reprint=reprint)
    return render_escpos(doc, "gb18030")


@pytest.fixture
def tcp_printer() -> Iterator[TcpEscposPrinter]:
    with TcpEscposPrinter() as server:
        yield server


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(tmp_path / "edge.db") as database:
        yield database


@pytest.fixture
async def printer(tcp_printer: TcpEscposPrinter) -> AsyncIterator[ReceiptPrinter]:
    async with ReceiptPrinter(Network(tcp_printer.host, tcp_printer.port)) as p:
        yield p


class Harness:
    """A queue over ``db`` with one printer, recording its events."""

    def __init__(self, db: Database, printer: ReceiptPrinter) -> None:
        self.db = db
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.queue = PrintQueue(db, {PRINTER: printer}, poll_interval=0.05, on_event=self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, kind: str, job_id: str) -> None:
        """Until the queue reported ``kind`` for ``job_id``; the timeout only guards a hang."""
        async with asyncio.timeout(10):
            while not self.saw(kind, job_id):
                self._changed.clear()
                await self._changed.wait()

    async def enqueue(self, payload: bytes, kind: str = "receipt", sale_id: str = SALE) -> str:
        job_id = await self.db.write(
            lambda conn: print_queue.enqueue(
                conn, printer_id=PRINTER, sale_id=sale_id, kind=kind, payload=payload
            )
        )
        self.queue.wake()
        return job_id

    async def state(self, job_id: str) -> str:
        [job] = [j for j in await self.db.read(print_queue.jobs) if j["job_id"] == job_id]
        return str(job["state"])

    def saw(self, kind: str, job_id: str) -> bool:
        return any(e["type"] == kind and e["job_id"] == job_id for e in self.events)


async def test_a_queued_receipt_prints_once_and_reads_back(
    db: Database, printer: ReceiptPrinter, tcp_printer: TcpEscposPrinter
) -> None:
    payload = receipt_bytes()
    h = Harness(db, printer)
    async with h.queue:
        job = await h.enqueue(payload)
        await h.wait_for("print.done", job)
    assert await h.state(job) == "done"
    received = tcp_printer.received
    assert received.count(payload) == 1

    items = decode_escpos(received, "gb18030")
    lines = text_lines(items)
    assert TextLine(STORE, align="center", bold=True, width=2, height=2) in items
    assert any("牛奶 1L" in line for line in lines)
    assert any(line.startswith("合计 Total") and line.endswith("45.50") for line in lines)
    assert QrCode("MGM:100000000018", size=6, error_level="M") in items
    assert REPRINT_BANNER not in lines


async def test_job_waits_while_paper_is_out_then_prints_once(
    db: Database, printer: ReceiptPrinter, tcp_printer: TcpEscposPrinter
) -> None:
    tcp_printer.mode = "paper_out"
    payload = receipt_bytes()
    h = Harness(db, printer)
    async with h.queue:
        job = await h.enqueue(payload)
        await h.wait_for("printer.waiting", job)
        waiting = next(e for e in h.events if e["type"] == "printer.waiting")
        assert waiting == {
            "type": "printer.waiting",
            "printer_id": PRINTER,
            "job_id": job,
            "reason": "paper out",
        }
        assert await h.state(job) == "queued"
        assert payload not in tcp_printer.received

        tcp_printer.mode = "online"
        await h.wait_for("print.done", job)
    assert tcp_printer.received.count(payload) == 1
    assert [e["type"] for e in h.events].count("printer.waiting") == 1  # not once per poll


async def test_job_queued_while_offline_prints_once_after_restart(
    tmp_path: Path, tcp_printer: TcpEscposPrinter
) -> None:
    payload = receipt_bytes()
    tcp_printer.mode = "offline"
    async with (
        Database(tmp_path / "r.db") as db,
        ReceiptPrinter(Network(tcp_printer.host, tcp_printer.port)) as printer,
    ):
        h = Harness(db, printer)
        async with h.queue:
            job = await h.enqueue(payload)
            await h.wait_for("printer.waiting", job)

    tcp_printer.mode = "online"
    async with (
        Database(tmp_path / "r.db") as db,
        ReceiptPrinter(Network(tcp_printer.host, tcp_printer.port)) as printer,
    ):
        h = Harness(db, printer)
        assert await h.state(job) == "queued"
        async with h.queue:
            await h.wait_for("print.done", job)
        assert await h.state(job) == "done"
    assert tcp_printer.received.count(payload) == 1


async def test_interrupted_job_is_uncertain_and_only_a_reprint_prints_again(
    db: Database, printer: ReceiptPrinter, tcp_printer: TcpEscposPrinter
) -> None:
    payload = receipt_bytes()
    h = Harness(db, printer)
    job = await h.enqueue(payload)

    def crashed_while_printing(conn: Any) -> None:  # as a crash mid-send leaves it
        conn.execute("UPDATE print_jobs SET state = 'printing' WHERE job_id = ?", (job,))

    await db.write(crashed_while_printing)
    async with h.queue:
        assert await h.state(job) == "uncertain"
        assert h.saw("print.uncertain", job)
        # the same receipt asked for again is the same (uncertain) job, not a new print
        assert await h.enqueue(payload) == job

        again = await h.db.write(
            lambda conn: print_queue.reprint(conn, SALE, PRINTER, receipt_bytes(reprint=True))
        )
        h.queue.wake()
        await h.wait_for("print.done", again)
    assert await h.state(job) == "uncertain"
    received = tcp_printer.received
    assert payload not in received
    lines = text_lines(decode_escpos(received, "gb18030"))
    assert lines.count(REPRINT_BANNER) == 1
    assert sum("牛奶 1L" in line for line in lines) == 1


async def test_one_original_receipt_per_sale_and_printer(db: Database) -> None:
    def enqueue(conn: Any, printer_id: str = PRINTER, kind: str = "receipt") -> str:
        return print_queue.enqueue(
            conn, printer_id=printer_id, sale_id=SALE, kind=kind, payload=b"x"
        )

    first = await db.write(enqueue)
    assert await db.write(enqueue) == first
    other_printer = await db.write(lambda conn: enqueue(conn, "lane-2"))
    copy = await db.write(lambda conn: enqueue(conn, kind="reprint"))
    assert len({first, other_printer, copy}) == 3
    listed = await db.read(lambda conn: print_queue.jobs(conn, sale_id=SALE))
    assert sorted((j["printer_id"], j["kind"]) for j in listed) == [
        ("lane-1", "receipt"),
        ("lane-1", "reprint"),
        ("lane-2", "receipt"),
    ]
    with pytest.raises(ValueError):
        await db.write(lambda conn: enqueue(conn, kind="invoice"))


async def test_cancel_only_queued_jobs(db: Database) -> None:
    job = await db.write(
        lambda conn: print_queue.enqueue(
            conn, printer_id=PRINTER, sale_id=SALE, kind="receipt", payload=b"x"
        )
    )
    assert await db.write(lambda conn: print_queue.cancel(conn, job)) is True
    assert await db.write(lambda conn: print_queue.cancel(conn, job)) is False
    [listed] = await db.read(lambda conn: print_queue.jobs(conn, states=("cancelled",)))
    assert listed["job_id"] == job and listed["payload_bytes"] == 1


@pytest.mark.parametrize("width", [32, 48])
def test_layout_fits_the_paper_and_adds_up(width: int) -> None:
    doc = build_receipt(VIEW, store_name=STORE, currency="CNY", width=width, reprint=True)
    items = decode_escpos(render_escpos(doc, "gb18030"), "gb18030")
    lines = [item for item in items if isinstance(item, TextLine)]
    for line in lines:
        assert text_cells(line.text, cjk=True) * line.width <= width, line.text
    texts = [line.text for line in lines]
    [qty_row] = [t for t in texts if "3 × 12.50" in t]
    assert qty_row.endswith("37.50") and text_cells(qty_row, cjk=True) == width
    assert any(t.startswith("  1 × 9.00  -1.00") and t.endswith("8.00") for t in texts)
    assert any(t.startswith("找零 Change") and t.endswith("9.50") for t in texts)
    assert any(t.startswith("积分 Points (500)") and t.endswith("5.00") for t in texts)
    assert any(t.startswith("储值余额") and t.endswith("88.00") for t in texts)
    assert REPRINT_BANNER in texts


def test_issued_coupon_gets_the_qr() -> None:
    view = {**VIEW, "coupons_issued": [{"coupon_code": "7K3M9Q2X4D", "campaign_id": "bday"}]}
    items = decode_escpos(render_escpos(build_receipt(view, store_name=STORE, currency="CNY")))
    assert [i.data for i in items if isinstance(i, QrCode)] == ["MGC:7K3M9Q2X4D"]
    assert any("7K3M9Q2X4D" in t for t in text_lines(items))
