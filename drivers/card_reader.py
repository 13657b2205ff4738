"""PC/SC card readers (NFC and contact IC) through pyscard, behind a small asyncio face.

Shape (see ``drivers.base``)::

    async with CardReaderMonitor(CardReaderConfig()) as monitor:
        async for event in monitor.events():
            ...  # CardInserted / CardRemoved / CardError / HealthChanged

One monitor watches every PC/SC reader whose name matches ``reader_name_pattern``; the
``device_id`` of each event is the reader name pcscd gives (stable for a reader on a given port).

How it works: a worker thread runs a plain ``SCardGetStatusChange`` loop (not pyscard's
``CardMonitor``, whose thread dies for good when pcscd restarts). It watches the
``\\\\?PnP?\\Notification`` pseudo-reader for reader hotplug, re-lists readers after every wake-up,
and re-establishes the PC/SC context after any error other than a timeout, so it survives pcscd
being killed and restarted. When a card arrives the same thread connects, reads the UID
(``FF CA 00 00 00``) and the member number (see below), and hands finished events to the event loop
with ``loop.call_soon_threadsafe``. Nothing on the event loop blocks.

Member number, where the card carries one (tried in this order):

a) ISO 7816 application: ``SELECT`` by AID (``00 A4 04 00 Lc AID``, default ``MEMBERGATE_AID``)
   then ``READ BINARY`` (``00 B0 00 00 Le``) of the application's current file, which holds the
   member number as ASCII digits (padding ``00``/``FF``/space allowed).
b) MIFARE Classic via PC/SC part 3: load key (``FF 82``), authenticate the block with key A or B
   (``FF 86``), read 16 bytes (``FF B0``); the block holds ASCII digits, padded the same way.

T=0 answers ``61xx`` (fetched with GET RESPONSE) and ``6Cxx`` (command resent with ``Le=xx``) are
handled for every command. Outcomes:

- a card with a UID and no member data → ``CardInserted(member_number=None)``;
- a card that answers neither the UID command nor any member application (an unknown card)
  → ``CardError`` ("card not recognised ...");
- our ISO application is on the card but its file is unreadable or not a member number, or a MIFARE
  block authenticates but cannot be read → ``CardError``;
- the card leaves or stops answering mid-read → ``CardError`` ("card removed or lost contact during
  read ...") followed by ``CardRemoved`` once pcscd sees it gone.

Health: a reader that appears is ``CONNECTED``, one that disappears is ``DISCONNECTED``; when pcscd
goes away every known reader (and the pseudo-device ``PCSCD_DEVICE_ID``) turns ``ERROR`` and is
set back when pcscd returns.

``SimulatedCardReader`` has the same face for demos and tests of the edge
(``await sim.tap(uid, member_number=...)``, ``await sim.remove()``).

pyscard is imported lazily, so the helpers and the simulated reader work without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from drivers.base import (
    CardError,
    CardInserted,
    CardRemoved,
    DeviceKind,
    DeviceStatus,
    EventChannel,
    Health,
    HealthChanged,
)

log = logging.getLogger(__name__)

CardReaderEvent = CardInserted | CardRemoved | CardError | HealthChanged

#: Default AID of the membergate member application: F0 (proprietary, non-registered) + "MEMBER".
MEMBERGATE_AID = bytes.fromhex("F04D454D424552")
#: MIFARE Classic factory transport key.
MIFARE_DEFAULT_KEY = bytes.fromhex("FFFFFFFFFFFF")
#: ``device_id`` of health events about the PC/SC service itself (pcscd reachable or not).
PCSCD_DEVICE_ID = "pcscd"
#: The pseudo-reader whose state changes when readers are added or removed.
PNP_NOTIFICATION = "\\\\?PnP?\\Notification"

_MAX_EXCHANGES = 64  # commands sent for one APDU, counting GET RESPONSE and 6Cxx resends
_MAX_RESPONSE = 65536
_UID_LENGTHS = (4, 7, 10)


# --------------------------------------------------------------------------------------------
# UID helpers


def normalize_uid(value: bytes | bytearray | Sequence[int] | str) -> str:
    """UID as upper-case hex, first byte first: ``b"\\x04\\xa1"`` / ``"04:a1"`` → ``"04A1"``.

    A string is read as hex; separators (space, ``:``, ``-``) and a ``0x`` prefix are dropped.
    """
    if isinstance(value, str):
        text = value.strip()
        if text[:2].lower() == "0x":
            text = text[2:]
        text = re.sub(r"[\s:\-]", "", text)
        if not text or len(text) % 2 or not re.fullmatch(r"[0-9A-Fa-f]+", text):
            raise ValueError(f"not a hex UID: {value!r}")
        return text.upper()
    raw = bytes(value)
    if not raw:
        raise ValueError("empty UID")
    return raw.hex().upper()


def uid_from_keyboard_reader(
    text: str, *, byte_length: int | None = None, byte_reversed: bool = True
) -> str:
    """Normalise what a keyboard-style RFID reader types to the form of ``normalize_uid``.

    Such readers usually type the UID as a decimal number of the bytes taken last byte first
    (UID ``04 A1 B2 C3`` is typed ``3283263748``, i.e. ``0xC3B2A104``), often zero-padded to 10
    digits. ``byte_length`` is the UID length in bytes; by default the smallest of 4, 7 or 10 that
    holds the number. Set ``byte_reversed=False`` for readers that type the bytes in card order.
    """
    digits = text.strip()
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"keyboard reader output is not decimal digits: {text!r}")
    number = int(digits)
    if byte_length is None:
        needed = max(1, (number.bit_length() + 7) // 8)
        byte_length = next((n for n in _UID_LENGTHS if n >= needed), needed)
    try:
        raw = number.to_bytes(byte_length, "big")
    except OverflowError:
        raise ValueError(f"{text!r} does not fit in a {byte_length}-byte UID") from None
    return normalize_uid(raw[::-1] if byte_reversed else raw)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class CardReaderConfig:
    """Settings of a card reader monitor; every default works for a demo."""

    #: Regular expression (``re.search``) a reader name must match; empty: every reader.
    reader_name_pattern: str = ""
    #: Read a member number from the card (ISO application, then MIFARE block).
    read_member_number: bool = True
    #: AID of the member application on ISO 7816 cards; empty: skip the ISO step.
    member_aid: bytes = MEMBERGATE_AID
    #: ``Le`` of the READ BINARY of the member file (0 means "up to 256 bytes").
    member_file_length: int = 0
    #: MIFARE Classic key for the member block; ``mifare_block=None`` skips the MIFARE step.
    mifare_key: bytes = MIFARE_DEFAULT_KEY
    mifare_key_type: Literal["A", "B"] = "A"
    mifare_block: int | None = 4
    #: Seconds one ``SCardGetStatusChange`` waits before the loop looks again.
    poll_timeout: float = 1.0
    #: Seconds between attempts to reach pcscd while it is away.
    retry_interval: float = 0.5

    def __post_init__(self) -> None:
        re.compile(self.reader_name_pattern)
        if self.member_aid and not 5 <= len(self.member_aid) <= 16:
            raise ValueError("member_aid must be 5 to 16 bytes")
        if not 0 <= self.member_file_length <= 255:
            raise ValueError("member_file_length must be 0..255")
        if len(self.mifare_key) != 6:
            raise ValueError("mifare_key must be 6 bytes")
        if self.mifare_key_type not in ("A", "B"):
            raise ValueError("mifare_key_type must be 'A' or 'B'")
        if self.mifare_block is not None and not 0 <= self.mifare_block <= 255:
            raise ValueError("mifare_block must be 0..255")
        if self.poll_timeout <= 0 or self.retry_interval <= 0:
            raise ValueError("poll_timeout and retry_interval must be positive")

    def matches(self, reader_name: str) -> bool:
        return re.search(self.reader_name_pattern, reader_name) is not None


# --------------------------------------------------------------------------------------------
# APDU layer: pure functions over a ``transmit`` callable, usable (and tested) without pyscard.

#: Sends one command APDU and returns the raw response (data + SW1 SW2).
Transmit = Callable[[bytes], bytes]


class CardReadError(Exception):
    """Reading a card failed; ``reason`` is what ``CardError`` reports."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Response:
    data: bytes
    sw1: int
    sw2: int

    @property
    def sw(self) -> int:
        return self.sw1 << 8 | self.sw2

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    @classmethod
    def parse(cls, raw: bytes, command: bytes) -> Response:
        if not raw:  # not even a status word: the card left (vpcd reports it this way)
            raise CardReadError(
                f"card removed or lost contact during read ({_name(command)}): no answer"
            )
        if len(raw) < 2:
            raise CardReadError(f"card gave a short answer {raw.hex().upper()} to {_name(command)}")
        return cls(raw[:-2], raw[-2], raw[-1])


def _name(apdu: bytes) -> str:
    return f"command {apdu[:2].hex(' ').upper()}"


def with_le(apdu: bytes, le: int) -> bytes:
    """The same short APDU with its ``Le`` set to ``le`` (added when the command has none)."""
    if len(apdu) < 4:
        raise ValueError("APDU shorter than its header")
    if len(apdu) == 4:  # case 1
        return apdu + bytes([le])
    if len(apdu) == 5:  # case 2
        return apdu[:4] + bytes([le])
    lc = apdu[4]
    if lc and len(apdu) == 5 + lc:  # case 3
        return apdu + bytes([le])
    if lc and len(apdu) == 6 + lc:  # case 4
        return apdu[:-1] + bytes([le])
    raise ValueError(f"not a short APDU: {apdu.hex()}")


def transceive(transmit: Transmit, apdu: bytes) -> Response:
    """Send ``apdu`` and follow T=0 procedure bytes.

    ``6Cxx`` (wrong length): the command is sent again with ``Le=xx``.
    ``61xx`` (more data): GET RESPONSE ``00 C0 00 00 xx`` until the card gives a final status;
    the data of every part is joined.
    """
    command = apdu
    data = bytearray()
    resent = False
    for _ in range(_MAX_EXCHANGES):
        response = Response.parse(transmit(command), command)
        if response.sw1 == 0x6C and not resent:
            command = with_le(command, response.sw2)
            resent = True
            continue
        data += response.data
        if len(data) > _MAX_RESPONSE:
            raise CardReadError(f"card answered {_name(apdu)} with more than {_MAX_RESPONSE} bytes")
        if response.sw1 == 0x61:
            command = bytes([0x00, 0xC0, 0x00, 0x00, response.sw2])
            resent = False
            continue
        return Response(bytes(data), response.sw1, response.sw2)
    raise CardReadError(f"card kept answering {_name(apdu)} with 61xx/6Cxx")


def parse_member_number(data: bytes) -> str | None:
    """ASCII digits padded with ``00``, ``FF`` or spaces → the digits; anything else → None."""
    text = data.rstrip(b"\x00\xff ").lstrip(b" ")
    if not text or len(text) > 32:
        return None
    if not all(0x30 <= b <= 0x39 for b in text):
        return None
    return text.decode("ascii")


def read_uid(transmit: Transmit) -> tuple[str | None, int]:
    """UID through ``FF CA 00 00 00``; returns (uid or None, status word)."""
    response = transceive(transmit, bytes.fromhex("FFCA000000"))
    if response.ok and 1 <= len(response.data) <= 16:
        return normalize_uid(response.data), response.sw
    return None, response.sw


def read_member_number_iso(transmit: Transmit, aid: bytes, le: int = 0) -> str | None:
    """SELECT the member application by AID and READ BINARY its file.

    None when the card has no such application; ``CardReadError`` when it has it but the file
    cannot be read or does not hold a member number.
    """
    select = transceive(transmit, bytes([0x00, 0xA4, 0x04, 0x00, len(aid)]) + aid)
    if not select.ok:
        return None
    read = transceive(transmit, bytes([0x00, 0xB0, 0x00, 0x00, le]))
    if not (read.ok or (read.sw1 == 0x62 and read.data)):
        raise CardReadError(
            f"member application {aid.hex().upper()} selected but READ BINARY "
            f"answered {read.sw:04X}"
        )
    number = parse_member_number(read.data)
    if number is None:
        raise CardReadError(
            f"member file of application {aid.hex().upper()} holds no member number "
            f"({len(read.data)} bytes)"
        )
    return number


def read_member_number_mifare(
    transmit: Transmit, key: bytes, block: int, key_type: Literal["A", "B"] = "A"
) -> str | None:
    """Member number from a MIFARE Classic block via PC/SC part 3 storage-card commands.

    None when the reader cannot load the key, the card is not MIFARE Classic, the key does not
    open the block, or the block holds no digits (a blank card); ``CardReadError`` when the block
    authenticates but the read fails.
    """
    load = transceive(transmit, bytes([0xFF, 0x82, 0x00, 0x00, 0x06]) + key)
    if not load.ok:
        return None
    auth = transceive(
        transmit,
        bytes.fromhex("FF860000050100") + bytes([block, 0x60 if key_type == "A" else 0x61, 0x00]),
    )
    if not auth.ok:
        return None
    read = transceive(transmit, bytes([0xFF, 0xB0, 0x00, block, 0x10]))
    if not read.ok or len(read.data) != 16:
        raise CardReadError(
            f"MIFARE block {block} authenticated but read answered {read.sw:04X} "
            f"with {len(read.data)} bytes"
        )
    return parse_member_number(read.data)


@dataclass(frozen=True, slots=True)
class CardReading:
    uid: str
    member_number: str | None


def read_card(transmit: Transmit, config: CardReaderConfig) -> CardReading:
    """UID and member number of the card behind ``transmit``.

    ``uid`` is ``""`` for a card that gives no UID but carries a member number (a contact card).
    Raises ``CardReadError`` for an unknown card or a failed read.
    """
    uid, uid_sw = read_uid(transmit)
    member_number: str | None = None
    if config.read_member_number:
        if config.member_aid:
            member_number = read_member_number_iso(
                transmit, config.member_aid, config.member_file_length
            )
        if member_number is None and config.mifare_block is not None:
            member_number = read_member_number_mifare(
                transmit, config.mifare_key, config.mifare_block, config.mifare_key_type
            )
    if uid is None and member_number is None:
        raise CardReadError(
            f"card not recognised: no UID (FF CA answered {uid_sw:04X}) and no member data"
        )
    return CardReading(uid or "", member_number)


# --------------------------------------------------------------------------------------------
# The common face of real and simulated readers


class CardReaderSource(Protocol):
    """What the edge needs from a card reader source (real or simulated)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def events(self) -> AsyncIterator[CardReaderEvent]: ...

    def list_readers(self) -> list[str]: ...

    @property
    def status(self) -> Mapping[str, DeviceStatus]: ...



def _reader_names(statuses: Mapping[str, DeviceStatus]) -> list[str]:
    return sorted(
        name
        for name, status in statuses.items()
        if name != PCSCD_DEVICE_ID and status.health is not Health.DISCONNECTED
    )


# --------------------------------------------------------------------------------------------
# The real monitor


def _scard() -> Any:
    try:
        from smartcard import scard
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "pyscard is not installed: pip install 'membergate[hardware]' "
            "(needs libpcsclite-dev and swig to build)"
        ) from exc
    return scard


async def discover(config: CardReaderConfig | None = None) -> list[str]:
    """Names of the PC/SC readers attached now (matching the config's pattern)."""
    config = config or CardReaderConfig()

    def list_now() -> list[str]:
        sc = _scard()
        rv, context = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
        if rv != sc.SCARD_S_SUCCESS:
            raise ConnectionError(f"pcscd unreachable: {sc.SCardGetErrorMessage(rv)}")
        try:
            rv, names = sc.SCardListReaders(context, [])
            if rv == sc.SCARD_E_NO_READERS_AVAILABLE:
                return []
            if rv != sc.SCARD_S_SUCCESS:
                raise ConnectionError(f"cannot list readers: {sc.SCardGetErrorMessage(rv)}")
            return [str(n) for n in names if config.matches(str(n))]
        finally:
            sc.SCardReleaseContext(context)

    return await asyncio.to_thread(list_now)


class _ServiceLost(Exception):
    pass


class _PcscWatcher:
    """The worker thread's state and loop. Only this class touches pyscard."""

    def __init__(self, config: CardReaderConfig, emit: Callable[[CardReaderEvent], None]) -> None:
        self.config = config
        self.emit = emit
        self.stopping = threading.Event()
        self.context: int | None = None
        self.health: dict[str, Health] = {}
        self.card_present: dict[str, bool] = {}
        self.reader_state: dict[str, int] = {}

    # -- health bookkeeping (worker thread only)

    def set_health(self, device_id: str, health: Health, detail: str = "") -> None:
        if self.health.get(device_id) is health:
            return
        self.health[device_id] = health
        log.info("card reader %s: %s %s", device_id, health.value, detail)
        self.emit(HealthChanged(DeviceStatus(device_id, DeviceKind.CARD_READER, health, detail)))

    def service_lost(self, reason: str) -> None:
        for name, present in list(self.card_present.items()):
            if present:
                self.emit(CardRemoved(name))
        self.card_present.clear()
        self.reader_state.clear()
        for name in list(self.health):
            if name != PCSCD_DEVICE_ID:
                self.set_health(name, Health.ERROR, reason)
        self.set_health(PCSCD_DEVICE_ID, Health.ERROR, reason)

    def sync_readers(self, names: list[str]) -> None:
        listed = set(names)
        for name in list(self.health):  # readers gone first, then readers new
            if name == PCSCD_DEVICE_ID or name in listed:
                continue
            if self.card_present.pop(name, False):
                self.emit(CardRemoved(name))
            self.reader_state.pop(name, None)
            self.set_health(name, Health.DISCONNECTED, "reader gone")
            del self.health[name]
        for name in names:
            self.set_health(name, Health.CONNECTED)

    # -- the loop

    def run(self) -> None:
        sc = _scard()
        while not self.stopping.is_set():
            rv, context = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
            if rv != sc.SCARD_S_SUCCESS:
                self.service_lost(f"pcscd unreachable: {sc.SCardGetErrorMessage(rv)}")
                self.stopping.wait(self.config.retry_interval)
                continue
            self.context = context
            try:
                self.set_health(PCSCD_DEVICE_ID, Health.CONNECTED)
                self.watch(sc, context)
            except _ServiceLost as exc:
                self.service_lost(str(exc))
                self.stopping.wait(self.config.retry_interval)
            except Exception as exc:  # never let the thread die
                log.exception("card reader monitor: unexpected error")
                self.service_lost(f"unexpected error: {exc!r}")
                self.stopping.wait(self.config.retry_interval)
            finally:
                self.context = None
                sc.SCardReleaseContext(context)

    def watch(self, sc: Any, context: int) -> None:
        timeout_ms = max(1, int(self.config.poll_timeout * 1000))
        pnp_state = sc.SCARD_STATE_UNAWARE
        while not self.stopping.is_set():
            rv, listed = sc.SCardListReaders(context, [])
            if rv == sc.SCARD_E_NO_READERS_AVAILABLE:
                listed = []
            elif rv != sc.SCARD_S_SUCCESS:
                raise _ServiceLost(f"pcscd lost: {sc.SCardGetErrorMessage(rv)}")
            names = [str(n) for n in listed if self.config.matches(str(n))]
            self.sync_readers(names)
            query = [(PNP_NOTIFICATION, pnp_state)] + [
                (name, self.reader_state.get(name, sc.SCARD_STATE_UNAWARE)) for name in names
            ]
            rv, states = sc.SCardGetStatusChange(context, timeout_ms, query)
            if rv in (sc.SCARD_E_TIMEOUT, sc.SCARD_E_CANCELLED, sc.SCARD_E_UNKNOWN_READER):
                continue
            if rv != sc.SCARD_S_SUCCESS:
                raise _ServiceLost(f"pcscd lost: {sc.SCardGetErrorMessage(rv)}")
            for name, event_state, atr in states:
                state = int(event_state) & ~sc.SCARD_STATE_CHANGED
                if name == PNP_NOTIFICATION:
                    pnp_state = state
                    continue
                if name not in self.health:
                    continue
                self.reader_changed(sc, context, str(name), state, bytes(atr))
                self.reader_state[name] = state

    def reader_changed(self, sc: Any, context: int, name: str, state: int, atr: bytes) -> None:
        was_present = self.card_present.get(name, False)
        previous = self.reader_state.get(name)
        present = bool(state & sc.SCARD_STATE_PRESENT)
        counter_moved = previous is not None and (previous >> 16) != (state >> 16)
        if was_present and (not present or counter_moved):
            self.emit(CardRemoved(name))
            was_present = False
        self.card_present[name] = present
        if present and not was_present:
            if state & sc.SCARD_STATE_MUTE:
                self.emit(CardError(name, "card does not answer (mute): no ATR"))
            else:
                self.read_and_emit(sc, context, name, atr)

    def read_and_emit(self, sc: Any, context: int, name: str, atr: bytes) -> None:
        rv, handle, protocol = sc.SCardConnect(
            context, name, sc.SCARD_SHARE_SHARED, sc.SCARD_PROTOCOL_T0 | sc.SCARD_PROTOCOL_T1
        )
        if rv != sc.SCARD_S_SUCCESS:
            self.emit(CardError(name, _connect_reason(sc, rv)))
            return
        try:

            def transmit(apdu: bytes) -> bytes:
                rv, response = sc.SCardTransmit(handle, protocol, list(apdu))
                if rv != sc.SCARD_S_SUCCESS:
                    raise CardReadError(_transmit_reason(sc, rv, apdu))
                return bytes(response)

            reading = read_card(transmit, self.config)
        except CardReadError as exc:
            log.warning("card reader %s: %s", name, exc.reason)
            self.emit(CardError(name, exc.reason))
        except Exception as exc:
            log.exception("card reader %s: unexpected error reading card", name)
            self.emit(CardError(name, f"unexpected error reading card: {exc!r}"))
        else:
            self.emit(CardInserted(name, reading.uid, atr.hex().upper(), reading.member_number))
        finally:
            sc.SCardDisconnect(handle, sc.SCARD_LEAVE_CARD)

    def cancel(self) -> None:
        """Wake a waiting ``SCardGetStatusChange`` (called from another thread)."""
        context = self.context
        if context is not None:
            _scard().SCardCancel(context)


def _removed_codes(sc: Any) -> set[int]:
    return {
        sc.SCARD_W_REMOVED_CARD,
        sc.SCARD_E_NO_SMARTCARD,
        sc.SCARD_W_RESET_CARD,
        sc.SCARD_W_UNPOWERED_CARD,
        sc.SCARD_W_UNRESPONSIVE_CARD,
        sc.SCARD_E_NOT_TRANSACTED,
    }


def _service_codes(sc: Any) -> set[int]:
    return {sc.SCARD_E_NO_SERVICE, sc.SCARD_F_COMM_ERROR, sc.SCARD_E_SERVICE_STOPPED}


def _connect_reason(sc: Any, rv: int) -> str:
    message = sc.SCardGetErrorMessage(rv)
    if rv in _removed_codes(sc):
        return f"card removed before it could be read: {message}"
    if rv == sc.SCARD_E_SHARING_VIOLATION:
        return f"reader in exclusive use by another application: {message}"
    if rv in _service_codes(sc):
        return f"pcscd went away before the card could be read: {message}"
    return f"cannot connect to card: {message}"


def _transmit_reason(sc: Any, rv: int, apdu: bytes) -> str:
    message = sc.SCardGetErrorMessage(rv)
    if rv in _removed_codes(sc):
        return f"card removed or lost contact during read ({_name(apdu)}): {message}"
    if rv in _service_codes(sc):
        return f"pcscd went away during read ({_name(apdu)}): {message}"
    return f"card read failed ({_name(apdu)}): {message}"


class CardReaderMonitor:
    """Every matching PC/SC reader: card events and health, as an asyncio stream.

    Use ``async with monitor:`` for its lifetime and ``async for event in monitor.events():`` (one
    consumer) for the events; the stream ends when the monitor is closed.
    """

    def __init__(self, config: CardReaderConfig | None = None) -> None:
        self.config = config or CardReaderConfig()
        self._channel: EventChannel[CardReaderEvent] | None = None
        self._watcher: _PcscWatcher | None = None
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("card reader monitor already running")
        _scard()  # fail here, not in the thread, when pyscard is missing
        loop = asyncio.get_running_loop()
        channel = EventChannel[CardReaderEvent]()

        def emit(event: CardReaderEvent) -> None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(channel.put, event)

        self._channel = channel
        self._watcher = _PcscWatcher(self.config, emit)
        self._thread = threading.Thread(
            target=self._watcher.run, name="card-reader-monitor", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        watcher, thread, channel = self._watcher, self._thread, self._channel
        if watcher is None or thread is None or channel is None:
            return
        watcher.stopping.set()
        await asyncio.to_thread(watcher.cancel)
        await asyncio.to_thread(thread.join, self.config.poll_timeout + 5)
        if thread.is_alive():
            log.warning("card reader monitor thread did not stop in time")
        self._watcher = self._thread = None
        # Let events the thread queued just before stopping reach the channel first.
        await asyncio.sleep(0)
        channel.close()

    def events(self) -> AsyncIterator[CardReaderEvent]:
        if self._channel is None:
            raise RuntimeError("open the monitor with 'async with' first")
        return self._channel.stream()

    def list_readers(self) -> list[str]:
        """Readers seen attached (as of the events delivered to the loop so far)."""
        return _reader_names(self._channel.statuses) if self._channel else []

    @property
    def status(self) -> Mapping[str, DeviceStatus]:
        """Last status of each reader, and of pcscd itself under ``PCSCD_DEVICE_ID``."""
        return dict(self._channel.statuses) if self._channel else {}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# --------------------------------------------------------------------------------------------
# Simulated reader for demos and tests of the edge


@dataclass(slots=True)
class SimulatedCardReader:
    """A card reader without hardware, with the face of ``CardReaderMonitor``.

    ``await sim.tap(uid, member_number=...)`` puts a card on the reader (taking off the one there),
    ``await sim.remove()`` takes it off, ``await sim.fail(reason)`` reports an unreadable card.
    """

    device_id: str = "Simulated PCD 00 00"
    atr: str = "3B8F8001804F0CA000000306030001000000006A"
    _channel: EventChannel[CardReaderEvent] | None = field(default=None, init=False)
    _card_present: bool = field(default=False, init=False)

    async def __aenter__(self) -> Self:
        self._channel = EventChannel[CardReaderEvent]()
        self._card_present = False
        self._health(Health.CONNECTED)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            self._health(Health.DISCONNECTED, "closed")
            self._channel.close()
            self._channel = None

    def _open_channel(self) -> EventChannel[CardReaderEvent]:
        if self._channel is None:
            raise RuntimeError("open the simulated reader with 'async with' first")
        return self._channel

    def _health(self, health: Health, detail: str = "") -> None:
        status = DeviceStatus(self.device_id, DeviceKind.CARD_READER, health, detail)
        self._open_channel().put(HealthChanged(status))

    async def tap(
        self, uid: bytes | Sequence[int] | str, member_number: str | None = None
    ) -> CardInserted:
        channel = self._open_channel()
        if self._card_present:
            await self.remove()
        event = CardInserted(self.device_id, normalize_uid(uid), self.atr, member_number)
        self._card_present = True
        channel.put(event)
        return event

    async def remove(self) -> None:
        channel = self._open_channel()
        if self._card_present:
            self._card_present = False
            channel.put(CardRemoved(self.device_id))

    async def fail(self, reason: str) -> None:
        self._open_channel().put(CardError(self.device_id, reason))

    def events(self) -> AsyncIterator[CardReaderEvent]:
        return self._open_channel().stream()

    def list_readers(self) -> list[str]:
        return _reader_names(self._channel.statuses) if self._channel else []

    @property
    def status(self) -> Mapping[str, DeviceStatus]:
        return dict(self._channel.statuses) if self._channel else {}
