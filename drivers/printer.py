"""ESC/POS receipt printers: a printer-neutral receipt model, its ESC/POS bytes, and the printer.

Shape (see ``drivers.base``)::

    receipt = Receipt(width=PAPER_80MM)
    receipt.text("会员小票", align="center", bold=True, size=2).row("牛奶 2×12.50", "25.00")
    receipt.divider().qr("https://m.example/r/123").cut().drawer()
    async with ReceiptPrinter(Network("192.168.1.50"), encoding="gb18030") as printer:
        await printer.print_receipt(receipt)  # PrinterUnavailable when offline / out of paper

Text is never handed to python-escpos' ``text()``: it mangles characters outside its guess of a
code page (a lone full-width ``：`` becomes ``?``) and cannot select Big5. ``render_escpos``
encodes every line with the printer's own encoding (``gb18030``, ``gbk``, ``big5``, or a single-byte
code page) after switching a CJK printer into Chinese/Kanji mode (``FS &``), and builds every
command itself, so the bytes are exactly what ``drivers.escpos_decode`` documents.

Widths are counted in display cells: on a Kanji-mode printer every double-byte character is
printed one Hanzi wide, i.e. two ASCII cells. East Asian wide/full-width characters take two cells,
and so do "ambiguous" ones (``×``, ``─``, ``°``) under a CJK encoding, because GB/Big5 encode them
as double-byte characters. Lines are padded and wrapped by cells and never split a character.

python-escpos is used for the transports (``Network``, ``Serial``, ``Usb``, ``File``) and the
``DLE EOT`` queries, with its pitfalls worked around: replies are read with a short timeout
(default 1.5 s, escpos' default is 60 s), and an empty or absent reply means "not reachable",
never "paper OK" as escpos' ``paper_status()`` reports it. All blocking I/O runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import socket
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from escpos import printer as escpos_printer

from drivers.base import DeviceKind, DeviceStatus, Health, HealthChanged

log = logging.getLogger(__name__)

#: Paper width in display cells (Font A, 12×24 dots).
PAPER_80MM = 48
PAPER_58MM = 32

Align = Literal["left", "center", "right"]
Symbology = Literal["CODE128", "EAN13"]

#: Encodings printed in Chinese/Kanji mode (FS &); the printer's font table decides GB or Big5.
CJK_ENCODINGS = frozenset({"gb18030", "gbk", "gb2312", "big5", "big5hkscs"})
#: ESC t page numbers of single-byte code pages (Epson numbering).
_CODE_PAGES = {"cp437": 0, "cp850": 2, "cp860": 3, "cp863": 4, "cp865": 5, "cp866": 17,
               "cp852": 18, "cp858": 19}  # fmt: skip

ESC, GS, FS, DLE, EOT, LF = b"\x1b", b"\x1d", b"\x1c", b"\x10", b"\x04", b"\n"
DLE_EOT_ONLINE = DLE + EOT + b"\x01"
DLE_EOT_PAPER = DLE + EOT + b"\x04"


# --------------------------------------------------------------------------------------------
# Display cells


def is_cjk_encoding(encoding: str) -> bool:
    return _codec_name(encoding) in CJK_ENCODINGS


def _codec_name(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None


def char_cells(ch: str, cjk: bool = False) -> int:
    """Cells one character takes on the paper: 2 for wide/full-width, also ambiguous under CJK."""
    if unicodedata.combining(ch):
        return 0
    kind = unicodedata.east_asian_width(ch)
    if kind in ("W", "F") or (cjk and kind == "A"):
        return 2
    return 1


def text_cells(text: str, cjk: bool = False) -> int:
    return sum(char_cells(ch, cjk) for ch in text)


def wrap_cells(text: str, width: int, cjk: bool = False) -> list[str]:
    """``text`` in lines of at most ``width`` cells; breaks at a space where one is near.

    A character is never split: a wide character that does not fit starts the next line.
    """
    lines: list[str] = []
    line, used = "", 0
    for ch in text:
        cells = char_cells(ch, cjk)
        if used + cells > width and line:
            space = line.rfind(" ")
            if ch != " " and space > 0:  # move the word started after the last space down
                lines.append(line[:space].rstrip())
                line = line[space + 1 :]
            else:
                lines.append(line.rstrip())
                line = ""
            used = text_cells(line, cjk)
            if ch == " " and not line:
                continue
        line += ch
        used += cells
    lines.append(line)
    return lines


def fit_row(left: str, right: str, width: int, cjk: bool = False, fill: str = " ") -> list[str]:
    """``left`` and ``right`` on one line of exactly ``width`` cells, ``fill`` between them.

    When they do not fit, ``left`` wraps in the room beside ``right`` (which stays on the first
    line); when even that room is too narrow, ``right`` gets a right-aligned line of its own.
    """
    right_cells = text_cells(right, cjk)
    room = width - right_cells - 1  # at least one fill cell between the columns
    if text_cells(left, cjk) <= room:
        return [_pad(left, width - right_cells, cjk, fill) + right]
    if room >= max(4, width // 3):
        first, *rest = wrap_cells(left, room, cjk)
        return [_pad(first, width - right_cells, cjk, fill) + right, *rest]
    lines = wrap_cells(left, width, cjk) if left else []
    rights = wrap_cells(right, width, cjk)
    return lines + [_align_line(part, width, "right", cjk) for part in rights]


def _pad(text: str, width: int, cjk: bool, fill: str = " ") -> str:
    return text + fill * max(0, width - text_cells(text, cjk))


def _align_line(text: str, width: int, align: Align, cjk: bool) -> str:
    """Spaces in front for right/centre alignment (used where ESC a cannot apply: inside a row)."""
    free = max(0, width - text_cells(text, cjk))
    return " " * (free if align == "right" else free // 2 if align == "center" else 0) + text


def _clean(text: str) -> str:
    """Drop control characters so text from a database can never inject printer commands."""
    text = text.replace("\t", " ")
    return "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")


# --------------------------------------------------------------------------------------------
# Receipt document


@dataclass(frozen=True, slots=True)
class Text:
    """A paragraph; ``size`` scales width and height (GS !, 1..8). Wrapped to the paper."""

    text: str
    align: Align = "left"
    bold: bool = False
    size: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 8:
            raise ValueError("text size must be 1..8")


@dataclass(frozen=True, slots=True)
class Row:
    """A two-column line ``left ... right``, filled with ``fill`` to the paper width."""

    left: str
    right: str
    bold: bool = False
    fill: str = " "

    def __post_init__(self) -> None:
        if len(self.fill) != 1 or char_cells(self.fill, cjk=True) != 1:
            raise ValueError("fill must be one single-cell character")


@dataclass(frozen=True, slots=True)
class Divider:
    char: str = "-"

    def __post_init__(self) -> None:
        if len(self.char) != 1:
            raise ValueError("divider char must be one character")


@dataclass(frozen=True, slots=True)
class QR:
    """A QR code printed by the printer itself (GS ( k), model 2, error level M, UTF-8 data."""

    data: str
    size: int = 6  # module size in dots
    align: Align = "center"

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 16:
            raise ValueError("QR size must be 1..16")
        if not self.data or len(self.data.encode()) > 7089:
            raise ValueError("QR data must be 1..7089 bytes")


@dataclass(frozen=True, slots=True)
class Barcode:
    """CODE128 (printable ASCII) or EAN13 (12 digits, or 13 with a correct check digit)."""

    data: str
    symbology: Symbology = "CODE128"
    align: Align = "center"
    height: int = 80  # dots
    hri: bool = True  # human-readable digits below the bars

    def __post_init__(self) -> None:
        if self.symbology == "EAN13":
            if not (self.data.isascii() and self.data.isdigit() and len(self.data) in (12, 13)):
                raise ValueError("EAN13 data must be 12 or 13 digits")
            if len(self.data) == 13 and ean13_check_digit(self.data[:12]) != self.data[12]:
                raise ValueError(f"EAN13 check digit of {self.data} is wrong")
        elif self.symbology == "CODE128":
            if not self.data or not all(" " <= ch <= "~" for ch in self.data):
                raise ValueError("CODE128 data must be printable ASCII")
            if len(self.data) > 250:
                raise ValueError("CODE128 data too long")
        else:
            raise ValueError(f"unsupported symbology {self.symbology!r}")
        if not 1 <= self.height <= 255:
            raise ValueError("barcode height must be 1..255 dots")


@dataclass(frozen=True, slots=True)
class Feed:
    lines: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.lines <= 255:
            raise ValueError("feed lines must be 0..255")


@dataclass(frozen=True, slots=True)
class Cut:
    partial: bool = False


@dataclass(frozen=True, slots=True)
class DrawerKick:
    pin: Literal[0, 1] = 0  # 0: connector pin 2 (the usual drawer), 1: pin 5


Block = Text | Row | Divider | QR | Barcode | Feed | Cut | DrawerKick


def ean13_check_digit(first12: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


@dataclass(slots=True)
class Receipt:
    """A receipt as blocks; ``width`` is the paper width in cells (48 for 80 mm, 32 for 58 mm).

    The builder methods append a block and return the receipt, so calls chain.
    """

    width: int = PAPER_80MM
    blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 16 <= self.width <= 255:
            raise ValueError("paper width must be 16..255 cells")

    def add(self, block: Block) -> Self:
        self.blocks.append(block)
        return self

    def text(self, text: str, align: Align = "left", bold: bool = False, size: int = 1) -> Self:
        return self.add(Text(text, align, bold, size))

    def row(self, left: str, right: str, bold: bool = False, fill: str = " ") -> Self:
        return self.add(Row(left, right, bold, fill))

    def divider(self, char: str = "-") -> Self:
        return self.add(Divider(char))

    def qr(self, data: str, size: int = 6, align: Align = "center") -> Self:
        return self.add(QR(data, size, align))

    def barcode(self, data: str, symbology: Symbology = "CODE128", align: Align = "center") -> Self:
        return self.add(Barcode(data, symbology, align))

    def feed(self, lines: int = 1) -> Self:
        return self.add(Feed(lines))

    def cut(self, partial: bool = False) -> Self:
        return self.add(Cut(partial))

    def drawer(self, pin: Literal[0, 1] = 0) -> Self:
        return self.add(DrawerKick(pin))


# --------------------------------------------------------------------------------------------
# ESC/POS rendering

_ALIGN_CODE = {"left": 0, "center": 1, "right": 2}
_BARCODE_CODE = {"EAN13": 67, "CODE128": 73}  # GS k format B (m, n, data)


@dataclass(slots=True)
class _Writer:
    """Accumulates ESC/POS bytes, sending a mode command only when the mode changes."""

    encoding: str
    out: bytearray = field(default_factory=bytearray)
    align: int = 0
    bold: bool = False
    size: int = 1

    def mode(self, align: Align = "left", bold: bool = False, size: int = 1) -> None:
        code = _ALIGN_CODE[align]
        if code != self.align:
            self.out += ESC + b"a" + bytes([code])
            self.align = code
        if bold != self.bold:
            self.out += ESC + b"E" + bytes([int(bold)])
            self.bold = bold
        if size != self.size:
            # GS ! scales every character; ESC ! would widen only ASCII on Kanji-mode printers.
            self.out += GS + b"!" + bytes([(size - 1) << 4 | (size - 1)])
            self.size = size

    def line(self, text: str) -> None:
        encoded = text.encode(self.encoding, errors="replace")
        if b"?" in encoded and "?" not in text:
            log.warning("printer encoding %s cannot print some of %r", self.encoding, text)
        self.out += encoded + LF


def render_escpos(doc: Receipt, encoding: str = "gb18030") -> bytes:
    """The ESC/POS bytes of ``doc`` for a printer whose text encoding is ``encoding``."""
    name = _codec_name(encoding)
    cjk = name in CJK_ENCODINGS
    w = _Writer(name)
    w.out += ESC + b"@"
    if cjk:
        w.out += FS + b"&"  # Chinese/Kanji mode: bytes >= 0x80 are double-byte characters
    else:
        w.out += FS + b"."  # Chinese printers often start in Kanji mode; single-byte page here
        if name in _CODE_PAGES:
            w.out += ESC + b"t" + bytes([_CODE_PAGES[name]])
    for block in doc.blocks:
        _render_block(w, block, doc.width, cjk)
    w.mode()
    return bytes(w.out)


def _render_block(w: _Writer, block: Block, width: int, cjk: bool) -> None:
    match block:
        case Text(text, align, bold, size):
            w.mode(align, bold, size)
            for paragraph in _clean(text).split("\n"):
                for line in wrap_cells(paragraph, width // size, cjk):
                    w.line(line)
        case Row(left, right, bold, fill):
            w.mode("left", bold)
            for line in fit_row(_clean(left).replace("\n", " "), _clean(right), width, cjk, fill):
                w.line(line)
        case Divider(char):
            w.mode()
            w.line(char * (width // char_cells(char, cjk)))
        case QR(data, size, align):
            w.mode(align)
            w.out += qr_commands(data.encode(), size)
        case Barcode(data, symbology, align, height, hri):
            w.mode(align)
            w.out += GS + b"H" + bytes([2 if hri else 0]) + GS + b"h" + bytes([height])
            w.out += GS + b"w" + b"\x02"
            payload = ("{B" + data.replace("{", "{{") if symbology == "CODE128" else data).encode()
            w.out += GS + b"k" + bytes([_BARCODE_CODE[symbology], len(payload)]) + payload
        case Feed(lines):
            w.out += ESC + b"d" + bytes([lines])
        case Cut(partial):
            # GS V 65/66 n: feed the last line past the cutter (+n dots), then cut.
            w.out += GS + b"V" + bytes([66 if partial else 65, 3])
        case DrawerKick(pin):
            w.out += ESC + b"p" + bytes([pin, 25, 250])  # 50 ms on, 500 ms off


def qr_commands(data: bytes, size: int = 6) -> bytes:
    """GS ( k: model 2, module ``size``, error level M, store ``data``, print."""

    def fn(body: bytes) -> bytes:
        return GS + b"(k" + len(body).to_bytes(2, "little") + body

    return (
        fn(b"\x31\x41\x32\x00")  # fn 165: model 2
        + fn(b"\x31\x43" + bytes([size]))  # fn 167: module size
        + fn(b"\x31\x45\x31")  # fn 169: error correction M
        + fn(b"\x31\x50\x30" + data)  # fn 180: store
        + fn(b"\x31\x51\x30")  # fn 181: print
    )


# --------------------------------------------------------------------------------------------
# Transports: python-escpos device classes plus what each needs for short status reads


class Transport(Protocol):
    @property
    def timeout(self) -> float:
        """Seconds to wait for a connection and for a status reply."""
        ...

    def describe(self) -> str: ...
    def create(self) -> Any: ...
    def readable(self) -> bool: ...
    def prepare(self, device: Any, writing: bool) -> None: ...
    def drain(self, device: Any) -> bool: ...
    def read_reply(self, device: Any) -> bytes: ...


class _TransportBase:
    """Defaults for transports that cannot tune timeouts or discard stale input."""

    __slots__ = ()
    timeout: float

    def readable(self) -> bool:
        return True

    def prepare(self, device: Any, writing: bool) -> None:
        """Set the device's timeout for a status read or for sending a job."""
        return None

    def drain(self, device: Any) -> bool:
        """Drop replies left by an earlier query; False when the connection turned out closed."""
        return True

    def read_reply(self, device: Any) -> bytes:
        return bytes(device._read())


@dataclass(frozen=True, slots=True)
class Network(_TransportBase):
    """A printer on TCP port 9100 (raw / JetDirect)."""

    host: str
    port: int = 9100
    timeout: float = 1.5
    write_timeout: float = 10.0  # sending may wait while a busy printer's buffer is full

    def describe(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def create(self) -> Any:
        return escpos_printer.Network(self.host, self.port, timeout=self.timeout)

    def prepare(self, device: Any, writing: bool) -> None:
        device._device.settimeout(self.write_timeout if writing else self.timeout)

    def drain(self, device: Any) -> bool:
        sock: socket.socket = device._device
        sock.setblocking(False)
        try:
            while True:
                if not sock.recv(256):
                    return False  # orderly close by the printer (or its power went off)
        except BlockingIOError:
            return True
        finally:
            sock.settimeout(self.timeout)

    def read_reply(self, device: Any) -> bytes:
        try:
            return bytes(device._read())
        except TimeoutError:
            return b""


@dataclass(frozen=True, slots=True)
class Serial(_TransportBase):
    """A printer on a serial port (RS-232, USB-serial, a pty in tests)."""

    devfile: str
    baudrate: int = 9600
    timeout: float = 1.5
    write_timeout: float = 10.0

    def describe(self) -> str:
        return f"serial:{self.devfile}"

    def create(self) -> Any:
        return escpos_printer.Serial(self.devfile, self.baudrate, timeout=self.timeout)

    def prepare(self, device: Any, writing: bool) -> None:
        port = device._device
        port.timeout = self.timeout
        port.write_timeout = self.write_timeout

    def drain(self, device: Any) -> bool:
        device._device.reset_input_buffer()
        return True

    def read_reply(self, device: Any) -> bytes:
        # escpos' _read asks for 16 bytes, so pyserial would wait the whole timeout for the
        # one-byte status reply; one byte returns as soon as it arrives.
        return bytes(device._device.read(1))


@dataclass(frozen=True, slots=True)
class Usb(_TransportBase):
    """A USB printer through pyusb (needs the ``pyusb`` package and access to the device)."""

    id_vendor: int
    id_product: int
    timeout: float = 1.5
    write_timeout: float = 10.0
    in_ep: int = 0x82
    out_ep: int = 0x01

    def describe(self) -> str:
        return f"usb:{self.id_vendor:04x}:{self.id_product:04x}"

    def create(self) -> Any:
        if not escpos_printer.Usb.is_usable():  # checked first: escpos' __del__ would raise too
            raise RuntimeError("USB printing needs the pyusb package")
        return escpos_printer.Usb(
            self.id_vendor, self.id_product, timeout=int(self.write_timeout * 1000),
            in_ep=self.in_ep, out_ep=self.out_ep,
        )  # fmt: skip

    def read_reply(self, device: Any) -> bytes:
        try:  # escpos' _read has no timeout; pyusb's read takes one in ms
            return bytes(device._device.read(self.in_ep, 16, int(self.timeout * 1000)))
        except Exception as exc:  # pyusb's USBTimeoutError is not an OSError
            if "timeout" in type(exc).__name__.lower():
                return b""
            raise OSError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class File(_TransportBase):
    """A write-only device file (``/dev/usb/lp0``) or a plain file; opened (truncated) once."""

    devfile: str
    timeout: float = 1.5

    def describe(self) -> str:
        return f"file:{self.devfile}"

    def create(self) -> Any:
        return escpos_printer.File(self.devfile)

    def readable(self) -> bool:
        return False


# --------------------------------------------------------------------------------------------
# Printers

#: Healths in which a receipt is sent (paper low still prints).
PRINTABLE = frozenset({Health.CONNECTED, Health.PAPER_LOW})


class PrinterUnavailable(Exception):
    """The printer cannot print now; a print queue keeps the job and retries later."""

    def __init__(self, reason: str, health: Health) -> None:
        super().__init__(f"printer unavailable ({health}): {reason}")
        self.reason = reason
        self.health = health


def interpret_status(online: bytes, paper: bytes) -> tuple[Health, str]:
    """Health from the replies to DLE EOT 1 and DLE EOT 4 (empty: no reply)."""
    if not online:
        return Health.DISCONNECTED, "no reply to DLE EOT 1 (printer status)"
    if not paper:
        return Health.DISCONNECTED, "no reply to DLE EOT 4 (paper sensor)"
    for name, reply in (("DLE EOT 1", online), ("DLE EOT 4", paper)):
        if reply[0] & 0x93 != 0x12:  # bits 1 and 4 are fixed 1, bits 0 and 7 fixed 0
            return Health.ERROR, f"unexpected reply 0x{reply[0]:02X} to {name}"
    if paper[0] & 0x60:  # bits 5-6: paper end (the printer is then usually offline too)
        return Health.PAPER_OUT, "paper out"
    if online[0] & 0x08:
        return Health.ERROR, "printer offline (cover open, error or feed button)"
    if paper[0] & 0x0C:  # bits 2-3: paper near end
        return Health.PAPER_LOW, "paper low"
    return Health.CONNECTED, ""


class _PrinterFace:
    """Status bookkeeping and ``print_receipt`` shared by the real and the simulated printer."""

    device_id: str
    encoding: str
    _status: DeviceStatus
    _on_health: Callable[[HealthChanged], None] | None

    def _init_face(
        self, device_id: str, encoding: str, on_health: Callable[[HealthChanged], None] | None
    ) -> None:
        _codec_name(encoding)
        self.device_id = device_id
        self.encoding = encoding
        self._on_health = on_health
        self._status = DeviceStatus(device_id, DeviceKind.PRINTER, Health.DISCONNECTED, "not open")

    @property
    def last_status(self) -> DeviceStatus:
        """The status found by the last query or print, without asking the printer."""
        return self._status

    def _update(self, health: Health, detail: str) -> DeviceStatus:
        if health == self._status.health:  # same condition: keep when it began
            self._status = replace(self._status, detail=detail)
            return self._status
        self._status = DeviceStatus(self.device_id, DeviceKind.PRINTER, health, detail)
        log.info("printer %s: %s %s", self.device_id, health, detail)
        if self._on_health is not None:
            self._on_health(HealthChanged(self._status))
        return self._status

    def _check(self, status: DeviceStatus) -> None:
        if status.health not in PRINTABLE:
            raise PrinterUnavailable(status.detail or str(status.health), status.health)

    async def print_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    async def print_receipt(self, doc: Receipt) -> None:
        await self.print_bytes(render_escpos(doc, self.encoding))


class ReceiptPrinter(_PrinterFace):
    """One ESC/POS printer behind a transport.

    The connection opens on first use and after a lost connection is opened again by the next
    call. Before sending a job the printer is asked for its status (unless ``check_status`` is
    off, or the transport is write-only), and nothing is sent unless it can print. A job cut off by
    a lost connection may have printed in part; the caller decides whether to print it again.
    ``on_health`` is called on the event loop with a ``HealthChanged`` whenever the health changes.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        encoding: str = "gb18030",
        device_id: str | None = None,
        check_status: bool = True,
        on_health: Callable[[HealthChanged], None] | None = None,
    ) -> None:
        self._init_face(device_id or transport.describe(), encoding, on_health)
        self.transport = transport
        self.check_status = check_status
        self._device: Any = None
        self._io_lock = threading.Lock()  # one exchange at a time, even if a caller was cancelled

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self._close_locked)
        self._update(Health.DISCONNECTED, "closed")

    async def status(self) -> DeviceStatus:
        """Ask the printer (DLE EOT 1 and 4); at most about twice the transport timeout."""
        return self._update(*await asyncio.to_thread(self._status_locked))

    async def print_bytes(self, data: bytes) -> None:
        """Send ESC/POS bytes; ``PrinterUnavailable`` (and nothing sent) when it cannot print."""
        self._check(self._update(*await asyncio.to_thread(self._print_locked, bytes(data))))

    # -- worker thread side -------------------------------------------------------------------

    def _close_locked(self) -> None:
        with self._io_lock:
            self._drop()

    def _status_locked(self) -> tuple[Health, str]:
        with self._io_lock:
            return self._query()

    def _print_locked(self, data: bytes) -> tuple[Health, str]:
        with self._io_lock:
            if self.check_status:
                health, detail = self._query()
                if health not in PRINTABLE:
                    return health, detail
            else:
                health, detail = self._open()
                if self._device is None:
                    return health, detail
            try:
                self.transport.prepare(self._device, writing=True)
                self._device._raw(data)
            except OSError as exc:
                self._drop()
                return Health.DISCONNECTED, f"connection lost while printing: {exc}"
            return health, detail

    def _open(self) -> tuple[Health, str]:
        if self._device is not None:
            return Health.CONNECTED, ""
        try:
            device = self.transport.create()
            device.open()
        except Exception as exc:  # escpos wraps OSError in DeviceNotFoundError; pyusb missing
            health = Health.ERROR if isinstance(exc, RuntimeError) else Health.DISCONNECTED
            reason = " ".join(str(exc).split())  # escpos puts the OS error on a second line
            return health, f"cannot open {self.transport.describe()}: {reason}"
        self._device = device
        return Health.CONNECTED, ""

    def _drop(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            try:
                device.close()
            except Exception:  # closing a dead link may fail; it is gone either way
                log.debug("closing %s failed", self.transport.describe(), exc_info=True)

    def _query(self) -> tuple[Health, str]:
        health, detail = self._open()
        if self._device is None:
            return health, detail
        if not self.transport.readable():
            return Health.CONNECTED, "write-only transport: paper state is not reported"
        try:
            if not self.transport.drain(self._device):  # stale connection: open a fresh one
                self._drop()
                health, detail = self._open()
                if self._device is None:
                    return health, detail
            online = self._ask(DLE_EOT_ONLINE)
            paper = self._ask(DLE_EOT_PAPER) if online else b""
        except OSError as exc:
            self._drop()
            return Health.DISCONNECTED, f"connection lost: {exc}"
        health, detail = interpret_status(online, paper)
        if not (online and paper):
            self._drop()  # a late reply must not be taken for the answer to the next query
        return health, detail

    def _ask(self, command: bytes) -> bytes:
        self.transport.prepare(self._device, writing=False)
        self._device._raw(command)
        return self.transport.read_reply(self._device)[:1]


class SimulatedPrinter(_PrinterFace):
    """A printer without hardware for demos, POS development and tests.

    Keeps every job it accepted (``jobs``, ``received``); ``set_health`` puts it out of paper,
    offline, etc., after which ``print_*`` raises ``PrinterUnavailable`` as a real one would.
    """

    def __init__(
        self,
        device_id: str = "Simulated printer",
        *,
        encoding: str = "gb18030",
        on_health: Callable[[HealthChanged], None] | None = None,
    ) -> None:
        self._init_face(device_id, encoding, on_health)
        self.jobs: list[bytes] = []
        self._health, self._detail = Health.CONNECTED, ""

    async def __aenter__(self) -> Self:
        self._update(self._health, self._detail)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._update(Health.DISCONNECTED, "closed")

    @property
    def received(self) -> bytes:
        return b"".join(self.jobs)

    def set_health(self, health: Health, detail: str = "") -> None:
        self._health, self._detail = health, detail
        self._update(health, detail)

    async def status(self) -> DeviceStatus:
        return self._update(self._health, self._detail)

    async def print_bytes(self, data: bytes) -> None:
        self._check(await self.status())
        self.jobs.append(bytes(data))
