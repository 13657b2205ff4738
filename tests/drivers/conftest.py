"""Fixtures shared by the driver tests. Add fixtures here; do not remove others'."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.vpcd import CardBehaviour, HarnessError, PcscdHarness, VirtualCard

# --------------------------------------------------------------------------------------------
# PC/SC: a private pcscd with vpcd readers, and virtual cards on them (tests/support/vpcd.py)


@pytest.fixture(scope="session")
def pcscd_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscdHarness]:
    """A pcscd of this test session's own, with the vpcd readers "Virtual PCD 00 00" and "… 01".

    Missing pcscd / vsmartcard-vpcd / pyscard fails the tests with a message; it never skips.
    """
    try:
        harness = PcscdHarness(tmp_path_factory.mktemp("pcscd"))
        harness.start()
    except (HarnessError, ImportError) as exc:
        pytest.fail(f"PC/SC test harness unavailable: {exc}", pytrace=False)
    try:
        yield harness
    finally:
        harness.close()


MakeVirtualCard = Callable[..., VirtualCard]


@pytest.fixture
def make_virtual_card(pcscd_harness: PcscdHarness) -> Iterator[MakeVirtualCard]:
    """Factory: ``make_virtual_card(behaviour, slot=0, insert=True)`` → ``VirtualCard``.

    pcscd is (re)started if a test left it stopped. At teardown every card is removed and the test
    waits until pcscd sees the readers empty, so the next test starts clean.
    """
    pcscd_harness.start()
    cards: list[VirtualCard] = []

    def make(behaviour: CardBehaviour, slot: int = 0, insert: bool = True) -> VirtualCard:
        card = VirtualCard(pcscd_harness, behaviour, slot)
        cards.append(card)
        if insert:
            card.insert()
        return card

    yield make
    for card in cards:
        card.remove()
    if pcscd_harness.pid is None:
        pcscd_harness.start()
    for slot in {card.slot for card in cards}:
        pcscd_harness.wait_card_state(slot, present=False)
