"""Card reader driver: pure helpers, then the real path pyscard → pcscd → vpcd → virtual card."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest

from drivers.base import (
    CardError,
    CardInserted,
    CardRemoved,
    DeviceKind,
    Health,
    HealthChanged,
)
from drivers.card_reader import (
    MEMBERGATE_AID,
    PCSCD_DEVICE_ID,
    CardReaderConfig,
    CardReaderEvent,
    CardReaderMonitor,
    CardReadError,
    SimulatedCardReader,
    normalize_uid,
    parse_member_number,
    transceive,
    uid_from_keyboard_reader,
    with_le,
)
from tests.drivers.conftest import MakeVirtualCard
from tests.support.vpcd import (
    ATR_CONTACT_T0,
    IsoMemberCard,
    MifareClassicCard,
    PcscdHarness,
    T0GetResponseCard,
    UidCard,
    UnknownCard,
    VanishingCard,
    WrongLengthCard,
)

E = TypeVar("E")

WAIT = 5.0  # seconds any single expected event may take
UID = bytes.fromhex("04A1B2C3")
UID7 = bytes.fromhex("04112233445566")
READER0 = "Virtual PCD 00 00"
READER1 = "Virtual PCD 00 01"

# --------------------------------------------------------------------------------------------
# UID normalisation and the APDU layer (no pcscd)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x04\xa1\xb2\xc3", "04A1B2C3"),
        ([4, 161, 178, 195], "04A1B2C3"),
        ("04a1b2c3", "04A1B2C3"),
        ("04:A1:B2:C3", "04A1B2C3"),
        ("04 a1 b2 c3 ", "04A1B2C3"),
        ("0x04A1B2C3", "04A1B2C3"),
        ("04-11-22-33-44-55-66", "04112233445566"),
    ],
)
def test_normalize_uid(value: bytes | list[int] | str, expected: str) -> None:
    assert normalize_uid(value) == expected


@pytest.mark.parametrize("bad", ["", "0", "04A1B2C", "zz", b""])
def test_normalize_uid_rejects_garbage(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        normalize_uid(bad)


def test_keyboard_reader_decimal_is_byte_reversed() -> None:
    # UID 04 A1 B2 C3 is typed as the decimal of C3 B2 A1 04.
    assert uid_from_keyboard_reader(str(0xC3B2A104)) == "04A1B2C3"
    assert uid_from_keyboard_reader("3283263748\n") == "04A1B2C3"


def test_keyboard_reader_zero_padded_and_small_numbers_keep_four_bytes() -> None:
    # UID 01 00 00 00 → reversed 00 00 00 01 → typed "0000000001".
    assert uid_from_keyboard_reader("0000000001") == "01000000"


def test_keyboard_reader_seven_byte_uid() -> None:
    typed = str(int.from_bytes(UID7[::-1], "big"))
    assert uid_from_keyboard_reader(typed) == normalize_uid(UID7)
    assert uid_from_keyboard_reader(typed, byte_length=7) == "04112233445566"


def test_keyboard_reader_in_card_order() -> None:
    assert uid_from_keyboard_reader(str(0x04A1B2C3), byte_reversed=False) == "04A1B2C3"


@pytest.mark.parametrize("bad", ["", "12ab", "-5", "١٢٣"])
def test_keyboard_reader_rejects_non_decimal(bad: str) -> None:
    with pytest.raises(ValueError):
        uid_from_keyboard_reader(bad)


def test_keyboard_reader_number_too_big_for_length() -> None:
    with pytest.raises(ValueError):
        uid_from_keyboard_reader(str(2**40), byte_length=4)


def test_parse_member_number() -> None:
    assert parse_member_number(b"12345678") == "12345678"
    assert parse_member_number(b"0012345\x00\x00\x00") == "0012345"
    assert parse_member_number(b"987\xff\xff") == "987"
    assert parse_member_number(b"  4242  ") == "4242"
    assert parse_member_number(bytes(16)) is None
    assert parse_member_number(b"\xff" * 16) is None
    assert parse_member_number(b"12a4") is None
    assert parse_member_number("١٢".encode()) is None


def test_with_le_for_every_apdu_case() -> None:
    assert with_le(bytes.fromhex("00B00000"), 8) == bytes.fromhex("00B0000008")
    assert with_le(bytes.fromhex("00B0000000"), 8) == bytes.fromhex("00B0000008")
    assert with_le(bytes.fromhex("00A4040002AABB"), 9) == bytes.fromhex("00A4040002AABB09")
    assert with_le(bytes.fromhex("00A4040002AABB00"), 9) == bytes.fromhex("00A4040002AABB09")


def scripted(answers: list[str], sent: list[bytes]) -> Callable[[bytes], bytes]:
    replies = iter(bytes.fromhex(a) for a in answers)

    def transmit(apdu: bytes) -> bytes:
        sent.append(apdu)
        return next(replies)

    return transmit


def test_transceive_joins_get_response_parts() -> None:
    sent: list[bytes] = []
    response = transceive(
        scripted(["6103", "AABBCC6102", "DDEE9000"], sent), b"\x00\xb0\x00\x00\x00"
    )
    assert response.data == bytes.fromhex("AABBCCDDEE") and response.ok
    assert sent[1:] == [bytes.fromhex("00C0000003"), bytes.fromhex("00C0000002")]


def test_transceive_resends_with_le_from_6cxx() -> None:
    sent: list[bytes] = []
    response = transceive(scripted(["6C04", "04A1B2C39000"], sent), bytes.fromhex("FFCA000000"))
    assert response.data == UID and response.ok
    assert sent == [bytes.fromhex("FFCA000000"), bytes.fromhex("FFCA000004")]


def test_transceive_gives_up_on_endless_61xx() -> None:
    with pytest.raises(CardReadError, match="61xx"):
        transceive(lambda apdu: b"\x61\x01", b"\x00\xb0\x00\x00\x00")


def test_transceive_rejects_short_answer() -> None:
    with pytest.raises(CardReadError, match="short answer"):
        transceive(lambda apdu: b"\x90", b"\x00\xb0\x00\x00\x00")
    with pytest.raises(CardReadError, match="removed or lost contact during read"):
        transceive(lambda apdu: b"", b"\x00\xb0\x00\x00\x00")


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        CardReaderConfig(mifare_key=b"\x00")
    with pytest.raises(ValueError):
        CardReaderConfig(member_aid=b"\x01")
    with pytest.raises(ValueError):
        CardReaderConfig(mifare_block=256)
    with pytest.raises(ValueError):
        CardReaderConfig(poll_timeout=0)
    assert CardReaderConfig().member_aid == MEMBERGATE_AID
    assert CardReaderConfig(reader_name_pattern="00 00$").matches(READER0)
    assert not CardReaderConfig(reader_name_pattern="00 00$").matches(READER1)


# --------------------------------------------------------------------------------------------
# The simulated reader


async def test_simulated_reader_taps_and_removes() -> None:
    async with SimulatedCardReader() as sim:
        stream = sim.events()
        health = await anext(stream)
        assert isinstance(health, HealthChanged) and health.status.health is Health.CONNECTED
        assert sim.list_readers() == ["Simulated PCD 00 00"]
        await sim.tap("04:a1:b2:c3", member_number="1001")
        await sim.tap(UID7)  # a second card replaces the first
        await sim.remove()
        await sim.remove()  # nothing on the reader: no event
        await sim.fail("card not recognised")
        events = [await anext(stream) for _ in range(5)]
    assert isinstance(events[0], CardInserted)
    assert events[0] == CardInserted(
        "Simulated PCD 00 00", "04A1B2C3", sim.atr, "1001", at=events[0].at
    )
    assert isinstance(events[1], CardRemoved)
    assert isinstance(events[2], CardInserted) and events[2].uid == "04112233445566"
    assert events[2].member_number is None
    assert isinstance(events[3], CardRemoved)
    assert isinstance(events[4], CardError) and events[4].reason == "card not recognised"
    rest = [event async for event in stream]
    assert [type(e) for e in rest] == [HealthChanged]
    assert isinstance(rest[0], HealthChanged) and rest[0].status.health is Health.DISCONNECTED


async def test_simulated_reader_must_be_opened() -> None:
    sim = SimulatedCardReader()
    with pytest.raises(RuntimeError):
        await sim.tap(UID)


# --------------------------------------------------------------------------------------------
# Real pyscard → pcscd → vpcd → virtual card


class EventTap:
    """Reads a monitor's events; ``expect`` waits (bounded) for the next event of a kind."""

    def __init__(self, monitor: CardReaderMonitor) -> None:
        self.monitor = monitor
        self.stream: AsyncIterator[CardReaderEvent] = monitor.events()
        self.seen: list[CardReaderEvent] = []

    async def next(self, within: float = WAIT) -> CardReaderEvent:
        event = await asyncio.wait_for(anext(self.stream), within)
        self.seen.append(event)
        return event

    async def expect(
        self,
        kind: type[E],
        device_id: str | None = READER0,
        where: Callable[[E], bool] = lambda e: True,
        within: float = WAIT,
    ) -> E:
        """Next event of ``kind`` (from ``device_id``); health events on the way are skipped,
        any other card event on that reader is a failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {kind.__name__} within {within}s; saw {self.seen}")
            try:
                event = await self.next(remaining)
            except TimeoutError:
                raise AssertionError(
                    f"no {kind.__name__} within {within}s; saw {self.seen}"
                ) from None
            event_device = (
                event.status.device_id if isinstance(event, HealthChanged) else event.device_id
            )
            if isinstance(event, kind) and device_id in (None, event_device) and where(event):
                return event
            if not isinstance(event, HealthChanged) and event_device == device_id:
                raise AssertionError(f"expected {kind.__name__}, got {event}")


FAST = CardReaderConfig(poll_timeout=0.5, retry_interval=0.1)


@pytest.fixture
async def card_events(pcscd_harness: PcscdHarness) -> AsyncIterator[EventTap]:
    """A running ``CardReaderMonitor`` (fast polling) against the private pcscd, and its events."""
    pcscd_harness.start()
    async with CardReaderMonitor(FAST) as monitor:
        tap = EventTap(monitor)
        await tap.expect(HealthChanged, READER0, lambda e: e.status.health is Health.CONNECTED)
        yield tap


async def test_monitor_reports_readers_and_pcscd_connected(card_events: EventTap) -> None:
    await card_events.expect(HealthChanged, READER1, lambda e: e.status.health is Health.CONNECTED)
    monitor = card_events.monitor
    assert monitor.running
    assert monitor.list_readers() == [READER0, READER1]
    status = monitor.status
    assert status[READER0].health is Health.CONNECTED
    assert status[READER0].kind is DeviceKind.CARD_READER
    assert status[PCSCD_DEVICE_ID].health is Health.CONNECTED


async def test_uid_only_card(card_events: EventTap, make_virtual_card: MakeVirtualCard) -> None:
    card = make_virtual_card(UidCard(UID))
    event = await card_events.expect(CardInserted)
    assert event.uid == "04A1B2C3"
    assert event.member_number is None
    assert event.atr == card.behaviour.atr.hex().upper()
    assert card.apdus[0] == bytes.fromhex("FFCA000000")


async def test_member_number_from_iso7816_card(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    card = make_virtual_card(IsoMemberCard("880012345678", uid=UID7))
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("04112233445566", "880012345678")
    assert bytes.fromhex("00A4040007") + MEMBERGATE_AID in card.apdus


async def test_contact_card_without_uid_still_gives_member_number(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    make_virtual_card(IsoMemberCard(b"4242\x00\x00", uid=None, atr=ATR_CONTACT_T0))
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("", "4242")


async def test_member_number_from_mifare_classic_block(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    card = make_virtual_card(MifareClassicCard(UID, blocks={4: b"20240001"}))
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("04A1B2C3", "20240001")
    assert bytes.fromhex("FF86000005010004 6000".replace(" ", "")) in card.apdus
    assert bytes.fromhex("FFB0000410") in card.apdus


async def test_mifare_key_and_block_are_configurable(
    pcscd_harness: PcscdHarness, make_virtual_card: MakeVirtualCard
) -> None:
    key = bytes.fromhex("A0A1A2A3A4A5")
    config = CardReaderConfig(poll_timeout=0.5, mifare_key=key, mifare_block=9)
    make_virtual_card(MifareClassicCard(UID, blocks={9: b"77"}, key_a=key))
    async with CardReaderMonitor(config) as monitor:
        event = await EventTap(monitor).expect(CardInserted)
    assert event.member_number == "77"


async def test_mifare_card_with_other_key_has_no_member_number(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    other_key = bytes.fromhex("010203040506")
    make_virtual_card(MifareClassicCard(UID, blocks={4: b"20240001"}, key_a=other_key))
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("04A1B2C3", None)


async def test_t0_card_answering_61xx_is_read_with_get_response(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    behaviour = T0GetResponseCard(IsoMemberCard("600000123", uid=UID), chunk=3)
    make_virtual_card(behaviour)
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("04A1B2C3", "600000123")
    assert behaviour.get_responses >= 5  # UID in 2 parts, member file in 3


async def test_card_answering_6cxx_is_asked_again_with_le(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    behaviour = WrongLengthCard(IsoMemberCard("31415926", uid=UID))
    make_virtual_card(behaviour)
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("04A1B2C3", "31415926")
    assert behaviour.wrong_length_answers == 2  # FF CA and READ BINARY


async def test_remove_and_reinsert(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    card = make_virtual_card(IsoMemberCard("1001", uid=UID))
    assert (await card_events.expect(CardInserted)).member_number == "1001"
    card.remove()
    await card_events.expect(CardRemoved)
    card.insert()
    assert (await card_events.expect(CardInserted)).member_number == "1001"
    card.remove()
    await card_events.expect(CardRemoved)


async def test_unknown_card_is_a_card_error_and_monitor_goes_on(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    unknown = make_virtual_card(UnknownCard())
    error = await card_events.expect(CardError)
    assert "card not recognised" in error.reason and "6D00" in error.reason
    unknown.remove()
    await card_events.expect(CardRemoved)
    make_virtual_card(UidCard(UID))
    assert (await card_events.expect(CardInserted)).uid == "04A1B2C3"


async def test_card_removed_mid_read_is_a_card_error_and_monitor_goes_on(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    pulled = VanishingCard(IsoMemberCard("1001", uid=UID), when=lambda apdu: apdu[1] == 0xB0)
    make_virtual_card(pulled)
    error = await card_events.expect(CardError)
    assert "removed or lost contact during read" in error.reason
    assert "00 B0" in error.reason
    await card_events.expect(CardRemoved)
    make_virtual_card(IsoMemberCard("2002", uid=UID7))
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("04112233445566", "2002")


async def test_card_on_second_reader_has_its_own_device_id(
    card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    make_virtual_card(UidCard(UID7), slot=1)
    event = await card_events.expect(CardInserted, READER1)
    assert event.uid == "04112233445566"


async def test_reader_name_pattern_leaves_other_readers_alone(
    pcscd_harness: PcscdHarness, make_virtual_card: MakeVirtualCard
) -> None:
    make_virtual_card(UidCard(UID7), slot=1)
    make_virtual_card(UidCard(UID), slot=0)
    config = CardReaderConfig(poll_timeout=0.5, reader_name_pattern="00 00$")
    async with CardReaderMonitor(config) as monitor:
        tap = EventTap(monitor)
        assert (await tap.expect(CardInserted, None)).device_id == READER0
        assert monitor.list_readers() == [READER0]
    assert all(
        (e.status.device_id if isinstance(e, HealthChanged) else e.device_id) != READER1
        for e in tap.seen
    )


async def test_card_already_on_reader_when_monitor_starts(
    pcscd_harness: PcscdHarness, make_virtual_card: MakeVirtualCard
) -> None:
    card = make_virtual_card(IsoMemberCard("5005", uid=UID))
    pcscd_harness.wait_card_state(card.slot, present=True)
    async with CardReaderMonitor(FAST) as monitor:
        event = await EventTap(monitor).expect(CardInserted)
    assert event.member_number == "5005"


async def test_monitor_survives_pcscd_kill_and_restart(
    pcscd_harness: PcscdHarness, card_events: EventTap, make_virtual_card: MakeVirtualCard
) -> None:
    card = make_virtual_card(IsoMemberCard("1001", uid=UID))
    await card_events.expect(CardInserted)

    pcscd_harness.kill()
    await card_events.expect(CardRemoved)
    await card_events.expect(
        HealthChanged, PCSCD_DEVICE_ID, lambda e: e.status.health is Health.ERROR
    )
    assert card_events.monitor.status[READER0].health is Health.ERROR
    assert card_events.monitor.running

    pcscd_harness.start()
    await card_events.expect(
        HealthChanged, PCSCD_DEVICE_ID, lambda e: e.status.health is Health.CONNECTED
    )
    await card_events.expect(HealthChanged, READER0, lambda e: e.status.health is Health.CONNECTED)
    card.insert()  # the kill cut the card's connection to vpcd
    event = await card_events.expect(CardInserted)
    assert (event.uid, event.member_number) == ("04A1B2C3", "1001")


async def test_readers_that_disappear_are_disconnected_and_new_ones_connected(
    pcscd_harness: PcscdHarness, card_events: EventTap
) -> None:
    pcscd_harness.kill()
    pcscd_harness.friendly_name = "Counter PCD"
    try:
        pcscd_harness.start()
        await card_events.expect(
            HealthChanged, READER0, lambda e: e.status.health is Health.DISCONNECTED
        )
        await card_events.expect(
            HealthChanged, "Counter PCD 00 00", lambda e: e.status.health is Health.CONNECTED
        )
        await card_events.expect(
            HealthChanged, "Counter PCD 00 01", lambda e: e.status.health is Health.CONNECTED
        )
        assert card_events.monitor.list_readers() == ["Counter PCD 00 00", "Counter PCD 00 01"]
    finally:
        pcscd_harness.stop()
        pcscd_harness.friendly_name = "Virtual PCD"
        pcscd_harness.start()


async def test_monitor_started_without_pcscd_reports_error_then_recovers(
    pcscd_harness: PcscdHarness, make_virtual_card: MakeVirtualCard
) -> None:
    pcscd_harness.stop()
    async with CardReaderMonitor(FAST) as monitor:
        tap = EventTap(monitor)
        await tap.expect(HealthChanged, PCSCD_DEVICE_ID, lambda e: e.status.health is Health.ERROR)
        pcscd_harness.start()
        await tap.expect(HealthChanged, READER0, lambda e: e.status.health is Health.CONNECTED)
        make_virtual_card(UidCard(UID))
        assert (await tap.expect(CardInserted)).uid == "04A1B2C3"


async def test_event_stream_ends_when_monitor_closes(pcscd_harness: PcscdHarness) -> None:
    monitor = CardReaderMonitor(FAST)
    async with monitor:
        stream = monitor.events()
    events = await asyncio.wait_for(_drain(stream), WAIT)
    assert all(isinstance(e, HealthChanged) for e in events)
    assert not monitor.running


async def _drain(stream: AsyncIterator[CardReaderEvent]) -> list[CardReaderEvent]:
    return [event async for event in stream]
