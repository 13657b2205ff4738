"""Pole display driver: pure encoders and text fitting, then real pyserial over a pty pair."""

from __future__ import annotations

import asyncio
import os
import select
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from drivers.base import DeviceKind, Health, HealthChanged
from drivers.display import (
    CD5220Commands,
    DisplayConfig,
    DisplayEncoding,
    EscPosCommands,
    Lamp,
    LedCommands,
    PoleDisplay,
    SimulatedDisplay,
    UnsupportedCommand,
    amount_lines,
    fit_text,
    format_amount,
    to_ascii,
)

WAIT = 5.0  # seconds any single expected byte or event may take
FAST_RETRY = 0.02
NO_RETRY = 3600.0  # background retry never fires within a test: only the next call reopens

ELEVEN_HANZI = {"gb2312": "欢迎光临会员中心收银台", "big5": "歡迎光臨會員中心收銀台"}

# --------------------------------------------------------------------------------------------
# A pseudo-terminal pair standing in for the serial port


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self.closed = False

    def read_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            ready, _, _ = select.select([self.master], [], [], WAIT)
            if not ready:
                raise AssertionError(f"got {bytes(data)!r}, expected {n} bytes")
            data += os.read(self.master, n - len(data))
        return bytes(data)

    def expect(self, expected: bytes) -> None:
        assert self.read_exact(len(expected)) == expected
        assert self.pending() == b""

    def pending(self) -> bytes:
        """What the display was sent beyond what was read (nothing is waited for)."""
        data = bytearray()
        while select.select([self.master], [], [], 0)[0]:
            chunk = os.read(self.master, 4096)
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.master)
            os.close(self.slave)


@pytest.fixture
def ptys() -> Iterator[list[Pty]]:
    made: list[Pty] = []
    yield made
    for pty in made:
        pty.close()


@pytest.fixture
def pty(ptys: list[Pty]) -> Pty:
    ptys.append(Pty())
    return ptys[-1]


def point(link: Path, pty: Pty) -> None:
    """Aim a stable port name at a pty, as /dev/serial/by-id/... follows a replugged adapter."""
    if link.is_symlink():
        link.unlink()
    link.symlink_to(pty.path)


async def next_event(stream: AsyncIterator[HealthChanged]) -> HealthChanged:
    return await asyncio.wait_for(anext(stream), WAIT)


def cd5220_lines(line1: bytes, line2: bytes) -> bytes:
    return b"\x1bQA" + line1.ljust(20) + b"\r\x1bQB" + line2.ljust(20) + b"\r"


CD5220_OPEN = b"\x1b@\x0c"  # init, then clear (nothing shown yet)

# --------------------------------------------------------------------------------------------
# Text fitting


def test_fit_text_ascii_pads_and_cuts() -> None:
    assert fit_text("Hello", 20) == b"Hello" + b" " * 15
    assert fit_text("x" * 25, 20) == b"x" * 20
    assert fit_text("", 4) == b"    "
    assert fit_text("abc", 10, pad=False) == b"abc"


@pytest.mark.parametrize("encoding", ["gb2312", "big5"])
def test_eleven_hanzi_fill_twenty_cells_with_ten(encoding: DisplayEncoding) -> None:
    text = ELEVEN_HANZI[encoding]
    cells = fit_text(text, 20, encoding)
    assert len(cells) == 20
    assert cells.decode(encoding) == text[:10]


@pytest.mark.parametrize("encoding", ["gb2312", "big5"])
def test_hanzi_straddling_the_end_is_left_out_and_padded(encoding: DisplayEncoding) -> None:
    text = ELEVEN_HANZI[encoding]
    cells = fit_text(text, 19, encoding)
    assert cells.decode(encoding) == text[:9] + " "
    mixed = fit_text("A" + text, 20, encoding)  # the 'A' shifts every Hanzi by one cell
    assert mixed.decode(encoding) == "A" + text[:9] + " "
    assert fit_text("12元", 20, encoding) == "12元".encode(encoding) + b" " * 16


def test_characters_missing_from_gb2312_are_replaced_not_fatal() -> None:
    # 歡 and 臨 are traditional-only; € has no GB2312 code.
    assert fit_text("歡迎光臨", 10, "gb2312").decode("gb2312") == "?迎光?    "
    assert fit_text("5€", 6, "gb2312") == b"5EUR  "
    assert fit_text("会員", 6, "big5").decode("big5") == "?員   "  # 会 is simplified-only


@pytest.mark.parametrize(
    "text",
    [
        "欢迎光临",
        "Café Ｍｏｃｈａ 拿铁 ￥12",
        "Ωμέγα",
        "naïve—“quoted”",
        "Straße",
        "\x00\t\x7f\u200b",
    ],
)
def test_ascii_fallback_produces_only_printable_ascii(text: str) -> None:
    cells = fit_text(text, 20, "ascii")
    assert len(cells) == 20
    assert all(0x20 <= b <= 0x7E for b in cells)


def test_ascii_transliteration() -> None:
    assert to_ascii("Café Ｍｏｃｈａ 拿铁 ￥12") == "Cafe Mocha ?? Y12"
    assert to_ascii("Straße “Nº１”") == 'Strasse "No1"'


def test_control_characters_never_reach_the_line() -> None:
    # A CR inside a line would end CD5220's ESC Q A early; ESC would start a command.
    assert fit_text("A\rB\x1bC", 5) == b"A B C"
    assert fit_text("甲\r乙", 5, "gb2312").decode("gb2312") == "甲 乙"


# --------------------------------------------------------------------------------------------
# Encoders


def test_cd5220_commands() -> None:
    cd = CD5220Commands()
    line = fit_text("Hi", 20)
    assert cd.init() == b"\x1b@"
    assert cd.clear() == b"\x0c"
    assert cd.upper_line(line) == b"\x1bQAHi" + b" " * 18 + b"\r"
    assert cd.lower_line(line) == b"\x1bQBHi" + b" " * 18 + b"\r"
    assert cd.scroll(b"Welcome") == b"\x1bQDWelcome\r"
    assert cd.cursor(1, 1) == b"\x1bl\x01\x01"
    assert cd.cursor(20, 2) == b"\x1bl\x14\x02"
    with pytest.raises(ValueError):
        cd.upper_line(b"short")
    with pytest.raises(ValueError):
        cd.cursor(21, 1)
    with pytest.raises(ValueError):
        cd.scroll(b"x" * 41)


def test_escpos_commands() -> None:
    ep = EscPosCommands()
    assert ep.init() == b"\x1b@\x1f\x01"
    assert ep.clear() == b"\x0c"
    assert ep.home() == b"\x0b"
    assert ep.clear_line() == b"\x18"
    assert ep.cursor(1, 2) == b"\x1f$\x01\x02"
    assert ep.overwrite_mode() == b"\x1f\x01"
    assert ep.vertical_scroll_mode() == b"\x1f\x02"
    assert ep.horizontal_scroll_mode() == b"\x1f\x03"
    one, two = fit_text("One", 20), fit_text("Two", 20)
    assert ep.show(one, two) == b"\x1f$\x01\x01" + one + b"\x1f$\x01\x02" + two
    assert ep.scroll(b"Hi") == b"\x1f$\x01\x01\x18\x1f\x03Hi\x1f\x01"
    with pytest.raises(ValueError):
        ep.cursor(0, 1)


@pytest.mark.parametrize(
    ("kind", "byte"),
    [(Lamp.OFF, b"0"), (Lamp.PRICE, b"1"), (Lamp.TOTAL, b"2"), ("paid", b"3"), ("CHANGE", b"4")],
)
def test_led_lamps(kind: Lamp | str, byte: bytes) -> None:
    assert LedCommands().lamp(kind) == b"\x1bs" + byte


@pytest.mark.parametrize(
    ("minor", "text"),
    [
        (12345, "123.45"),
        (5, "0.05"),
        (0, "0.00"),
        (-250, "-2.50"),
        (99999999, "999999.99"),
        (-9999999, "-99999.99"),
    ],
)
def test_led_amounts(minor: int, text: str) -> None:
    assert format_amount(minor) == text
    assert LedCommands().amount(minor) == b"\x1bQA" + text.encode() + b"\r"


@pytest.mark.parametrize("minor", [100000000, -10000000])
def test_led_amount_over_eight_digits_is_refused(minor: int) -> None:
    with pytest.raises(ValueError, match="display has 8"):
        LedCommands().show_amount(Lamp.TOTAL, minor)


def test_amount_must_be_integer_minor_units() -> None:
    with pytest.raises(TypeError):
        format_amount(12.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Lamp.of("discount")


def test_led_show_amount_and_text_rendering() -> None:
    assert LedCommands().show_amount(Lamp.TOTAL, 12345) == b"\x1bs2\x1bQA123.45\r"
    assert amount_lines("change", 250) == ("CHANGE", "2.50".rjust(20))


# --------------------------------------------------------------------------------------------
# Over a pty with pyserial


async def test_cd5220_on_the_port(pty: Pty) -> None:
    config = DisplayConfig(pty.path, command_set="cd5220")
    async with PoleDisplay(config) as display:
        pty.expect(CD5220_OPEN)
        assert display.status.health is Health.CONNECTED
        assert display.status.kind is DeviceKind.DISPLAY
        assert await display.show("Latte", "12.50")
        pty.expect(cd5220_lines(b"Latte", b"12.50"))
        assert await display.scroll("Welcome to the store")
        pty.expect(b"\x1bQDWelcome to the store\r")
        assert await display.clear()
        pty.expect(b"\x0c")
    after = display.status
    assert after.health is Health.DISCONNECTED


async def test_escpos_on_the_port(pty: Pty) -> None:
    config = DisplayConfig(pty.path, command_set="escpos")
    async with PoleDisplay(config) as display:
        pty.expect(b"\x1b@\x1f\x01\x0c")
        assert await display.show("Latte", "12.50")
        pty.expect(b"\x1f$\x01\x01" + b"Latte".ljust(20) + b"\x1f$\x01\x02" + b"12.50".ljust(20))
        assert await display.scroll("Thank you")
        pty.expect(b"\x1f$\x01\x01\x18\x1f\x03Thank you\x1f\x01")
        assert await display.clear()
        pty.expect(b"\x0c")


async def test_led_on_the_port(pty: Pty) -> None:
    async with PoleDisplay(DisplayConfig(pty.path, command_set="led")) as display:
        pty.expect(b"\x1b@\x0c")
        assert await display.show_amount(Lamp.PRICE, 12345)
        pty.expect(b"\x1bs1\x1bQA123.45\r")
        assert await display.show_amount("change", 50)
        pty.expect(b"\x1bs4\x1bQA0.50\r")
        with pytest.raises(ValueError, match="display has 8"):
            await display.show_amount(Lamp.TOTAL, 123456789)
        with pytest.raises(UnsupportedCommand):
            await display.show("text", "on an LED")
        assert pty.pending() == b""


async def test_amount_on_a_text_display(pty: Pty) -> None:
    async with PoleDisplay(DisplayConfig(pty.path)) as display:
        pty.expect(CD5220_OPEN)
        assert await display.show_amount(Lamp.TOTAL, 12345)
        pty.expect(cd5220_lines(b"TOTAL", b"123.45".rjust(20)))


@pytest.mark.parametrize("encoding", ["gb2312", "big5"])
async def test_hanzi_lines_on_the_port(pty: Pty, encoding: DisplayEncoding) -> None:
    text = ELEVEN_HANZI[encoding]
    async with PoleDisplay(DisplayConfig(pty.path, encoding=encoding)) as display:
        pty.expect(CD5220_OPEN)
        assert await display.show(text, "A" + text)
        frame = pty.read_exact(2 * 24)
        assert frame[:3] == b"\x1bQA" and frame[23:27] == b"\r\x1bQB" and frame[-1:] == b"\r"
        assert frame[3:23].decode(encoding) == text[:10]
        assert frame[27:47].decode(encoding) == "A" + text[:9] + " "


async def test_ascii_display_gets_only_ascii(pty: Pty) -> None:
    async with PoleDisplay(DisplayConfig(pty.path, encoding="ascii")) as display:
        pty.expect(CD5220_OPEN)
        assert await display.show("欢迎光临", "Café ￥12")
        pty.expect(cd5220_lines(b"????", b"Cafe Y12"))


async def test_port_lost_then_replugged_is_reopened_by_retry(
    ptys: list[Pty], tmp_path: Path
) -> None:
    link = tmp_path / "display"
    ptys.append(Pty())
    point(link, ptys[0])
    config = DisplayConfig(str(link), retry_interval=FAST_RETRY, device_id="pole-1")
    async with PoleDisplay(config) as display:
        events = display.events()
        assert (await next_event(events)).status.health is Health.CONNECTED
        ptys[0].expect(CD5220_OPEN)
        assert await display.show("Latte", "12.50")
        ptys[0].expect(cd5220_lines(b"Latte", b"12.50"))

        ptys[0].close()  # adapter unplugged
        link.unlink()
        assert not await display.show("Total", "15.00")
        lost = await next_event(events)
        assert lost.status.health is Health.DISCONNECTED
        assert lost.status.device_id == "pole-1"
        assert display.status.health is Health.DISCONNECTED

        ptys.append(Pty())  # replugged: a new tty behind the same name
        point(link, ptys[1])
        assert (await next_event(events)).status.health is Health.CONNECTED
        ptys[1].expect(b"\x1b@" + cd5220_lines(b"Total", b"15.00"))
        assert await display.show("Paid", "20.00")
        ptys[1].expect(cd5220_lines(b"Paid", b"20.00"))


async def test_port_lost_is_reopened_on_the_next_call(ptys: list[Pty], tmp_path: Path) -> None:
    link = tmp_path / "display"
    ptys.append(Pty())
    point(link, ptys[0])
    config = DisplayConfig(str(link), command_set="escpos", retry_interval=NO_RETRY)
    async with PoleDisplay(config) as display:
        events = display.events()
        await next_event(events)
        ptys[0].expect(b"\x1b@\x1f\x01\x0c")

        ptys[0].close()
        assert not await display.scroll("Welcome")
        assert (await next_event(events)).status.health is Health.DISCONNECTED

        ptys.append(Pty())
        point(link, ptys[1])
        assert await display.show("Back", "again")
        assert (await next_event(events)).status.health is Health.CONNECTED
        ptys[1].expect(
            b"\x1b@\x1f\x01"
            + b"\x1f$\x01\x01"
            + b"Back".ljust(20)
            + b"\x1f$\x01\x02"
            + b"again".ljust(20)
        )


async def test_missing_port_at_open_then_plugged_in(ptys: list[Pty], tmp_path: Path) -> None:
    link = tmp_path / "not-yet"
    config = DisplayConfig(str(link), command_set="led", retry_interval=FAST_RETRY)
    async with PoleDisplay(config) as display:
        events = display.events()
        missing = await next_event(events)
        assert missing.status.health is Health.DISCONNECTED
        assert "not-yet" in missing.status.detail
        assert not await display.show_amount(Lamp.TOTAL, 990)

        ptys.append(Pty())
        point(link, ptys[0])
        assert (await next_event(events)).status.health is Health.CONNECTED
        ptys[0].expect(b"\x1b@\x1bs2\x1bQA9.90\r")


async def test_hung_port_trips_the_write_timeout(pty: Pty) -> None:
    # Nobody reads the master: the pty buffer fills and a write can no longer complete.
    config = DisplayConfig(pty.path, write_timeout=0.2, retry_interval=NO_RETRY)
    async with PoleDisplay(config) as display:
        events = display.events()
        await next_event(events)
        for _ in range(10_000):
            if not await display.show("x" * 20, "y" * 20):
                break
        else:
            pytest.fail("writes never timed out")
        hung = await next_event(events)
        assert hung.status.health is Health.DISCONNECTED
        assert "timeout" in hung.status.detail.lower()


async def test_events_end_when_closed(pty: Pty) -> None:
    display = PoleDisplay(DisplayConfig(pty.path))
    with pytest.raises(RuntimeError):
        display.events()
    async with display:
        events = display.events()
        assert (await next_event(events)).status.health is Health.CONNECTED
    closed = await next_event(events)
    assert (closed.status.health, closed.status.detail) == (Health.DISCONNECTED, "closed")
    assert [event async for event in events] == []
    with pytest.raises(RuntimeError):
        await display.show("after", "close")


# --------------------------------------------------------------------------------------------
# Simulated display


async def test_simulated_display_keeps_the_lines() -> None:
    async with SimulatedDisplay(encoding="gb2312") as sim:
        events = sim.events()
        assert (await next_event(events)).status.health is Health.CONNECTED
        assert await sim.show("欢迎光临会员中心收银台", "Latte")
        assert sim.lines == ("欢迎光临会员中心收银", "Latte".ljust(20))
        assert await sim.show_amount(Lamp.TOTAL, 1250)
        assert sim.lines == ("TOTAL".ljust(20), "12.50".rjust(20))
        assert await sim.scroll("Welcome")
        assert sim.scrolling == "Welcome"
        await sim.disconnect()
        assert (await next_event(events)).status.health is Health.DISCONNECTED
        assert not await sim.clear()
        assert sim.lines == (" " * 20, " " * 20)
        await sim.reconnect()
        assert sim.status.health is Health.CONNECTED


async def test_simulated_led_display() -> None:
    async with SimulatedDisplay(command_set="led") as sim:
        assert await sim.show_amount("paid", 10000)
        assert (sim.lamp, sim.amount) == (Lamp.PAID, "100.00")
        with pytest.raises(ValueError):
            await sim.show_amount(Lamp.TOTAL, 10**9)
        with pytest.raises(UnsupportedCommand):
            await sim.show("no", "text")
