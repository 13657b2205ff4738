"""Receipt printer: ESC/POS rendering, decoding, transports, status and the PNG preview.

The printers are stand-ins from ``tests.support.escpos_printer`` reached through the real
python-escpos transports: a TCP server on a free port, a pty for the serial port, a tmp file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from escpos.printer import Dummy
from PIL import Image

from drivers import receipt_preview
from drivers.base import DeviceKind, Health, HealthChanged
from drivers.escpos_decode import (
    BarcodeItem,
    CutItem,
    DecodedItem,
    DrawerKickItem,
    FeedItem,
    QrCode,
    StatusQuery,
    TextLine,
    Unknown,
    decode_escpos,
    text_lines,
)
from drivers.printer import (
    DLE_EOT_ONLINE,
    PAPER_58MM,
    PAPER_80MM,
    Barcode,
    File,
    Network,
    PrinterUnavailable,
    Receipt,
    ReceiptPrinter,
    Serial,
    SimulatedPrinter,
    fit_row,
    render_escpos,
    text_cells,
    wrap_cells,
)
from drivers.receipt_preview import render_png
from tests.support.escpos_printer import Mode, PtyEscposPrinter, TcpEscposPrinter

QR_URL = "https://m.example.cn/r/20240518-0042?m=8801"


def sample_receipt(width: int = PAPER_80MM) -> Receipt:
    return (
        Receipt(width=width)
        .text("会员小票", align="center", bold=True, size=2)
        .row("牛奶 2×12.50", "25.00")
        .row("面包", "8.00")
        .divider()
        .row("合计", "33.00", bold=True)
        .text("会员积分：120", align="right")
        .qr(QR_URL)
        .barcode("MG-0001-{42}")
        .barcode("6901234567892", "EAN13")
        .cut()
        .drawer()
    )


def printed(items: list[DecodedItem]) -> list[DecodedItem]:
    """The items of a job without the status queries sent before it."""
    return [item for item in items if not isinstance(item, StatusQuery)]


def assert_sample(items: list[DecodedItem], width: int = PAPER_80MM) -> None:
    lines = [item for item in items if isinstance(item, TextLine)]
    assert lines[0] == TextLine("会员小票", "center", bold=True, width=2, height=2)
    assert lines[1].text == "牛奶 2×12.50" + " " * (width - 18) + "25.00"
    assert lines[1].align == "left" and not lines[1].bold
    assert lines[2].text == "面包" + " " * (width - 8) + "8.00"
    assert lines[3].text == "-" * width
    assert lines[4] == TextLine("合计" + " " * (width - 9) + "33.00", bold=True)
    assert lines[5] == TextLine("会员积分：120", "right")
    assert QrCode(QR_URL, size=6, error_level="M") in items
    assert BarcodeItem("CODE128", "MG-0001-{42}") in items
    assert BarcodeItem("EAN13", "6901234567892") in items
    assert items[-2:] == [CutItem(partial=False), DrawerKickItem(pin=0, on_ms=50, off_ms=500)]


@pytest.fixture
def tcp_printer() -> Iterator[TcpEscposPrinter]:
    with TcpEscposPrinter() as server:
        yield server


def network(server: TcpEscposPrinter, timeout: float = 1.5) -> Network:
    return Network(server.host, server.port, timeout=timeout)


def ends_with_drawer(data: bytes) -> bool:
    return data.endswith(b"\x1bp\x00\x19\xfa\x1ba\x00")


# --------------------------------------------------------------------------------------------
# Layout in display cells


def test_row_fits_paper_width_counting_cjk_as_two_cells() -> None:
    for width in (PAPER_58MM, PAPER_80MM):
        [line] = fit_row("牛奶 2×12.50", "25.00", width, cjk=True)
        assert text_cells(line, cjk=True) == width
        # on a Kanji-mode printer a cell is a byte: every double-byte character is two cells
        assert len(line.encode("gb18030")) == width
        assert line.startswith("牛奶 2×12.50 ") and line.endswith(" 25.00")


def test_ambiguous_width_characters_are_wide_only_under_cjk_encodings() -> None:
    assert text_cells("2×12.50", cjk=True) == 8
    assert text_cells("2×12.50", cjk=False) == 7
    assert text_cells("会员积分：", cjk=False) == 10


def test_long_row_wraps_the_left_column_without_splitting_characters() -> None:
    lines = fit_row("进口有机纯牛奶全脂灭菌乳礼盒装", "128.00", 20, cjk=True)
    assert lines[0].endswith(" 128.00")
    assert all(text_cells(line, cjk=True) <= 20 for line in lines)
    name = "".join(line.replace("128.00", "").strip() for line in lines)
    assert name == "进口有机纯牛奶全脂灭菌乳礼盒装"
    assert text_cells(lines[0], cjk=True) == 20


def test_row_with_a_fill_character() -> None:
    [line] = fit_row("会员", "VIP", 16, cjk=True, fill=".")
    assert line == "会员" + "." * 9 + "VIP"


def test_wrap_never_splits_a_wide_character() -> None:
    assert wrap_cells("牛奶牛奶", 5, cjk=True) == ["牛奶", "牛奶"]
    assert wrap_cells("member points balance", 10) == ["member", "points", "balance"]


def test_58mm_receipt_keeps_every_line_within_32_cells() -> None:
    items = decode_escpos(render_escpos(sample_receipt(PAPER_58MM), "gb18030"), "gb18030")
    for line in items:
        if isinstance(line, TextLine):
            assert text_cells(line.text, cjk=True) * line.width <= PAPER_58MM
    assert_sample(items, PAPER_58MM)


# --------------------------------------------------------------------------------------------
# Rendering and decoding


def test_render_uses_kanji_mode_and_printer_encoding() -> None:
    data = render_escpos(Receipt().text("会员积分：120"), "gb18030")
    assert data.startswith(b"\x1b@\x1c&")  # ESC @ then FS & (Chinese mode)
    assert "会员积分：120".encode("gb18030") + b"\n" in data
    assert b"\xa3\xba" in data  # the full-width colon, which escpos' text() turns into "?"


def test_render_and_decode_roundtrip() -> None:
    items = decode_escpos(render_escpos(sample_receipt(), "gb18030"), "gb18030")
    assert_sample(items)
    assert not [item for item in items if isinstance(item, Unknown)]


def test_big5_prints_traditional_characters() -> None:
    data = render_escpos(Receipt().text("會員：王小明").row("積分", "1,200"), "big5")
    assert "會員：王小明".encode("big5") in data
    assert text_lines(decode_escpos(data, "big5"))[0] == "會員：王小明"
    assert text_lines(decode_escpos(data, "gb18030"))[0] != "會員：王小明"


def test_gb18030_prints_characters_gbk_cannot() -> None:
    receipt = Receipt().text("𠮷野家 会员")
    assert text_lines(decode_escpos(render_escpos(receipt, "gb18030"), "gb18030")) == [
        "𠮷野家 会员"
    ]
    assert text_lines(decode_escpos(render_escpos(receipt, "gbk"), "gbk")) == ["?野家 会员"]


def test_single_byte_encoding_leaves_kanji_mode() -> None:
    data = render_escpos(Receipt().text("Total 12.50"), "cp437")
    assert data.startswith(b"\x1b@\x1c.\x1bt\x00")
    assert text_lines(decode_escpos(data, "cp437")) == ["Total 12.50"]


def test_control_characters_in_text_cannot_inject_commands() -> None:
    data = render_escpos(Receipt().text("张三\x1b@\x1dV\x00"), "gb18030")
    assert printed(decode_escpos(data, "gb18030")) == [TextLine("张三@V")]


def test_invalid_barcodes_are_refused() -> None:
    with pytest.raises(ValueError, match="check digit"):
        Barcode("6901234567890", "EAN13")
    with pytest.raises(ValueError, match="ASCII"):
        Barcode("会员", "CODE128")


def test_decoder_reads_python_escpos_output() -> None:
    dummy = Dummy()
    dummy.set(align="center", bold=True, double_height=True, double_width=True)
    dummy.text("TOTAL\n")
    dummy.qr("member:8801", native=True, size=4)
    dummy.barcode("{B8801", "CODE128", function_type="B")
    dummy.cut()
    items = decode_escpos(dummy.output, "gb18030")
    assert TextLine("TOTAL", "center", bold=True, width=2, height=2) in items
    assert QrCode("member:8801", size=4, error_level="L") in items
    assert BarcodeItem("CODE128", "8801") in items
    assert isinstance(items[-1], CutItem)


def test_decoder_reports_status_queries_and_unknown_commands() -> None:
    items = decode_escpos(b"\x10\x04\x01\x10\x04\x04\x1b\x99ok\n\x1bd\x02\x1d", "gb18030")
    assert items == [
        StatusQuery(1),
        StatusQuery(4),
        Unknown(b"\x1b\x99"),
        TextLine("ok"),
        FeedItem(2),
        Unknown(b"\x1d"),
    ]


# --------------------------------------------------------------------------------------------
# Network printer


async def test_network_printer_receives_the_receipt(tcp_printer: TcpEscposPrinter) -> None:
    async with ReceiptPrinter(network(tcp_printer)) as printer:
        await printer.print_receipt(sample_receipt())
        assert printer.last_status.health is Health.CONNECTED
    items = decode_escpos(tcp_printer.wait_for(ends_with_drawer), "gb18030")
    assert items[:2] == [StatusQuery(1), StatusQuery(4)]  # asked before anything was sent
    assert_sample(printed(items))


async def test_network_printer_with_big5(tcp_printer: TcpEscposPrinter) -> None:
    receipt = Receipt(width=PAPER_58MM).text("會員：陳大文", bold=True).row("積分", "120").cut()
    async with ReceiptPrinter(network(tcp_printer), encoding="big5") as printer:
        await printer.print_receipt(receipt)
    data = tcp_printer.wait_for(lambda d: d.endswith(b"\x1dVA\x03"))
    assert "會員：陳大文".encode("big5") in data
    assert printed(decode_escpos(data, "big5")) == [
        TextLine("會員：陳大文", bold=True),
        TextLine("積分" + " " * 25 + "120"),
        CutItem(partial=False),
    ]


@pytest.mark.parametrize(
    ("mode", "health"),
    [
        ("online", Health.CONNECTED),
        ("paper_low", Health.PAPER_LOW),
        ("paper_out", Health.PAPER_OUT),
        ("offline", Health.ERROR),
        ("silent", Health.DISCONNECTED),
    ],
)
async def test_status_in_each_mode(
    tcp_printer: TcpEscposPrinter, mode: Mode, health: Health
) -> None:
    tcp_printer.mode = mode
    async with ReceiptPrinter(network(tcp_printer, timeout=0.5), device_id="till-1") as printer:
        status = await printer.status()
    assert (status.device_id, status.kind, status.health) == ("till-1", DeviceKind.PRINTER, health)
    if mode == "silent":
        assert "no reply" in status.detail


@pytest.mark.parametrize(
    ("mode", "health"),
    [("paper_out", Health.PAPER_OUT), ("offline", Health.ERROR), ("silent", Health.DISCONNECTED)],
)
async def test_unavailable_printer_gets_nothing_of_the_receipt(
    tcp_printer: TcpEscposPrinter, mode: Mode, health: Health
) -> None:
    tcp_printer.mode = mode
    async with ReceiptPrinter(network(tcp_printer, timeout=0.5)) as printer:
        with pytest.raises(PrinterUnavailable) as raised:
            await printer.print_receipt(sample_receipt())
        assert raised.value.health is health
        # a later query on the same stream proves everything sent before it has arrived
        tcp_printer.mode = "online"
        assert (await printer.status()).health is Health.CONNECTED
    data = tcp_printer.wait_for(lambda d: d.count(DLE_EOT_ONLINE) == 2 and d.endswith(b"\x04"))
    assert all(isinstance(item, StatusQuery) for item in decode_escpos(data, "gb18030"))


async def test_paper_low_still_prints(tcp_printer: TcpEscposPrinter) -> None:
    tcp_printer.mode = "paper_low"
    async with ReceiptPrinter(network(tcp_printer)) as printer:
        await printer.print_receipt(sample_receipt())
        assert printer.last_status.health is Health.PAPER_LOW
    assert_sample(printed(decode_escpos(tcp_printer.wait_for(ends_with_drawer), "gb18030")))


async def test_reconnects_after_the_connection_is_lost(tcp_printer: TcpEscposPrinter) -> None:
    async with ReceiptPrinter(network(tcp_printer)) as printer:
        await printer.print_receipt(Receipt().text("第一张").cut())
        tcp_printer.wait_for(lambda d: "第一张".encode("gb18030") in d)
        tcp_printer.drop_clients()
        await printer.print_receipt(Receipt().text("第二张").cut())
    data = tcp_printer.wait_for(lambda d: "第二张".encode("gb18030") in d and d.endswith(b"\x03"))
    assert text_lines(decode_escpos(data, "gb18030")) == ["第一张", "第二张"]
    assert tcp_printer.connections == 2


async def test_health_changes_are_reported(tcp_printer: TcpEscposPrinter) -> None:
    changes: list[HealthChanged] = []
    tcp_printer.mode = "silent"
    async with ReceiptPrinter(network(tcp_printer, timeout=0.3), on_health=changes.append) as p:
        assert (await p.status()).health is Health.DISCONNECTED
        tcp_printer.mode = "online"
        assert (await p.status()).health is Health.CONNECTED  # a fresh connection
        tcp_printer.mode = "paper_out"
        await p.status()
    assert [c.status.health for c in changes] == [
        Health.CONNECTED,
        Health.PAPER_OUT,
        Health.DISCONNECTED,
    ]
    assert tcp_printer.connections == 2


async def test_nobody_listening_is_disconnected(tcp_printer: TcpEscposPrinter) -> None:
    port = tcp_printer.port
    tcp_printer.close()
    async with ReceiptPrinter(Network("127.0.0.1", port, timeout=0.5)) as printer:
        assert (await printer.status()).health is Health.DISCONNECTED
        with pytest.raises(PrinterUnavailable) as raised:
            await printer.print_bytes(b"hello\n")
    assert raised.value.health is Health.DISCONNECTED
    assert "cannot open" in raised.value.reason


# --------------------------------------------------------------------------------------------
# Serial and file printers


async def test_serial_printer_over_a_pty() -> None:
    with PtyEscposPrinter("paper_low") as pty_printer:
        async with ReceiptPrinter(Serial(pty_printer.devfile, 115200)) as printer:
            assert (await printer.status()).health is Health.PAPER_LOW
            await printer.print_receipt(sample_receipt(PAPER_58MM))
        data = pty_printer.wait_for(ends_with_drawer)
    assert_sample(printed(decode_escpos(data, "gb18030")), PAPER_58MM)


async def test_serial_printer_out_of_paper_gets_nothing() -> None:
    with PtyEscposPrinter("paper_out") as pty_printer:
        async with ReceiptPrinter(Serial(pty_printer.devfile, timeout=0.5)) as printer:
            with pytest.raises(PrinterUnavailable):
                await printer.print_receipt(sample_receipt())
            pty_printer.mode = "online"
            assert (await printer.status()).health is Health.CONNECTED
        data = pty_printer.wait_for(lambda d: d.count(DLE_EOT_ONLINE) == 2 and d.endswith(b"\x04"))
    assert all(isinstance(item, StatusQuery) for item in decode_escpos(data, "gb18030"))


async def test_file_printer_writes_the_receipt(tmp_path: Path) -> None:
    target = tmp_path / "lp0"
    async with ReceiptPrinter(File(str(target))) as printer:
        status = await printer.status()
        await printer.print_receipt(sample_receipt())
    assert status.health is Health.CONNECTED and "write-only" in status.detail
    data = target.read_bytes()
    assert data == render_escpos(sample_receipt(), "gb18030")
    assert_sample(decode_escpos(data, "gb18030"))


# --------------------------------------------------------------------------------------------
# Simulated printer


async def test_simulated_printer_keeps_jobs_and_obeys_its_health() -> None:
    changes: list[HealthChanged] = []
    async with SimulatedPrinter(on_health=changes.append) as printer:
        await printer.print_receipt(sample_receipt())
        printer.set_health(Health.PAPER_OUT, "paper out")
        with pytest.raises(PrinterUnavailable) as raised:
            await printer.print_bytes(b"more\n")
        assert raised.value.health is Health.PAPER_OUT
        printer.set_health(Health.CONNECTED)
        await printer.print_bytes(b"more\n")
    assert len(printer.jobs) == 2
    assert_sample(decode_escpos(printer.jobs[0], "gb18030"))
    assert printer.received.endswith(b"more\n")
    assert [c.status.health for c in changes] == [
        Health.CONNECTED,
        Health.PAPER_OUT,
        Health.CONNECTED,
        Health.DISCONNECTED,
    ]


# --------------------------------------------------------------------------------------------
# PNG preview


def png_height(path: Path) -> int:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        return image.height


def test_receipt_preview_png(tmp_path: Path) -> None:
    data = render_escpos(sample_receipt(), "gb18030")
    path = render_png(data, "gb18030", tmp_path / "receipt.png")
    assert path.stat().st_size > 0
    assert png_height(path) > 0


def test_preview_grows_with_the_number_of_lines(tmp_path: Path) -> None:
    short = Receipt().text("会员小票").row("牛奶", "12.50")
    long = Receipt().text("会员小票")
    for i in range(20):
        long.row(f"商品 {i}", "1.00")
    items_short = decode_escpos(render_escpos(short, "big5"), "big5")
    heights = [
        png_height(render_png(items_short, "big5", tmp_path / "short.png")),
        png_height(render_png(render_escpos(long, "big5"), "big5", tmp_path / "long.png")),
    ]
    assert heights[0] < heights[1]


def test_preview_draws_a_box_without_the_qrcode_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receipt_preview, "_qr_matrix", lambda data: None)
    path = render_png(render_escpos(Receipt().qr(QR_URL), "gb18030"), "gb18030", tmp_path / "q.png")
    assert png_height(path) > 0
