"""A private pcscd with the vsmartcard virtual reader (vpcd), and virtual cards the tests run.

The real pyscard → pcscd → vpcd path is exercised end to end: the test process talks PC/SC to a
pcscd of its own, and a ``VirtualCard`` (Python, in a thread) plays the card on vpcd's TCP socket.

The pcscd and the cards live in ``drivers.vpcd_card`` (``membergate-edge bench-devices`` uses them
too; its docstring tells how the private pcscd is isolated). This module keeps the names the tests
use (``PcscdHarness``, ``HarnessError``) and adds the cards that misbehave on purpose.
Several harnesses may live in one test process (the driver tests' and a test module's own): the
one started last is the one the process's PC/SC clients reach until it is closed.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.vpcd_card import (
    ATR_CONTACT_T0,
    ATR_ISO14443_4,
    ATR_MIFARE_CLASSIC_1K,
    SW_FILE_NOT_FOUND,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    CardBehaviour,
    IsoMemberCard,
    MifareClassicCard,
    UidCard,
    VirtualCard,
    VirtualPcscd,
    VpcdError,
    command_le,
)

PcscdHarness = VirtualPcscd
HarnessError = VpcdError

__all__ = [
    "ATR_CONTACT_T0",
    "ATR_ISO14443_4",
    "ATR_MIFARE_CLASSIC_1K",
    "CardBehaviour",
    "HarnessError",
    "IsoMemberCard",
    "MifareClassicCard",
    "PcscdHarness",
    "T0GetResponseCard",
    "UidCard",
    "UnknownCard",
    "VanishingCard",
    "VirtualCard",
    "WrongLengthCard",
]


class T0GetResponseCard(CardBehaviour):
    """Wraps a card the T=0 way: data is announced with ``61xx`` and fetched by GET RESPONSE,
    ``chunk`` bytes at a time."""

    def __init__(self, inner: CardBehaviour, chunk: int = 3, atr: bytes = ATR_CONTACT_T0) -> None:
        self.inner = inner
        self.chunk = chunk
        self.atr = atr
        self.pending = b""
        self.final_sw = SW_OK
        self.get_responses = 0

    def reset(self) -> None:
        self.pending = b""
        self.inner.reset()

    def _announce(self) -> bytes:
        if self.pending:
            return bytes([0x61, min(len(self.pending), self.chunk)])
        return self.final_sw

    def respond(self, apdu: bytes) -> bytes | None:
        if apdu[1] == 0xC0 and len(apdu) == 5:
            self.get_responses += 1
            if not self.pending:
                return b"\x6f\x00"
            le = apdu[4] or 256
            out, self.pending = self.pending[:le], self.pending[le:]
            return out + self._announce()
        response = self.inner.respond(apdu)
        if response is None or len(response) <= 2:
            self.pending = b""
            return response
        self.pending, self.final_sw = response[:-2], response[-2:]
        return self._announce()


class WrongLengthCard(CardBehaviour):
    """Wraps a card that answers ``6Cxx`` (with xx the exact length) unless ``Le`` is exact."""

    def __init__(self, inner: CardBehaviour) -> None:
        self.inner = inner
        self.atr = inner.atr
        self.wrong_length_answers = 0

    def reset(self) -> None:
        self.inner.reset()

    def respond(self, apdu: bytes) -> bytes | None:
        le = command_le(apdu)
        response = self.inner.respond(apdu if le is None else apdu[:-1] + b"\x00")
        if response is None or le is None or len(response) <= 2:
            return response
        data = response[:-2]
        if le != len(data) and len(data) <= 255:
            self.wrong_length_answers += 1
            return bytes([0x6C, len(data)])
        return response


class UnknownCard(CardBehaviour):
    """A card nothing of ours understands: ``6A82`` to SELECT, ``6D00`` to everything else."""

    def __init__(self, atr: bytes = ATR_CONTACT_T0) -> None:
        self.atr = atr

    def respond(self, apdu: bytes) -> bytes | None:
        return SW_FILE_NOT_FOUND if apdu[1] == 0xA4 else SW_INS_NOT_SUPPORTED


class VanishingCard(CardBehaviour):
    """Wraps a card that is pulled away (socket closed, no answer) at the first command ``when``
    accepts: a card removed mid-read."""

    def __init__(self, inner: CardBehaviour, when: Callable[[bytes], bool]) -> None:
        self.inner = inner
        self.atr = inner.atr
        self.when = when

    def reset(self) -> None:
        self.inner.reset()

    def respond(self, apdu: bytes) -> bytes | None:
        if self.when(apdu):
            return None
        return self.inner.respond(apdu)
