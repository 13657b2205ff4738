"""Barcode / QR scanners: keyboard-wedge scanners through evdev, USB-COM scanners through pyserial.

Shape (see ``drivers.base``)::

    async with WedgeScanner("/dev/input/by-id/usb-XYZ-event-kbd") as scanner:
        async for event in scanner.events():
            ...  # ScanEvent / ScanError / HealthChanged

- ``WedgeScanner``: a scanner that types like a keyboard. The device is grabbed (``EVIOCGRAB``) so
  scans do not also land in whatever window has focus; key events are turned into text by
  ``WedgeDecoder`` (US layout built in, other layouts through the optional ``xkbcommon`` package).
  A scan ends at Enter / keypad Enter / Tab, or when no key came for ``key_timeout`` seconds.
  The ``device_id`` is the configured path (use the stable ``/dev/input/by-id/...`` name); after an
  unplug the path is reopened every ``reopen_interval`` seconds, so a replug is picked up.
- ``SerialScanner``: a 2D scanner set to USB-COM (``/dev/ttyACM*``), needed for content a keyboard
  cannot type (Chinese QR codes). A worker thread reads the port; lines end at CR, LF or CRLF and
  are decoded with the configured encoding (``gb18030`` for Chinese content).
- ``SimulatedScanner``: the same face for demos (``await sim.scan("6901234567892")``).

Input that is not a scan (undecodable bytes, a scan over ``max_length``) becomes ``ScanError``;
the stream goes on. evdev and pyserial are imported lazily, so the decoder, the framer and the
simulated scanner work without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from drivers.base import (
    DeviceKind,
    DeviceStatus,
    EventChannel,
    Health,
    HealthChanged,
    ScanError,
    ScanEvent,
)

log = logging.getLogger(__name__)

ScannerEvent = ScanEvent | ScanError | HealthChanged
ScanOutcome = ScanEvent | ScanError

DEFAULT_MAX_LENGTH = 4096
DEFAULT_KEY_TIMEOUT = 0.05

# --------------------------------------------------------------------------------------------
# Linux key codes (input-event-codes.h, a stable kernel ABI), here so the decoder needs no evdev.

EV_KEY = 1
KEY_TAB, KEY_ENTER, KEY_KPENTER = 15, 28, 96
KEY_LEFTSHIFT, KEY_RIGHTSHIFT, KEY_CAPSLOCK = 42, 54, 58
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2  # event values

TERMINATOR_KEYS = frozenset({KEY_ENTER, KEY_KPENTER, KEY_TAB})
SHIFT_KEYS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})

#: Keypad keys: the same in every layout. Num Lock is not tracked on purpose: a scanner set to
#: send keypad codes means these characters, whatever state the host keyboard is in.
KEYPAD: Mapping[int, str] = {
    71: "7", 72: "8", 73: "9", 74: "-", 75: "4", 76: "5", 77: "6", 78: "+",
    79: "1", 80: "2", 81: "3", 82: "0", 83: ".", 55: "*", 98: "/", 117: "=",
}  # fmt: skip


def _us_table() -> dict[int, tuple[str, str]]:
    """US layout of the main block: key code → (plain, shifted). Rows start at their first key."""
    table: dict[int, tuple[str, str]] = {57: (" ", " ")}
    rows = (
        (2, "1234567890-=", "!@#$%^&*()_+"),
        (16, "qwertyuiop[]", "QWERTYUIOP{}"),
        (30, "asdfghjkl;'`", 'ASDFGHJKL:"~'),
        (43, "\\zxcvbnm,./", "|ZXCVBNM<>?"),
    )
    for first, plain, shifted in rows:
        for offset, pair in enumerate(zip(plain, shifted, strict=True)):
            table[first + offset] = pair
    return table


US_KEYS: Mapping[int, tuple[str, str]] = _us_table()


# --------------------------------------------------------------------------------------------
# Layouts: key down/up → text, keeping their own modifier state


class KeyLayout(Protocol):
    def press(self, code: int) -> str:
        """A key went down: the text it types now ("" for modifiers and unknown keys)."""
        ...

    def release(self, code: int) -> None: ...

    def reset(self) -> None:
        """Forget modifier state (the device was replugged)."""
        ...


class UsLayout:
    """US layout: Shift held while any Shift key is down, Caps Lock toggled, letters only."""

    def __init__(self) -> None:
        self._shift: set[int] = set()
        self._caps = False

    def press(self, code: int) -> str:
        if code in SHIFT_KEYS:
            self._shift.add(code)
            return ""
        if code == KEY_CAPSLOCK:
            self._caps = not self._caps
            return ""
        pair = US_KEYS.get(code)
        if pair is None:
            return ""
        plain, shifted = pair
        upper = bool(self._shift)
        if plain.isalpha():
            upper ^= self._caps
        return shifted if upper else plain

    def release(self, code: int) -> None:
        self._shift.discard(code)

    def reset(self) -> None:
        self._shift.clear()
        self._caps = False


class XkbLayout:
    """Any XKB layout ("de", "fr", "de(nodeadkeys)") through the optional ``xkbcommon`` package.

    The XKB state machine handles Shift, Caps Lock and AltGr itself (German scanners type ``@``
    as AltGr+Q). XKB key codes are evdev codes + 8.
    """

    def __init__(self, layout: str, variant: str = "") -> None:
        try:
            self._xkb: Any = importlib.import_module("xkbcommon.xkb")
        except ImportError as exc:
            raise RuntimeError(
                f"keyboard layout {layout!r} needs the xkbcommon package "
                "(pip install xkbcommon; needs libxkbcommon-dev and xkb-data)"
            ) from exc
        try:
            self._keymap: Any = self._xkb.Context().keymap_new_from_names(
                layout=layout, variant=variant or None
            )
        except self._xkb.XKBError as exc:
            raise ValueError(f"unknown keyboard layout {layout!r} variant {variant!r}") from exc
        self._state: Any = self._keymap.state_new()

    def press(self, code: int) -> str:
        keycode = code + 8
        try:
            text = str(self._state.key_get_string(keycode))  # read before the key changes state
            self._state.update_key(keycode, self._xkb.XKB_KEY_DOWN)
        except self._xkb.XKBError:  # a code outside the keymap
            return ""
        return text

    def release(self, code: int) -> None:
        with contextlib.suppress(self._xkb.XKBError):
            self._state.update_key(code + 8, self._xkb.XKB_KEY_UP)

    def reset(self) -> None:
        self._state = self._keymap.state_new()


def make_layout(name: str = "us") -> KeyLayout:
    """``"us"`` (built in) or an XKB layout name with an optional variant: ``"de(nodeadkeys)"``."""
    match = re.fullmatch(r"\s*([\w-]+)\s*(?:\(\s*([\w-]+)\s*\))?\s*", name)
    if match is None:
        raise ValueError(f"not a keyboard layout name: {name!r}")
    layout, variant = match.group(1), match.group(2) or ""
    if layout == "us" and not variant:
        return UsLayout()
    return XkbLayout(layout, variant)


# --------------------------------------------------------------------------------------------
# Wedge decoder: key events → scans. Pure; time is passed in.


class WedgeDecoder:
    """Turns ``(code, value)`` key events of one scanner into ``ScanEvent`` / ``ScanError``.

    ``feed(code, value, at)`` returns what the event completed. ``at`` (seconds, any monotonic
    clock) lets a gap of ``key_timeout`` end the partial scan; ``expire(now)`` does the same when
    no key comes at all, and ``flush()`` ends it unconditionally. Key repeat is ignored: scanners
    never hold a key, and a person leaning on one must not add characters.
    """

    def __init__(
        self,
        device_id: str = "",
        *,
        layout: str | KeyLayout = "us",
        key_timeout: float = DEFAULT_KEY_TIMEOUT,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        if key_timeout <= 0 or max_length <= 0:
            raise ValueError("key_timeout and max_length must be positive")
        self.device_id = device_id
        self.layout = make_layout(layout) if isinstance(layout, str) else layout
        self.key_timeout = key_timeout
        self.max_length = max_length
        self._chars: list[str] = []
        self._discarding = False  # over max_length: swallow keys until the scan ends
        self._last_key: float | None = None

    @property
    def pending(self) -> bool:
        """A scan is under way (characters buffered, or an over-long one being swallowed)."""
        return bool(self._chars) or self._discarding

    @property
    def deadline(self) -> float | None:
        """When the pending scan times out, on the clock of ``at``; None if nothing is pending."""
        if not self.pending or self._last_key is None:
            return None
        return self._last_key + self.key_timeout

    def feed(self, code: int, value: int, at: float | None = None) -> list[ScanOutcome]:
        out: list[ScanOutcome] = []
        if at is not None:
            out += self.expire(at)
            self._last_key = at
        if value == KEY_REPEAT:
            return out
        if value == KEY_UP:
            self.layout.release(code)
            return out
        if code in TERMINATOR_KEYS:
            return out + self.flush()
        text = KEYPAD.get(code) or self.layout.press(code)
        for char in text:
            if char.isprintable():  # XKB gives control characters for Esc, Backspace, …
                out += self._append(char)
        return out

    def expire(self, now: float) -> list[ScanOutcome]:
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            return self.flush()
        return []

    def flush(self) -> list[ScanOutcome]:
        code = "".join(self._chars)
        self._chars.clear()
        self._discarding = False
        return [ScanEvent(self.device_id, code)] if code else []

    def reset(self) -> None:
        self._chars.clear()
        self._discarding = False
        self._last_key = None
        self.layout.reset()

    def _append(self, char: str) -> list[ScanOutcome]:
        if self._discarding:
            return []
        if len(self._chars) >= self.max_length:
            self._chars.clear()
            self._discarding = True
            reason = f"scan longer than {self.max_length} characters: discarded"
            return [ScanError(self.device_id, reason)]
        self._chars.append(char)
        return []


# --------------------------------------------------------------------------------------------
# Line framer for serial scanners: bytes → scans. Pure.

_LINE_END = re.compile(rb"[\r\n]")


class LineFramer:
    """Splits a byte stream at CR, LF or CRLF and decodes each line with ``encoding``.

    Empty lines (the LF of a CRLF) are dropped. A line over ``max_length`` bytes, or one that is
    not valid in ``encoding``, gives a ``ScanError`` instead of a scan.
    """

    def __init__(
        self,
        device_id: str = "",
        *,
        encoding: str = "utf-8",
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        "".encode(encoding)  # unknown encoding: LookupError now, not at the first scan
        if max_length <= 0:
            raise ValueError("max_length must be positive")
        self.device_id = device_id
        self.encoding = encoding
        self.max_length = max_length
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[ScanOutcome]:
        *complete, rest = _LINE_END.split(data)
        out: list[ScanOutcome] = []
        for part in complete:
            out += self._add(part)
            out += self._end_line()
        return out + self._add(rest)

    def reset(self) -> None:
        self._buffer.clear()
        self._discarding = False

    def _add(self, part: bytes) -> list[ScanOutcome]:
        if self._discarding or not part:
            return []
        if len(self._buffer) + len(part) > self.max_length:
            self._buffer.clear()
            self._discarding = True
            reason = f"scan longer than {self.max_length} bytes: discarded"
            return [ScanError(self.device_id, reason)]
        self._buffer += part
        return []

    def _end_line(self) -> list[ScanOutcome]:
        line = bytes(self._buffer)
        self.reset()
        if not line:
            return []
        try:
            return [ScanEvent(self.device_id, line.decode(self.encoding))]
        except UnicodeDecodeError as exc:
            shown = line[:32].hex(" ") + (" …" if len(line) > 32 else "")
            reason = f"scan is not valid {self.encoding} ({exc.reason}): {shown}"
            return [ScanError(self.device_id, reason)]


# --------------------------------------------------------------------------------------------
# The common face of real and simulated scanners


class ScannerSource(Protocol):
    """What the edge needs from a scanner (wedge, serial or simulated)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def events(self) -> AsyncIterator[ScannerEvent]: ...

    @property
    def status(self) -> Mapping[str, DeviceStatus]: ...



class _ScannerBase:
    """Channel, health bookkeeping and the ``async with`` face shared by the scanner classes."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._channel: EventChannel[ScannerEvent] | None = None
        self._health: Health | None = None

    async def __aenter__(self) -> Self:
        if self._channel is not None:
            raise RuntimeError(f"scanner {self.device_id} already open")
        self._channel = EventChannel[ScannerEvent]()
        self._health = None
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        channel = self._channel
        if channel is None:
            return
        await self._stop()
        self._set_health(Health.DISCONNECTED, "closed")
        channel.close()
        self._channel = None

    async def _start(self) -> None:
        pass

    async def _stop(self) -> None:
        pass

    def events(self) -> AsyncIterator[ScannerEvent]:
        """The scanner's events (one consumer); the stream ends when the scanner is closed."""
        return self._open_channel().stream()

    @property
    def status(self) -> Mapping[str, DeviceStatus]:
        return dict(self._channel.statuses) if self._channel else {}

    def _open_channel(self) -> EventChannel[ScannerEvent]:
        if self._channel is None:
            raise RuntimeError("open the scanner with 'async with' first")
        return self._channel

    def _emit(self, events: Iterable[ScannerEvent]) -> None:
        channel = self._channel
        for event in events:
            if channel is not None:
                channel.put(event)

    def _set_health(self, health: Health, detail: str = "") -> None:
        """Report ``health`` when it differs from the last one (retries do not repeat it)."""
        if health is self._health:
            return
        self._health = health
        # One line per change, the trouble as a warning: retries stay quiet until it changes.
        level = logging.INFO if health is Health.CONNECTED else logging.WARNING
        log.log(level, "scanner %s: %s %s", self.device_id, health.value, detail)
        status = DeviceStatus(self.device_id, DeviceKind.SCANNER, health, detail)
        self._emit([HealthChanged(status)])


# --------------------------------------------------------------------------------------------
# Keyboard-wedge scanners through evdev


class _KeyEvent(Protocol):
    type: int
    code: int
    value: int


class _DeviceInfo(Protocol):
    @property
    def vendor(self) -> int: ...


class EvdevDevice(Protocol):
    """The part of ``evdev.InputDevice`` the scanner uses (tests pass pipe-backed devices)."""

    @property
    def name(self) -> str: ...

    @property
    def info(self) -> _DeviceInfo: ...

    def fileno(self) -> int: ...

    def read(self) -> Iterable[_KeyEvent]: ...

    def grab(self) -> None: ...

    def ungrab(self) -> None: ...

    def close(self) -> None: ...


EvdevOpener = Callable[[str], EvdevDevice]


def open_evdev(path: str) -> EvdevDevice:
    """The default opener: ``evdev.InputDevice(path)`` (evdev comes with the hardware extra)."""
    try:
        import evdev
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("evdev is not installed: pip install 'membergate[hardware]'") from exc
    return evdev.InputDevice(path)


def _open_failure(path: str, exc: OSError) -> tuple[Health, str]:
    if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return Health.DISCONNECTED, f"{path} not present"
    if exc.errno == errno.EBUSY:
        return Health.ERROR, (
            f"{path} is grabbed by another program (EVIOCGRAB: EBUSY); "
            "stop the other reader of this scanner"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Health.ERROR, (
            f"permission denied on {path}: the service user needs read access "
            "(the input group or a udev rule)"
        )
    return Health.ERROR, f"cannot open {path}: {exc}"


class WedgeScanner(_ScannerBase):
    """One keyboard-wedge scanner at an evdev path; ``device_id`` is that path.

    ``opener`` opens the path (default ``evdev.InputDevice``); ``device``, when given, is used
    instead of opening for the first connection. ``grab=False`` leaves the device shared with the
    desktop (scans then also type into the focused window).
    """

    def __init__(
        self,
        path: str,
        *,
        layout: str = "us",
        key_timeout: float = DEFAULT_KEY_TIMEOUT,
        max_length: int = DEFAULT_MAX_LENGTH,
        reopen_interval: float = 1.0,
        grab: bool = True,
        opener: EvdevOpener | None = None,
        device: EvdevDevice | None = None,
    ) -> None:
        if reopen_interval <= 0:
            raise ValueError("reopen_interval must be positive")
        super().__init__(path)
        self.path = path
        self.reopen_interval = reopen_interval
        self.grab = grab
        self._decoder = WedgeDecoder(
            path, layout=layout, key_timeout=key_timeout, max_length=max_length
        )
        self._opener = opener or open_evdev
        self._given_device = device
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"wedge-scanner {self.path}")

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            device = await self._connect()
            try:
                lost = await self._read(device)
            finally:
                self._release(device)
            if lost.errno == errno.ENODEV:
                self._set_health(Health.DISCONNECTED, f"{self.path} unplugged")
            else:
                self._set_health(Health.ERROR, f"read from {self.path} failed: {lost}")
            if self._decoder.pending:
                log.warning("scanner %s: partial scan dropped at disconnect", self.path)
            self._decoder.reset()
            await asyncio.sleep(self.reopen_interval)

    async def _connect(self) -> EvdevDevice:
        """Open and grab the path, retrying every ``reopen_interval`` until it works."""
        while True:
            try:
                device = self._open()
            except OSError as exc:
                self._set_health(*_open_failure(self.path, exc))
            except Exception as exc:  # evdev missing, or a broken opener: report, keep trying
                # Said once (as the health change), not a traceback every reopen_interval.
                self._set_health(Health.ERROR, f"cannot open {self.path}: {exc}")
            else:
                self._set_health(Health.CONNECTED, device.name)
                return device
            await asyncio.sleep(self.reopen_interval)

    def _open(self) -> EvdevDevice:
        # Opening an evdev node is a few non-blocking syscalls, fine on the loop.
        device, self._given_device = self._given_device, None
        if device is None:
            device = self._opener(self.path)
        if self.grab:
            try:
                device.grab()
            except OSError:
                with contextlib.suppress(OSError):
                    device.close()
                raise
        return device

    async def _read(self, device: EvdevDevice) -> OSError:
        """Decode events until the device fails; returns the error that ended reading.

        A reader callback on the fd rather than ``async_read_loop()``: that iterator hangs at
        end-of-file (it tries to put StopIteration into a future), and here the reader is
        removed however the task ends.
        """
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[OSError] = loop.create_future()
        fd = device.fileno()

        def on_readable() -> None:
            try:
                batch = list(device.read())  # at most 64 events per read
                if not batch:  # end of file: only a pipe standing in does this, so: gone
                    raise OSError(errno.ENODEV, "end of input")
            except BlockingIOError:
                return
            except OSError as exc:
                loop.remove_reader(fd)
                if not lost.done():
                    lost.set_result(exc)
                return
            now = loop.time()
            for event in batch:
                if event.type == EV_KEY:
                    self._emit(self._decoder.feed(event.code, event.value, now))
            self._arm_timer(loop)

        loop.add_reader(fd, on_readable)
        try:
            return await lost
        finally:
            loop.remove_reader(fd)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)start the inter-key timeout: a scanner without terminator still ends its scan."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._decoder.deadline
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._on_key_timeout)

    def _on_key_timeout(self) -> None:
        # No key since the timer was armed (each batch re-arms it), so the scan is over; flush()
        # rather than expire() because the loop may fire a timer up to its clock resolution early.
        self._timer = None
        self._emit(self._decoder.flush())

    def _release(self, device: EvdevDevice) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.grab:
            with contextlib.suppress(OSError):  # already gone after an unplug
                device.ungrab()
        with contextlib.suppress(OSError):
            device.close()


def discover_wedge_scanners(
    by_id_dir: str | Path = "/dev/input/by-id",
    names: Sequence[str] = (),
    vendors: Sequence[int] = (),
    *,
    opener: EvdevOpener | None = None,
) -> list[str]:
    """Keyboard devices under ``by_id_dir`` (entries ending ``-event-kbd``) that may be scanners.

    Without filters every such entry is listed. With filters an entry is listed when a ``names``
    substring (case-insensitive) is in its by-id name or its evdev device name, or its USB vendor
    id is in ``vendors``; devices that cannot be opened are judged by their by-id name alone.
    A missing directory gives ``[]``.
    """
    try:
        entries = sorted(p for p in Path(by_id_dir).iterdir() if p.name.endswith("-event-kbd"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if not names and not vendors:
        return [str(p) for p in entries]
    needles = [n.lower() for n in names if n]
    open_device = opener or open_evdev
    found: list[str] = []
    for entry in entries:
        if any(n in entry.name.lower() for n in needles):
            found.append(str(entry))
            continue
        try:
            device = open_device(str(entry))
        except (OSError, RuntimeError):
            continue
        try:
            name, vendor = device.name.lower(), device.info.vendor
        finally:
            with contextlib.suppress(OSError):
                device.close()
        if any(n in name for n in needles) or vendor in vendors:
            found.append(str(entry))
    return found


# --------------------------------------------------------------------------------------------
# USB-COM scanners through pyserial


def _serial() -> Any:
    try:
        import serial
    except ImportError as exc:  # pragma: no cover - pyserial is a core dependency
        raise RuntimeError("pyserial is not installed: pip install pyserial") from exc
    return serial


class SerialScanner(_ScannerBase):
    """A scanner on a serial port (``/dev/ttyACM0``, ``/dev/serial/by-id/...``).

    A worker thread owns the port: it opens it (retrying every ``reopen_interval``), reads, frames
    lines and hands finished events to the loop. ``serial_factory(port)`` replaces
    ``serial.Serial`` (tests, or ports that need extra settings).
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        encoding: str = "utf-8",
        max_length: int = DEFAULT_MAX_LENGTH,
        reopen_interval: float = 1.0,
        read_timeout: float = 0.2,
        serial_factory: Callable[[str], Any] | None = None,
    ) -> None:
        if reopen_interval <= 0 or read_timeout <= 0:
            raise ValueError("reopen_interval and read_timeout must be positive")
        super().__init__(port)
        self.port = port
        self.baudrate = baudrate
        self.reopen_interval = reopen_interval
        self.read_timeout = read_timeout
        self._framer = LineFramer(port, encoding=encoding, max_length=max_length)
        self._serial_factory = serial_factory
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: Any = None  # the open port, for cancel_read() from the loop thread

    async def _start(self) -> None:
        serial = _serial()
        loop = asyncio.get_running_loop()

        def emit(event: ScannerEvent) -> None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._deliver, event)

        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._worker,
            args=(serial, emit),
            name=f"serial-scanner {self.port}",
            daemon=True,
        )
        self._thread.start()

    async def _stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        port = self._port
        if port is not None:
            with contextlib.suppress(Exception):  # wakes a read waiting for data
                port.cancel_read()
        await asyncio.to_thread(thread.join, self.read_timeout + self.reopen_interval + 5)
        if thread.is_alive():
            log.warning("serial scanner %s: worker thread did not stop in time", self.port)
        # Let events the thread queued just before stopping reach the channel first.
        await asyncio.sleep(0)

    def _deliver(self, event: ScannerEvent) -> None:
        """Loop side: health through the dedupe, everything else straight to the channel."""
        if isinstance(event, HealthChanged):
            self._set_health(event.status.health, event.status.detail)
        else:
            self._emit([event])

    # -- worker thread

    def _worker(self, serial: Any, emit: Callable[[ScannerEvent], None]) -> None:
        def health(value: Health, detail: str) -> None:
            emit(HealthChanged(DeviceStatus(self.port, DeviceKind.SCANNER, value, detail)))

        while not self._stopping.is_set():
            try:
                # exclusive: a second program on the port would steal half of each scan
                factory = self._serial_factory or (
                    lambda p: serial.Serial(
                        p, self.baudrate, timeout=self.read_timeout, exclusive=True
                    )
                )
                port = factory(self.port)
            except (serial.SerialException, OSError) as exc:
                gone = getattr(exc, "errno", None) in (errno.ENOENT, errno.ENODEV, errno.ENXIO)
                if gone:
                    health(Health.DISCONNECTED, f"{self.port} not present")
                else:
                    health(Health.ERROR, f"cannot open {self.port}: {exc}")
                self._stopping.wait(self.reopen_interval)
                continue
            self._port = port
            health(Health.CONNECTED, self.port)
            try:
                self._read_until_lost(port, emit)
            except (serial.SerialException, OSError) as exc:
                health(Health.DISCONNECTED, f"{self.port} lost: {exc}")
                self._framer.reset()
                self._stopping.wait(self.reopen_interval)
            except Exception as exc:  # never let the thread die
                log.exception("serial scanner %s: unexpected error", self.port)
                health(Health.ERROR, f"unexpected error: {exc!r}")
                self._stopping.wait(self.reopen_interval)
            finally:
                self._port = None
                with contextlib.suppress(Exception):
                    port.close()

    def _read_until_lost(self, port: Any, emit: Callable[[ScannerEvent], None]) -> None:
        while not self._stopping.is_set():
            data = bytes(port.read(max(1, port.in_waiting)))
            for outcome in self._framer.feed(data):
                emit(outcome)


# --------------------------------------------------------------------------------------------
# Simulated scanner for demos and tests of the edge


class SimulatedScanner(_ScannerBase):
    """A scanner without hardware, with the face of the real ones.

    ``await sim.scan(code)`` delivers a scan, ``await sim.fail(reason)`` a ``ScanError``.
    """

    def __init__(self, device_id: str = "simulated-scanner") -> None:
        super().__init__(device_id)

    async def _start(self) -> None:
        self._set_health(Health.CONNECTED)

    async def scan(self, code: str) -> ScanEvent:
        event = ScanEvent(self.device_id, code)
        self._open_channel().put(event)
        return event

    async def fail(self, reason: str) -> ScanError:
        event = ScanError(self.device_id, reason)
        self._open_channel().put(event)
        return event
