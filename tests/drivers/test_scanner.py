"""Scanner driver: the keymap decoder and line framer, then the real evdev and pyserial read paths.

There is no /dev/uinput here (see shared NOTES), so a keyboard-wedge scanner is an
``evdev.InputDevice`` reading packed ``struct input_event`` records from a pipe: evdev's own
``read()`` decodes them. Serial scanners are a pseudo-terminal pair that pyserial opens by name.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import termios
import tty
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import evdev
import pytest
from evdev import ecodes

from drivers.base import DeviceKind, Health, HealthChanged, ScanError, ScanEvent
from drivers.scanner import (
    KEYPAD,
    US_KEYS,
    EvdevDevice,
    LineFramer,
    ScannerEvent,
    ScanOutcome,
    SerialScanner,
    SimulatedScanner,
    WedgeDecoder,
    WedgeScanner,
    XkbLayout,
    discover_wedge_scanners,
    make_layout,
)

WAIT = 5.0  # seconds any single expected event may take
EAN = "6901234567892"

# --------------------------------------------------------------------------------------------
# Typing text as a US keyboard would, built from evdev's names (independent of the driver's table)

_PUNCT = {
    "-": "MINUS", "=": "EQUAL", "[": "LEFTBRACE", "]": "RIGHTBRACE", "\\": "BACKSLASH",
    ";": "SEMICOLON", "'": "APOSTROPHE", "`": "GRAVE", ",": "COMMA", ".": "DOT", "/": "SLASH",
    " ": "SPACE",
}  # fmt: skip
_SHIFTED = {
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
    ")": "0", "_": "MINUS", "+": "EQUAL", "{": "LEFTBRACE", "}": "RIGHTBRACE", "|": "BACKSLASH",
    ":": "SEMICOLON", '"': "APOSTROPHE", "~": "GRAVE", "<": "COMMA", ">": "DOT", "?": "SLASH",
}  # fmt: skip

Key = tuple[int, int]  # (code, value)


def key(name: str) -> int:
    return int(ecodes.ecodes[f"KEY_{name}"])


def tap(code: int) -> list[Key]:
    return [(code, 1), (code, 0)]


def us_keys(text: str, shift: str = "LEFTSHIFT") -> list[Key]:
    """Key events a US-layout scanner sends for ``text`` (Shift pressed around shifted chars)."""
    out: list[Key] = []
    for char in text:
        if char.isascii() and char.isalpha():
            name, shifted = char.upper(), char.isupper()
        elif char.isdigit():
            name, shifted = char, False
        elif char in _PUNCT:
            name, shifted = _PUNCT[char], False
        else:
            name, shifted = _SHIFTED[char], True
        if shifted:
            out.append((key(shift), 1))
        out += tap(key(name))
        if shifted:
            out.append((key(shift), 0))
    return out


def decode(keys: Sequence[Key], decoder: WedgeDecoder | None = None) -> list[ScanOutcome]:
    decoder = decoder or WedgeDecoder("test")
    out: list[ScanOutcome] = []
    for code, value in keys:
        out += decoder.feed(code, value)
    return out


def codes(outcomes: Sequence[ScanOutcome | ScannerEvent]) -> list[str]:
    return [o.code for o in outcomes if isinstance(o, ScanEvent)]


ENTER = tap(key("ENTER"))

# --------------------------------------------------------------------------------------------
# Decoder


def test_lowercase_and_uppercase_with_either_shift() -> None:
    assert codes(decode(us_keys("abcXYZ") + ENTER)) == ["abcXYZ"]
    assert codes(decode(us_keys("MixedCase", shift="RIGHTSHIFT") + ENTER)) == ["MixedCase"]


def test_shift_is_held_until_released_not_per_key() -> None:
    shift = key("LEFTSHIFT")
    keys = [(shift, 1), *tap(key("A")), *tap(key("B")), (shift, 0), *tap(key("C")), *ENTER]
    assert codes(decode(keys)) == ["ABc"]


def test_both_shifts_down_then_one_released_keeps_shift() -> None:
    left, right = key("LEFTSHIFT"), key("RIGHTSHIFT")
    keys = [(left, 1), (right, 1), (left, 0), *tap(key("A")), (right, 0), *tap(key("A")), *ENTER]
    assert codes(decode(keys)) == ["Aa"]


@pytest.mark.parametrize(
    "text",
    [
        "!@#$%^&*()_+",
        "1234567890-=",
        "http://example.com/a?b=c&d=e_f",
        "MGM:123;x'y\"z",
        "[a]{b}\\c|d`e~f,g<h.i>j k",
    ],
)
def test_digits_and_punctuation_round_trip(text: str) -> None:
    assert codes(decode(us_keys(text) + ENTER)) == [text]


def test_shifted_digit_row_and_colon_slash() -> None:
    shift = key("LEFTSHIFT")
    keys = [(shift, 1), *tap(key("1")), *tap(key("2")), *tap(key("SEMICOLON")), (shift, 0)]
    keys += tap(key("SLASH")) + ENTER
    assert codes(decode(keys)) == ["!@:/"]


def test_caps_lock_toggles_letters_only() -> None:
    caps = tap(key("CAPSLOCK"))
    keys = caps + us_keys("ab1-") + caps + us_keys("c") + ENTER
    assert codes(decode(keys)) == ["AB1-c"]


def test_caps_lock_with_shift_gives_lowercase_letters_but_shifted_digits() -> None:
    keys = tap(key("CAPSLOCK")) + us_keys("AB!") + ENTER
    assert codes(decode(keys)) == ["ab!"]


def test_keypad_digits_and_symbols() -> None:
    names = ["KP1", "KP2", "KP3", "KPDOT", "KP0", "KPMINUS", "KP9", "KPPLUS", "KPSLASH", "KP4"]
    keys = [k for name in names for k in tap(key(name))]
    # Shift and Caps Lock do not change the keypad.
    keys = [(key("LEFTSHIFT"), 1), *tap(key("CAPSLOCK")), *keys, *tap(key("KPENTER"))]
    assert codes(decode(keys)) == ["123.0-9+/4"]


@pytest.mark.parametrize("terminator", ["ENTER", "KPENTER", "TAB"])
def test_each_terminator_ends_a_scan(terminator: str) -> None:
    end = tap(key(terminator))
    assert codes(decode(us_keys("abc") + end + us_keys("def") + end)) == ["abc", "def"]


def test_empty_scans_are_dropped() -> None:
    assert decode(ENTER + ENTER + tap(key("TAB"))) == []
    assert codes(decode(ENTER + us_keys("x") + ENTER + ENTER)) == ["x"]


def test_key_repeat_is_ignored() -> None:
    a, shift = key("A"), key("LEFTSHIFT")
    keys = [(a, 1), (a, 2), (a, 2), (a, 0), (shift, 1), (shift, 2), (a, 1), (a, 2), (a, 0)]
    assert codes(decode([*keys, (shift, 0), *ENTER])) == ["aA"]


def test_modifier_and_unknown_keys_type_nothing() -> None:
    keys = tap(key("LEFTCTRL")) + tap(key("F5")) + tap(key("ESC")) + us_keys("ok") + ENTER
    assert codes(decode(keys)) == ["ok"]


def test_inter_key_gap_ends_the_partial_scan() -> None:
    decoder = WedgeDecoder("kbd", key_timeout=0.05)
    out: list[ScanOutcome] = []
    for at, (code, value) in zip([0.0, 0.001, 0.01, 0.011], us_keys("ab"), strict=True):
        out += decoder.feed(code, value, at)
    assert out == [] and decoder.pending
    assert decoder.deadline == pytest.approx(0.061)
    assert decoder.expire(0.03) == []
    # The next key after the gap first flushes "ab", then starts a new scan.
    out = decoder.feed(key("C"), 1, 0.5)
    assert codes(out) == ["ab"] and out[0].device_id == "kbd"
    decoder.feed(key("C"), 0, 0.501)
    assert codes(decoder.expire(0.6)) == ["c"]
    assert not decoder.pending and decoder.deadline is None
    assert decoder.expire(10.0) == []


def test_flush_ends_the_partial_scan() -> None:
    decoder = WedgeDecoder()
    decode(us_keys("12345"), decoder)
    assert codes(decoder.flush()) == ["12345"]
    assert decoder.flush() == []


def test_over_long_scan_is_discarded_with_one_error() -> None:
    decoder = WedgeDecoder("kbd", max_length=5)
    out = decode(us_keys("abcdef") + ENTER, decoder)  # one over the limit
    assert len(out) == 1 and isinstance(out[0], ScanError)
    assert out[0].device_id == "kbd" and "longer than 5" in out[0].reason
    # Exactly max_length is fine, and the next scan is clean.
    assert codes(decode(us_keys("abcde") + ENTER + us_keys("ok") + ENTER, decoder)) == [
        "abcde",
        "ok",
    ]


def test_over_long_scan_also_ends_at_timeout() -> None:
    decoder = WedgeDecoder(max_length=3, key_timeout=0.05)
    out: list[ScanOutcome] = []
    for code, value in us_keys("abcdef"):
        out += decoder.feed(code, value, 0.0)
    assert [type(o) for o in out] == [ScanError]
    assert decoder.expire(1.0) == []
    assert not decoder.pending
    assert codes(decode(us_keys("xy") + ENTER, decoder)) == ["xy"]


def test_reset_forgets_partial_scan_and_modifiers() -> None:
    decoder = WedgeDecoder()
    decode([(key("LEFTSHIFT"), 1), *tap(key("CAPSLOCK")), *tap(key("A"))], decoder)
    decoder.reset()
    assert not decoder.pending
    assert codes(decode(us_keys("a") + ENTER, decoder)) == ["a"]


def test_decoder_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        WedgeDecoder(key_timeout=0)
    with pytest.raises(ValueError):
        WedgeDecoder(max_length=0)


# --------------------------------------------------------------------------------------------
# Other layouts through xkbcommon


def test_us_table_agrees_with_xkb_us() -> None:
    xkb = XkbLayout("us")
    shift = key("LEFTSHIFT")
    for code, (plain, shifted) in US_KEYS.items():
        assert xkb.press(code) == plain, code
        xkb.release(code)
        xkb.press(shift)
        assert xkb.press(code) == shifted, code
        xkb.release(code)
        xkb.release(shift)


def test_keypad_table_matches_evdev_names() -> None:
    assert KEYPAD[key("KP0")] == "0" and KEYPAD[key("KP9")] == "9"
    assert KEYPAD[key("KPDOT")] == "." and KEYPAD[key("KPSLASH")] == "/"


def test_german_layout_swaps_y_and_z() -> None:
    decoder = WedgeDecoder(layout="de")
    # The keys labelled Y and Z on a US board type z and y on a German one.
    keys = tap(key("Y")) + tap(key("Z")) + [(key("LEFTSHIFT"), 1), *tap(key("Y")), *tap(key("2"))]
    keys += [(key("LEFTSHIFT"), 0), *ENTER]
    assert codes(decode(keys, decoder)) == ['zyZ"']


def test_german_layout_altgr_and_caps_lock() -> None:
    decoder = WedgeDecoder(layout="de")
    altgr = key("RIGHTALT")
    keys = [(altgr, 1), *tap(key("Q")), (altgr, 0), *tap(key("CAPSLOCK")), *tap(key("Y"))]
    keys += tap(key("1")) + ENTER
    assert codes(decode(keys, decoder)) == ["@Z1"]


def test_french_layout_is_azerty() -> None:
    keys = tap(key("Q")) + tap(key("A")) + tap(key("1")) + ENTER
    assert codes(decode(keys, WedgeDecoder(layout="fr"))) == ["aq&"]


def test_layout_names() -> None:
    assert type(make_layout("us")).__name__ == "UsLayout"
    assert isinstance(make_layout("de(nodeadkeys)"), XkbLayout)
    with pytest.raises(ValueError):
        make_layout("no-such-layout")
    with pytest.raises(ValueError):
        make_layout("de; rm -rf")


# --------------------------------------------------------------------------------------------
# Serial line framer


def scan_codes(framer: LineFramer, *chunks: bytes) -> list[ScanOutcome]:
    out: list[ScanOutcome] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_framer_terminators(end: bytes) -> None:
    out = scan_codes(LineFramer("tty"), b"MGM:1" + end + b"MGM:2" + end)
    assert codes(out) == ["MGM:1", "MGM:2"] and out[0].device_id == "tty"


def test_framer_joins_chunks_and_drops_empty_lines() -> None:
    out = scan_codes(LineFramer(), b"MGM:12", b"34\r", b"\n\r\n\n", b"56", b"\r\n")
    assert codes(out) == ["MGM:1234", "56"]


def test_framer_decodes_gb18030() -> None:
    text = "会员:张三 ¥100 MGM:123"
    out = scan_codes(LineFramer(encoding="gb18030"), text.encode("gb18030") + b"\r\n")
    assert codes(out) == [text]


def test_framer_reports_undecodable_bytes_and_goes_on() -> None:
    out = scan_codes(LineFramer("tty"), b"ok1\r\n\xff\xfeabc\r\nok2\n")
    assert codes(out) == ["ok1", "ok2"]
    errors = [o for o in out if isinstance(o, ScanError)]
    assert len(errors) == 1 and "utf-8" in errors[0].reason and "ff fe" in errors[0].reason


def test_framer_discards_over_long_lines() -> None:
    framer = LineFramer(max_length=8)
    out = scan_codes(framer, b"12345", b"67890", b"abc\r\n", b"12345678\r\n")
    assert [type(o) for o in out] == [ScanError, ScanEvent]
    assert codes(out) == ["12345678"]


def test_framer_rejects_unknown_encoding() -> None:
    with pytest.raises(LookupError):
        LineFramer(encoding="no-such-codec")


# --------------------------------------------------------------------------------------------
# Reading events


class Events:
    """Reads a scanner's event stream and waits for the event a test expects."""

    def __init__(self, stream: AsyncIterator[ScannerEvent]) -> None:
        self._stream = stream
        self.seen: list[ScannerEvent] = []

    async def expect(self, match: Callable[[ScannerEvent], bool], what: str) -> ScannerEvent:
        async def find() -> ScannerEvent:
            async for event in self._stream:
                self.seen.append(event)
                if match(event):
                    return event
            raise AssertionError(f"stream ended before {what}; seen {self.seen}")

        try:
            return await asyncio.wait_for(find(), WAIT)
        except TimeoutError:
            pytest.fail(f"no {what} within {WAIT}s; seen {self.seen}")

    async def scan(self, code: str) -> ScanEvent:
        event = await self.expect(lambda e: isinstance(e, ScanEvent) and e.code == code, code)
        assert isinstance(event, ScanEvent)
        return event

    async def error(self) -> ScanError:
        event = await self.expect(lambda e: isinstance(e, ScanError), "scan error")
        assert isinstance(event, ScanError)
        return event

    async def health(self, health: Health) -> HealthChanged:
        event = await self.expect(
            lambda e: isinstance(e, HealthChanged) and e.status.health is health, health.value
        )
        assert isinstance(event, HealthChanged)
        return event


# --------------------------------------------------------------------------------------------
# Wedge scanners through evdev's real read path, fed by a pipe


class PipeInputDevice(evdev.InputDevice):  # type: ignore[type-arg]
    """A real ``evdev.InputDevice`` whose fd is the read end of a pipe.

    ``InputDevice.__init__`` opens a /dev path and asks it ioctls a pipe cannot answer, so the
    attributes reading needs are set here; ``read()`` stays evdev's own. ``grab()`` (an ioctl)
    is recorded instead, or fails with ``grab_errno``.
    """

    def __init__(self, name: str = "Test Scanner", vendor: int = 0x05E0, grab_errno: int = 0):
        read_end, self.writer = os.pipe()
        os.set_blocking(read_end, False)
        self.fd = read_end
        self.path = f"pipe:{read_end}"
        self.name = name
        self.phys = self.uniq = ""
        self.info = evdev.DeviceInfo(0x03, vendor, 0x1200, 0x0111)
        self.version = 0x010001
        self._rawcapabilities = {}
        self.ff_effects_count = 0
        self.grab_errno = grab_errno
        self.grabbed = False
        self.unplugged = False

    def grab(self) -> None:
        if self.grab_errno:
            raise OSError(self.grab_errno, os.strerror(self.grab_errno))
        self.grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def read(self) -> Iterator[evdev.InputEvent]:
        if self.unplugged:  # what the kernel answers once the USB device is gone
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return super().read()

    def send(self, keys: Sequence[Key]) -> None:
        """Write the events a keyboard sends for ``keys``: MSC_SCAN, EV_KEY, SYN_REPORT."""
        records = []
        for code, value in keys:
            for ev_type, ev_code, ev_value in (
                (ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + code),
                (ecodes.EV_KEY, code, value),
                (ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
            ):
                records.append(struct.pack("llHHi", 1700000000, 0, ev_type, ev_code, ev_value))
        os.write(self.writer, b"".join(records))

    async def drained(self) -> None:
        """Wait until the reader has taken everything written (FIONREAD of the pipe is 0)."""
        for _ in range(int(WAIT / 0.01)):
            if struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0" * 4))[0] == 0:
                return
            await asyncio.sleep(0.01)
        pytest.fail("scanner did not read the pipe")

    def unplug(self) -> None:
        """Make the next read fail with ENODEV, as after a USB unplug."""
        self.unplugged = True
        os.write(self.writer, b"\0")  # wake the reader

    def close_writer(self) -> None:
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1

    def close(self) -> None:
        super().close()
        self.close_writer()

    @property
    def closed(self) -> bool:
        return self.fd < 0


class Plug:
    """An opener standing in for a by-id path: devices are 'plugged' into it one after another."""

    def __init__(self) -> None:
        self.devices: list[PipeInputDevice] = []
        self.opened: list[PipeInputDevice] = []

    def plug(self, device: PipeInputDevice) -> PipeInputDevice:
        self.devices.append(device)
        return device

    def __call__(self, path: str) -> EvdevDevice:
        if not self.devices:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        device = self.devices.pop(0)
        self.opened.append(device)
        return device

    def close_all(self) -> None:
        for device in self.devices + self.opened:
            device.close()


@pytest.fixture
def plug() -> Iterator[Plug]:
    plug = Plug()
    yield plug
    plug.close_all()


BY_ID = "/dev/input/by-id/usb-XYZ_Scanner-event-kbd"


async def test_wedge_scanner_reads_a_scan_through_evdev(plug: Plug) -> None:
    device = plug.plug(PipeInputDevice())
    async with WedgeScanner(BY_ID, opener=plug) as scanner:
        events = Events(scanner.events())
        connected = await events.health(Health.CONNECTED)
        assert connected.status.device_id == BY_ID and connected.status.kind is DeviceKind.SCANNER
        assert connected.status.detail == "Test Scanner"
        assert device.grabbed
        # 14 keys x 2 x 3 events = 84 events: more than one read() of at most 64.
        device.send(us_keys(EAN) + ENTER)
        scan = await events.scan(EAN)
        assert scan.device_id == BY_ID
        assert scanner.status[BY_ID].health is Health.CONNECTED
    assert device.closed and not device.grabbed
    assert not [e for e in events.seen if isinstance(e, ScanError)]


async def test_wedge_scanner_uses_an_injected_open_device() -> None:
    device = PipeInputDevice()
    try:
        async with WedgeScanner(BY_ID, device=device, grab=False) as scanner:
            events = Events(scanner.events())
            device.send(us_keys("Code-128/ABC") + tap(key("TAB")))
            await events.scan("Code-128/ABC")
            assert not device.grabbed
    finally:
        device.close()


async def test_wedge_scanner_flushes_after_the_inter_key_timeout(plug: Plug) -> None:
    device = plug.plug(PipeInputDevice())
    async with WedgeScanner(BY_ID, opener=plug, key_timeout=0.05) as scanner:
        events = Events(scanner.events())
        device.send(us_keys("4006381333931"))  # no terminator
        await events.scan("4006381333931")
        device.send(us_keys("next") + ENTER)
        await events.scan("next")


async def test_wedge_scanner_reports_over_long_scans(plug: Plug) -> None:
    device = plug.plug(PipeInputDevice())
    async with WedgeScanner(BY_ID, opener=plug, max_length=8) as scanner:
        events = Events(scanner.events())
        device.send(us_keys("0123456789abc") + ENTER + us_keys("short") + ENTER)
        error = await events.error()
        assert error.device_id == BY_ID and "longer than 8" in error.reason
        await events.scan("short")
    assert codes(events.seen) == ["short"]


async def test_two_wedge_scanners_interleaved() -> None:
    first, second = PipeInputDevice("Scanner A"), PipeInputDevice("Scanner B")
    path_a, path_b = "/dev/input/by-id/usb-A-event-kbd", "/dev/input/by-id/usb-B-event-kbd"
    code_a, code_b = "AAA-1111-aaa", "bbb:2222/BBB"
    try:
        async with (
            WedgeScanner(path_a, device=first) as scanner_a,
            WedgeScanner(path_b, device=second) as scanner_b,
        ):
            events_a, events_b = Events(scanner_a.events()), Events(scanner_b.events())
            await events_a.health(Health.CONNECTED)
            await events_b.health(Health.CONNECTED)
            keys_a, keys_b = us_keys(code_a) + ENTER, us_keys(code_b) + ENTER
            for index in range(0, max(len(keys_a), len(keys_b)), 3):
                first.send(keys_a[index : index + 3])
                second.send(keys_b[index : index + 3])
                await asyncio.sleep(0)
            scan_a, scan_b = await events_a.scan(code_a), await events_b.scan(code_b)
            assert (scan_a.device_id, scan_b.device_id) == (path_a, path_b)
    finally:
        first.close()
        second.close()
    assert codes(events_a.seen) == [code_a] and codes(events_b.seen) == [code_b]


async def test_wedge_scanner_unplug_enodev_then_replug(plug: Plug) -> None:
    device = plug.plug(PipeInputDevice())
    # A long key timeout keeps "half" pending until the unplug.
    async with WedgeScanner(BY_ID, opener=plug, key_timeout=30, reopen_interval=0.05) as scanner:
        events = Events(scanner.events())
        await events.health(Health.CONNECTED)
        device.send(us_keys("half"))  # a scan cut off by the unplug is dropped, not continued
        await device.drained()
        device.unplug()
        lost = await events.health(Health.DISCONNECTED)
        assert lost.status.device_id == BY_ID and "unplugged" in lost.status.detail
        assert device.closed
        assert scanner.status[BY_ID].health is Health.DISCONNECTED
        replugged = plug.plug(PipeInputDevice())
        await events.health(Health.CONNECTED)
        assert replugged.grabbed
        replugged.send(us_keys(EAN) + ENTER)
        scan = await events.scan(EAN)
        assert scan.device_id == BY_ID
    assert codes(events.seen) == [EAN]


async def test_wedge_scanner_end_of_input_counts_as_unplug(plug: Plug) -> None:
    device = plug.plug(PipeInputDevice())
    async with WedgeScanner(BY_ID, opener=plug, reopen_interval=0.05) as scanner:
        events = Events(scanner.events())
        device.send(us_keys("first") + ENTER)
        await events.scan("first")
        device.close_writer()
        await events.health(Health.DISCONNECTED)
        plug.plug(PipeInputDevice()).send(us_keys("second") + ENTER)
        await events.health(Health.CONNECTED)
        await events.scan("second")


async def test_wedge_scanner_grab_busy_is_an_error_then_retried(plug: Plug) -> None:
    busy = plug.plug(PipeInputDevice(grab_errno=errno.EBUSY))
    async with WedgeScanner(BY_ID, opener=plug, reopen_interval=0.05) as scanner:
        events = Events(scanner.events())
        error = await events.health(Health.ERROR)
        assert "EBUSY" in error.status.detail and "another program" in error.status.detail
        assert busy.closed  # not left open while another program holds it
        plug.plug(PipeInputDevice()).send(us_keys("free") + ENTER)
        await events.health(Health.CONNECTED)
        await events.scan("free")


async def test_wedge_scanner_absent_at_start_then_plugged(plug: Plug) -> None:
    async with WedgeScanner(BY_ID, opener=plug, reopen_interval=0.05) as scanner:
        events = Events(scanner.events())
        absent = await events.health(Health.DISCONNECTED)
        assert "not present" in absent.status.detail
        plug.plug(PipeInputDevice()).send(us_keys("late") + ENTER)
        await events.scan("late")
    closed = await events.health(Health.DISCONNECTED)
    assert closed.status.detail == "closed"


async def test_wedge_scanner_needs_async_with() -> None:
    with pytest.raises(RuntimeError):
        WedgeScanner(BY_ID).events()


def test_discover_without_by_id_dir(tmp_path: Path) -> None:
    assert discover_wedge_scanners(tmp_path / "missing") == []
    assert isinstance(discover_wedge_scanners(), list)  # /dev/input/by-id may not exist


def test_discover_filters_by_name_and_vendor(tmp_path: Path) -> None:
    for name in (
        "usb-Honeywell_Scanner-event-kbd",
        "usb-Generic_USB_Keyboard-event-kbd",
        "usb-0c2e_1234-event-kbd",
        "usb-Logitech_Mouse-event-mouse",
        "usb-Broken-event-kbd",
    ):
        (tmp_path / name).touch()
    info = {
        "usb-Generic_USB_Keyboard-event-kbd": ("Generic Keyboard", 0x1234),
        "usb-0c2e_1234-event-kbd": ("Symbol Bar Code Scanner", 0x05E0),
        "usb-Honeywell_Scanner-event-kbd": ("Honeywell Imaging", 0x0C2E),
    }
    opened: list[PipeInputDevice] = []

    def opener(path: str) -> EvdevDevice:
        entry = Path(path).name
        if entry not in info:
            raise PermissionError(errno.EACCES, "denied", path)
        device = PipeInputDevice(*info[entry])
        opened.append(device)
        return device

    def found(**filters: Sequence[str] | Sequence[int]) -> list[str]:
        paths = discover_wedge_scanners(tmp_path, opener=opener, **filters)  # type: ignore[arg-type]
        return [Path(p).name for p in paths]

    every = found()
    assert every == sorted(every) and len(every) == 4 and "usb-Broken-event-kbd" in every
    assert found(names=["honeywell"]) == ["usb-Honeywell_Scanner-event-kbd"]
    assert found(names=["bar code"]) == ["usb-0c2e_1234-event-kbd"]
    assert found(vendors=[0x0C2E]) == ["usb-Honeywell_Scanner-event-kbd"]
    assert found(names=["broken"], vendors=[0x05E0]) == [
        "usb-0c2e_1234-event-kbd",
        "usb-Broken-event-kbd",
    ]
    assert opened and all(device.closed for device in opened)


# --------------------------------------------------------------------------------------------
# Serial scanners over a pseudo-terminal pair


class PtyPort:
    """A serial port stand-in: pyserial opens ``path``, a symlink to the slave side of a pty
    (like /dev/serial/by-id/...); the test writes to the master. ``replug()`` makes a new pty
    and moves the link, as a scanner plugged back in gets a new ttyACM."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "usb-Scanner-if00"
        self.master = -1
        self.replug()

    def replug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        link = self.path.with_suffix(".new")
        link.symlink_to(os.ttyname(slave))
        os.close(slave)  # pyserial opens its own
        os.replace(link, self.path)
        self.master = master

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


@pytest.fixture
def pty_port(tmp_path: Path) -> Iterator[PtyPort]:
    port = PtyPort(tmp_path)
    yield port
    port.unplug()


async def test_serial_scanner_reads_a_line(pty_port: PtyPort) -> None:
    port = str(pty_port.path)
    async with SerialScanner(port) as scanner:
        events = Events(scanner.events())
        connected = await events.health(Health.CONNECTED)
        assert connected.status.device_id == port
        pty_port.write(b"MGM:123456789012\r\n")
        scan = await events.scan("MGM:123456789012")
        assert scan.device_id == port
        pty_port.write(b"MGM:1")
        pty_port.write(b"2\r")
        await events.scan("MGM:12")
    assert codes(events.seen) == ["MGM:123456789012", "MGM:12"]


async def test_serial_scanner_decodes_gb18030(pty_port: PtyPort) -> None:
    text = "会员卡:张三/积分100"
    async with SerialScanner(str(pty_port.path), encoding="gb18030") as scanner:
        events = Events(scanner.events())
        await events.health(Health.CONNECTED)
        pty_port.write(text.encode("gb18030") + b"\r\n")
        await events.scan(text)


async def test_serial_scanner_reports_undecodable_bytes(pty_port: PtyPort) -> None:
    async with SerialScanner(str(pty_port.path)) as scanner:
        events = Events(scanner.events())
        await events.health(Health.CONNECTED)
        pty_port.write("会员".encode("gb18030") + b"\r\nMGM:1\r\n")  # GB18030 read as UTF-8
        error = await events.error()
        assert "utf-8" in error.reason
        await events.scan("MGM:1")
        assert scanner.status[str(pty_port.path)].health is Health.CONNECTED


async def test_serial_scanner_reopens_after_the_port_is_lost(pty_port: PtyPort) -> None:
    port = str(pty_port.path)
    async with SerialScanner(port, reopen_interval=0.05, read_timeout=0.05) as scanner:
        events = Events(scanner.events())
        await events.health(Health.CONNECTED)
        pty_port.write(b"before\r\nhalf")  # "half" is cut off by the loss: never a scan
        await events.scan("before")
        pty_port.unplug()
        lost = await events.health(Health.DISCONNECTED)
        assert lost.status.device_id == port
        assert scanner.status[port].health is Health.DISCONNECTED
        pty_port.replug()
        await events.health(Health.CONNECTED)
        pty_port.write(b"after\n")
        await events.scan("after")
    assert codes(events.seen) == ["before", "after"]


async def test_serial_scanner_absent_port(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyACM9")
    async with SerialScanner(port, reopen_interval=0.05) as scanner:
        events = Events(scanner.events())
        absent = await events.health(Health.DISCONNECTED)
        assert "not present" in absent.status.detail


# --------------------------------------------------------------------------------------------
# Simulated scanner


async def test_simulated_scanner() -> None:
    async with SimulatedScanner("sim-1") as sim:
        events = Events(sim.events())
        await events.health(Health.CONNECTED)
        sent = await sim.scan(EAN)
        assert (await events.scan(EAN)) == sent
        await sim.fail("garbage")
        assert (await events.error()).reason == "garbage"
        assert sim.status["sim-1"].health is Health.CONNECTED
    await events.health(Health.DISCONNECTED)
    assert [type(e) for e in events.seen] == [HealthChanged, ScanEvent, ScanError, HealthChanged]
    with pytest.raises(RuntimeError):
        await sim.scan("x")


class FailingOpener:
    """An opener that fails every time, as for a scanner that stays away; counts the tries."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.tries = 0

    def __call__(self, path: str) -> EvdevDevice:
        self.tries += 1
        raise self.error


@pytest.mark.parametrize(("error", "said"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", BY_ID), "not present"),
    (RuntimeError("evdev is not installed: pip install 'membergate[hardware]'"),
     "evdev is not installed"),
], ids=["unplugged", "evdev-missing"])
async def test_a_scanner_that_stays_away_is_one_warning_not_a_traceback_a_second(
        error: Exception, said: str, caplog: pytest.LogCaptureFixture) -> None:
    opener = FailingOpener(error)
    caplog.set_level("INFO", logger="drivers.scanner")
    async with WedgeScanner(BY_ID, opener=opener, reopen_interval=0.01):
        for _ in range(int(WAIT / 0.01)):
            if opener.tries >= 10:
                break
            await asyncio.sleep(0.01)
        assert opener.tries >= 10
        records = [r for r in caplog.records if r.name == "drivers.scanner"]
    assert [r.levelname for r in records] == ["WARNING"], records
    assert records[0].exc_info is None and said in records[0].getMessage()
