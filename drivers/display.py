"""Customer pole displays on a serial port (pyserial), behind a small asyncio face.

Shape (see ``drivers.base``)::

    async with PoleDisplay(DisplayConfig("/dev/ttyUSB0", command_set="cd5220")) as display:
        await display.show("Coffee", "12.50")
        await display.show_amount(Lamp.TOTAL, 1250)

Three command sets (pure encoders below, usable and tested without a port):

- ``cd5220``: 2×20 VFDs speaking the CD5220 set (``ESC Q A``/``ESC Q B`` whole lines, ``ESC Q D``
  marquee);
- ``escpos``: Epson DM-D and clones (ESC/POS line display: ``US $`` cursor, then raw text);
- ``led``: the common Chinese "客显" 8-digit LED price displays (``ESC s n`` lamp,
  ``ESC Q A`` digits).

Text goes out in the display's code page: ``ascii`` for 5×7 VFDs, ``gb2312`` / ``big5`` for
Hanzi-capable models, where a Hanzi takes two of the 20 cells. Lines are fitted by bytes, never
splitting a two-byte character; what a display cannot show is transliterated or becomes ``?``.

Health: a port that cannot be opened or fails a write (unplugged USB adapter, hung line that trips
the write timeout) turns ``DISCONNECTED``; the display keeps what it was last asked to show, and a
background retry (or the next command) reopens the port and sends init plus that state, so the
customer sees the right lines again without the POS doing anything.

``SimulatedDisplay`` has the same face and keeps the current lines, for the demo and POS work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from drivers.base import DeviceKind, DeviceStatus, EventChannel, Health, HealthChanged

log = logging.getLogger(__name__)

DisplayEncoding = Literal["ascii", "gb2312", "big5"]
CommandSetName = Literal["cd5220", "escpos", "led"]

ESC, US, CAN, FF, VT, CR = b"\x1b", b"\x1f", b"\x18", b"\x0c", b"\x0b", b"\r"

#: Digit positions of a "客显" LED display (the decimal point lights a segment, it takes no digit).
LED_DIGITS = 8
#: Longest text a marquee takes (the CD5220 scroll buffer holds 40 characters).
SCROLL_CELLS = 40


class Lamp(IntEnum):
    """The legend lamps of a "客显" LED display, numbered as in its ``ESC s n`` command."""

    OFF = 0
    PRICE = 1  # 单价 unit price
    TOTAL = 2  # 总计
    PAID = 3  # 收款
    CHANGE = 4  # 找零

    @classmethod
    def of(cls, kind: Lamp | str) -> Lamp:
        if isinstance(kind, Lamp):
            return kind
        try:
            return cls[kind.strip().upper()]
        except KeyError:
            names = ", ".join(lamp.name.lower() for lamp in cls)
            raise ValueError(f"unknown lamp {kind!r}; one of {names}") from None


class UnsupportedCommand(ValueError):
    """The command set of the display has no such command (text on an LED price display)."""


# --------------------------------------------------------------------------------------------
# Text fitting

_ASCII_EXTRA = str.maketrans(
    {
        "ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Ø": "O", "ø": "o",
        "Đ": "D", "đ": "d", "Ł": "L", "ł": "l", "Þ": "Th", "þ": "th",
        "‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "·": ".", "×": "x",
        "、": ",", "。": ".", "「": '"', "」": '"', "《": "<", "》": ">", "【": "[", "】": "]",
        "¥": "Y", "€": "EUR", "£": "L", "°": "o",
    }
)  # fmt: skip


def _clean(text: str) -> str:
    """Controls become spaces (a CR or ESC inside a line would end or corrupt the command)."""
    return "".join(
        " " if unicodedata.category(ch) == "Cc" else ch
        for ch in text
        if unicodedata.category(ch) != "Cf"  # zero-width marks: nothing to show
    )


def to_ascii(text: str) -> str:
    """What an ASCII-only display can show of ``text``; the result is printable ASCII only.

    NFKD folds full-width forms to ASCII and splits accents off (then dropped); a small table
    covers letters and CJK punctuation NFKD leaves alone. Anything else (Hanzi, Cyrillic, ...)
    becomes one ``?``: a visible gap beats mojibake on the customer's side.
    """
    decomposed = unicodedata.normalize("NFKD", _clean(text))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    folded = stripped.translate(_ASCII_EXTRA)
    return "".join(ch if " " <= ch <= "~" else "?" for ch in folded)


def _cell_units(text: str, encoding: DisplayEncoding) -> list[bytes]:
    """``text`` as the smallest pieces that may not be split: one byte, or one two-byte char."""
    if encoding == "ascii":
        return [bytes([b]) for b in to_ascii(text).encode("ascii")]
    units: list[bytes] = []
    for ch in unicodedata.normalize("NFC", _clean(text)):
        try:
            encoded = ch.encode(encoding)
        except UnicodeEncodeError:  # e.g. a traditional-only Hanzi on a GB2312 display
            units.extend(bytes([b]) for b in to_ascii(ch).encode("ascii"))
            continue
        units.append(encoded)  # ASCII: one byte; a Hanzi: both bytes, never split
    return units


def fit_text(
    text: str, cells: int, encoding: DisplayEncoding = "ascii", *, pad: bool = True
) -> bytes:
    """``text`` in ``encoding``, cut to at most ``cells`` bytes and (``pad``) space-padded to it.

    The cut never splits a two-byte character: one that would straddle the end is left out and
    its cell padded, so a 19-cell budget holds 9 Hanzi and a space, never 9½.
    """
    if cells < 0:
        raise ValueError("cells must not be negative")
    out = bytearray()
    for unit in _cell_units(text, encoding):
        if len(out) + len(unit) > cells:
            break
        out += unit
    if pad:
        out += b" " * (cells - len(out))
    return bytes(out)


def format_amount(amount_minor: int, max_digits: int | None = LED_DIGITS) -> str:
    """Minor units (fen) as a decimal with two places: ``12345`` → ``"123.45"``.

    ``max_digits``: positions the display has; the minus sign takes one, the point none.
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount must be an int of minor units, not {amount_minor!r}")
    whole, fen = divmod(abs(amount_minor), 100)
    text = f"{'-' if amount_minor < 0 else ''}{whole}.{fen:02d}"
    needed = len(text) - 1
    if max_digits is not None and needed > max_digits:
        raise ValueError(f"amount {text} needs {needed} digits; the display has {max_digits}")
    return text


_AMOUNT_LABELS = {
    Lamp.OFF: "",
    Lamp.PRICE: "PRICE",
    Lamp.TOTAL: "TOTAL",
    Lamp.PAID: "PAID",
    Lamp.CHANGE: "CHANGE",
}


def amount_lines(kind: Lamp | str, amount_minor: int, width: int = 20) -> tuple[str, str]:
    """How a text display shows an amount: the label above, the amount right-aligned below."""
    amount = format_amount(amount_minor, max_digits=width - 1)
    return _AMOUNT_LABELS[Lamp.of(kind)], amount.rjust(width)


# --------------------------------------------------------------------------------------------
# Command-set encoders: pure, bytes in (already fitted), bytes out


def _check_line(cells: bytes, width: int) -> bytes:
    if len(cells) != width:
        raise ValueError(f"a line is {width} bytes, got {len(cells)}; use fit_text first")
    return cells


def _check_cursor(col: int, row: int, width: int) -> None:
    if not (1 <= col <= width and 1 <= row <= 2):
        raise ValueError(f"cursor ({col}, {row}) outside 1..{width} × 1..2")


class TextCommands(Protocol):
    """What ``PoleDisplay`` needs of a two-line text command set."""

    @property
    def width(self) -> int: ...

    def init(self) -> bytes: ...
    def clear(self) -> bytes: ...
    def show(self, line1: bytes, line2: bytes) -> bytes: ...
    def scroll(self, text: bytes) -> bytes: ...
    def cursor(self, col: int, row: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CD5220Commands:
    width: int = 20

    def init(self) -> bytes:
        return ESC + b"@"

    def clear(self) -> bytes:
        return FF

    def upper_line(self, cells: bytes) -> bytes:
        return ESC + b"QA" + _check_line(cells, self.width) + CR

    def lower_line(self, cells: bytes) -> bytes:
        return ESC + b"QB" + _check_line(cells, self.width) + CR

    def show(self, line1: bytes, line2: bytes) -> bytes:
        return self.upper_line(line1) + self.lower_line(line2)

    def scroll(self, text: bytes) -> bytes:
        """Marquee on the upper line; the display keeps it running by itself."""
        if CR in text or len(text) > SCROLL_CELLS:
            raise ValueError(f"scroll text must be at most {SCROLL_CELLS} bytes without CR")
        return ESC + b"QD" + text + CR

    def cursor(self, col: int, row: int) -> bytes:
        _check_cursor(col, row, self.width)
        return ESC + b"l" + bytes([col, row])


@dataclass(frozen=True, slots=True)
class EscPosCommands:
    """Epson DM-D line displays (ESC/POS), cursor positions 1-based."""

    width: int = 20

    def init(self) -> bytes:
        # Overwrite mode set explicitly: in the scroll modes writing a full line would shift
        # the display instead of filling it.
        return ESC + b"@" + self.overwrite_mode()

    def clear(self) -> bytes:
        return FF

    def home(self) -> bytes:
        return VT

    def clear_line(self) -> bytes:
        return CAN

    def overwrite_mode(self) -> bytes:
        return US + b"\x01"  # US MD1

    def vertical_scroll_mode(self) -> bytes:
        return US + b"\x02"  # US MD2

    def horizontal_scroll_mode(self) -> bytes:
        return US + b"\x03"  # US MD3

    def cursor(self, col: int, row: int) -> bytes:
        _check_cursor(col, row, self.width)
        return US + b"$" + bytes([col, row])

    def show(self, line1: bytes, line2: bytes) -> bytes:
        return (
            self.cursor(1, 1)
            + _check_line(line1, self.width)
            + self.cursor(1, 2)
            + _check_line(line2, self.width)
        )

    def scroll(self, text: bytes) -> bytes:
        """Text run in once on the upper line (DM-D has no marquee): the cleared line is written
        in horizontal-scroll mode, so a long text slides left as it arrives; then back to
        overwrite mode for the next ``show``."""
        if len(text) > SCROLL_CELLS:
            raise ValueError(f"scroll text must be at most {SCROLL_CELLS} bytes")
        return (
            self.cursor(1, 1)
            + self.clear_line()
            + self.horizontal_scroll_mode()
            + text
            + self.overwrite_mode()
        )


@dataclass(frozen=True, slots=True)
class LedCommands:
    """Chinese "客显" 8-digit LED price displays."""

    digits: int = LED_DIGITS

    def init(self) -> bytes:
        return ESC + b"@"

    def clear(self) -> bytes:
        return FF

    def lamp(self, kind: Lamp | str) -> bytes:
        # n goes as an ASCII digit ("1B 73 31" lights unit price), as these displays expect.
        return ESC + b"s" + str(int(Lamp.of(kind))).encode("ascii")

    def amount(self, amount_minor: int) -> bytes:
        return ESC + b"QA" + format_amount(amount_minor, self.digits).encode("ascii") + CR

    def show_amount(self, kind: Lamp | str, amount_minor: int) -> bytes:
        amount = self.amount(amount_minor)  # validate before anything is built
        return self.lamp(kind) + amount


def text_commands(command_set: CommandSetName, width: int = 20) -> TextCommands:
    if command_set == "cd5220":
        return CD5220Commands(width)
    if command_set == "escpos":
        return EscPosCommands(width)
    raise UnsupportedCommand(f"{command_set!r} displays show amounts only, not text")


# --------------------------------------------------------------------------------------------
# Configuration and the event channel


@dataclass(frozen=True, slots=True)
class DisplayConfig:
    """Settings of one pole display; only ``port`` has no default."""

    port: str
    baudrate: int = 9600
    command_set: CommandSetName = "cd5220"
    encoding: DisplayEncoding = "ascii"
    width: int = 20
    #: Seconds a write may take before the port counts as hung (then: disconnected, reopened).
    write_timeout: float = 2.0
    #: Seconds between attempts to reopen a lost port.
    retry_interval: float = 2.0
    #: ``device_id`` of health events; default: the port.
    device_id: str = ""

    def __post_init__(self) -> None:
        if self.command_set not in ("cd5220", "escpos", "led"):
            raise ValueError(f"unknown command_set {self.command_set!r}")
        if self.encoding not in ("ascii", "gb2312", "big5"):
            raise ValueError(f"unknown encoding {self.encoding!r}")
        if not 1 <= self.width <= 255:
            raise ValueError("width must be 1..255")
        if self.baudrate <= 0 or self.write_timeout <= 0 or self.retry_interval <= 0:
            raise ValueError("baudrate, write_timeout and retry_interval must be positive")

    @property
    def name(self) -> str:
        return self.device_id or self.port



class _HealthReporter:
    """Current status plus its event stream; an event only when the health changes."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.status = DeviceStatus(device_id, DeviceKind.DISPLAY, Health.DISCONNECTED, "not open")
        self.channel: EventChannel[HealthChanged] | None = None
        self._reported = False

    def open(self) -> None:
        self.channel = EventChannel[HealthChanged]()
        self._reported = False

    def set(self, health: Health, detail: str = "") -> None:
        if self._reported and self.status.health is health:
            return
        self._reported = True
        self.status = DeviceStatus(self.device_id, DeviceKind.DISPLAY, health, detail)
        log.info("display %s: %s %s", self.device_id, health.value, detail)
        if self.channel is not None:
            self.channel.put(HealthChanged(self.status))

    def close(self) -> None:
        self.set(Health.DISCONNECTED, "closed")
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def events(self) -> AsyncIterator[HealthChanged]:
        if self.channel is None:
            raise RuntimeError("open the display with 'async with' first")
        return self.channel.stream()


# --------------------------------------------------------------------------------------------
# The real display


class _SerialLink:
    """The port, touched only from worker threads; the lock keeps a write abandoned by a
    cancelled caller from interleaving with the next one."""

    def __init__(self, config: DisplayConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._serial: Any = None
        self._shut = False  # set by shutdown(): an open still running in a thread must not win

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self, greeting: bytes) -> None:
        import serial

        with self._lock:
            if self._shut:
                raise serial.SerialException("display closed")
            self._close_locked()
            port = serial.Serial(
                self.config.port,
                self.config.baudrate,
                timeout=0,
                write_timeout=self.config.write_timeout,
                exclusive=True,  # a second process writing would garble the commands
            )
            try:
                self._write_locked(port, greeting)
            except BaseException:
                port.close()
                raise
            self._serial = port

    def write(self, data: bytes) -> None:
        import serial

        with self._lock:
            if self._serial is None:
                raise serial.SerialException("port not open")
            self._write_locked(self._serial, data)

    @staticmethod
    def _write_locked(port: Any, data: bytes) -> None:
        # No flush(): tcdrain has no timeout and would hang on a stuck line; write() with
        # write_timeout already returns only once the kernel has taken every byte.
        written = port.write(data)
        if written is not None and written != len(data):
            raise OSError(f"short write: {written} of {len(data)} bytes")

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def shutdown(self) -> None:
        with self._lock:
            self._shut = True
            self._close_locked()

    def _close_locked(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(OSError):  # already gone with the device
                port.close()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class PoleDisplay:
    """A pole display on a serial port. Use ``async with`` for its lifetime.

    Commands return ``True`` once the bytes are with the device, ``False`` while it is
    disconnected: what was asked is kept and shown as soon as the port is back, so a checkout never
    waits for or fails on the customer display. ``events()`` reports health changes.
    """

    def __init__(self, config: DisplayConfig) -> None:
        self.config = config
        self._link = _SerialLink(config)
        self._health = _HealthReporter(config.name)
        self._lock = asyncio.Lock()  # commands reach the port in the order they were called
        self._state: bytes | None = None  # the last show/scroll/amount, re-sent after reopen
        self._retry: asyncio.Task[None] | None = None
        self._open = False

    def _init_bytes(self) -> bytes:
        if self.config.command_set == "led":
            return LedCommands().init()
        return text_commands(self.config.command_set, self.config.width).init()

    def _clear_bytes(self) -> bytes:
        return FF  # the same form feed in every set

    # -- lifetime

    async def __aenter__(self) -> Self:
        if self._open:
            raise RuntimeError("display already open")
        self._open = True
        self._link = _SerialLink(self.config)
        self._health.open()
        try:
            async with self._lock:
                await self._reopen()  # a missing port is reported, not raised: see the retry
        except BaseException:  # a bad setting (pyserial's ValueError) leaves nothing half-open
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        retry, self._retry = self._retry, None
        if retry is not None:
            retry.cancel()
            await asyncio.wait([retry])
        async with self._lock:
            await asyncio.to_thread(self._link.shutdown)
        self._health.close()

    def events(self) -> AsyncIterator[HealthChanged]:
        return self._health.events()

    @property
    def status(self) -> DeviceStatus:
        return self._health.status

    # -- commands

    async def show(self, line1: str = "", line2: str = "") -> bool:
        """Both lines, each fitted to ``width`` cells in the display's encoding."""
        commands = text_commands(self.config.command_set, self.config.width)
        fit = self._fit
        return await self._send(commands.show(fit(line1), fit(line2)), keep=True)

    async def scroll(self, text: str) -> bool:
        """Text running across the upper line (see the command set for how)."""
        commands = text_commands(self.config.command_set, self.config.width)
        data = fit_text(text, SCROLL_CELLS, self.config.encoding, pad=False)
        return await self._send(commands.scroll(data), keep=True)

    async def clear(self) -> bool:
        return await self._send(self._clear_bytes(), keep=False)

    async def show_amount(self, kind: Lamp | str, amount_minor: int) -> bool:
        """An amount (minor units) with its lamp on an LED display, or label + amount on a text
        display. Raises ``ValueError`` when it does not fit, before anything is sent."""
        if self.config.command_set == "led":
            data = LedCommands().show_amount(kind, amount_minor)
            return await self._send(data, keep=True)
        return await self.show(*amount_lines(kind, amount_minor, self.config.width))

    def _fit(self, line: str) -> bytes:
        return fit_text(line, self.config.width, self.config.encoding)

    # -- port handling (on the loop; blocking parts in worker threads)

    async def _send(self, data: bytes, *, keep: bool) -> bool:
        if not self._open:
            raise RuntimeError("open the display with 'async with' first")
        async with self._lock:
            self._state = data if keep else None
            if not self._link.is_open:
                return await self._reopen()  # init + the state just set: includes ``data``
            try:
                await asyncio.to_thread(self._link.write, data)
            except OSError as exc:  # pyserial's SerialException is an OSError
                await self._lost(exc)
                return False
            return True

    async def _reopen(self) -> bool:
        """Open the port and send init plus the current state. Call with the lock held."""
        greeting = self._init_bytes() + (self._state or self._clear_bytes())
        try:
            await asyncio.to_thread(self._link.open, greeting)
        except OSError as exc:
            self._health.set(Health.DISCONNECTED, _reason(exc))
            self._start_retry()
            return False
        self._health.set(Health.CONNECTED)
        return True

    async def _lost(self, exc: BaseException) -> None:
        log.warning("display %s: port lost: %s", self.config.name, _reason(exc))
        await asyncio.to_thread(self._link.close)
        self._health.set(Health.DISCONNECTED, _reason(exc))
        self._start_retry()

    def _start_retry(self) -> None:
        if self._open and (self._retry is None or self._retry.done()):
            self._retry = asyncio.create_task(self._retry_loop(), name="pole-display-retry")

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.retry_interval)
            async with self._lock:
                try:
                    if self._link.is_open or await self._reopen():
                        return
                except Exception as exc:  # keep retrying: a dead retry task would never recover
                    log.exception("display %s: unexpected error reopening", self.config.name)
                    self._health.set(Health.ERROR, _reason(exc))


async def discover(
    command_set: CommandSetName = "cd5220", encoding: DisplayEncoding = "ascii"
) -> list[DisplayConfig]:
    """A config per serial port attached now. A pole display does not identify itself, so these
    are candidates: the installer picks the port (``/dev/serial/by-id/...`` is stable)."""

    def list_now() -> list[str]:
        from serial.tools import list_ports

        return sorted(str(port.device) for port in list_ports.comports())

    ports = await asyncio.to_thread(list_now)
    return [DisplayConfig(port, command_set=command_set, encoding=encoding) for port in ports]


# --------------------------------------------------------------------------------------------
# Simulated display for the demo and POS development


class SimulatedDisplay:
    """A pole display without hardware, with the face of ``PoleDisplay``.

    ``lines`` is what the glass shows (fitted exactly as the real display would); ``scrolling``
    the running text, ``lamp`` / ``amount`` what an LED display shows. ``disconnect()`` and
    ``reconnect()`` play a lost port: commands then return ``False`` but still update the state.
    """

    def __init__(
        self,
        command_set: CommandSetName = "cd5220",
        encoding: DisplayEncoding = "ascii",
        width: int = 20,
        device_id: str = "simulated-display",
    ) -> None:
        self.config = DisplayConfig(
            port="", command_set=command_set, encoding=encoding, width=width, device_id=device_id
        )
        self._health = _HealthReporter(device_id)
        self.lines = (" " * width, " " * width)
        self.scrolling: str | None = None
        self.lamp = Lamp.OFF
        self.amount: str | None = None

    async def __aenter__(self) -> Self:
        self._health.open()
        self._health.set(Health.CONNECTED)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._health.close()

    def events(self) -> AsyncIterator[HealthChanged]:
        return self._health.events()

    @property
    def status(self) -> DeviceStatus:
        return self._health.status

    @property
    def _delivered(self) -> bool:
        return self._health.status.health is Health.CONNECTED

    async def show(self, line1: str = "", line2: str = "") -> bool:
        text_commands(self.config.command_set)  # same refusal as the real LED display
        self.lines = (self._glass(line1), self._glass(line2))
        self.scrolling = None
        return self._delivered

    async def scroll(self, text: str) -> bool:
        text_commands(self.config.command_set)
        self.scrolling = fit_text(text, SCROLL_CELLS, self.config.encoding, pad=False).decode(
            self.config.encoding
        )
        return self._delivered

    async def clear(self) -> bool:
        width = self.config.width
        self.lines, self.scrolling = (" " * width, " " * width), None
        self.lamp, self.amount = Lamp.OFF, None
        return self._delivered

    async def show_amount(self, kind: Lamp | str, amount_minor: int) -> bool:
        if self.config.command_set != "led":
            return await self.show(*amount_lines(kind, amount_minor, self.config.width))
        self.amount, self.lamp = format_amount(amount_minor), Lamp.of(kind)
        return self._delivered

    async def disconnect(self, detail: str = "simulated port loss") -> None:
        self._health.set(Health.DISCONNECTED, detail)

    async def reconnect(self) -> None:
        self._health.set(Health.CONNECTED)

    def _glass(self, line: str) -> str:
        encoding = self.config.encoding
        return fit_text(line, self.config.width, encoding).decode(encoding)
