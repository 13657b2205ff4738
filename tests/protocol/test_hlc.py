from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.hlc import ClockSkewError, HybridClock, pack, unpack, wall_ms


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_pack_unpack() -> None:
    ts = pack(1_700_000_000_000, 5)
    assert unpack(ts) == (1_700_000_000_000, 5)
    assert wall_ms(ts) == 1_700_000_000_000
    assert pack(1, 0) > pack(0, 65_535)


def test_now_follows_the_wall_clock_and_counts_when_it_stands_still() -> None:
    pt = FakeClock(1_000)
    clock = HybridClock(physical_ms=pt)
    assert clock.now() == pack(1_000, 0)
    assert clock.now() == pack(1_000, 1)
    assert clock.now() == pack(1_000, 2)
    pt.ms = 1_005
    assert clock.now() == pack(1_005, 0)


def test_now_never_goes_backwards_when_the_wall_clock_does() -> None:
    pt = FakeClock(5_000)
    clock = HybridClock(physical_ms=pt)
    a = clock.now()
    pt.ms = 4_000  # NTP step back
    b = clock.now()
    assert b > a and unpack(b) == (5_000, 1)


def test_restored_clock_continues_after_its_last_timestamp() -> None:
    last = pack(9_000, 7)
    clock = HybridClock(physical_ms=FakeClock(1_000), last=last)
    assert clock.now() == pack(9_000, 8)
    assert clock.last == pack(9_000, 8)


def test_counter_overflow_steps_the_wall_part() -> None:
    clock = HybridClock(physical_ms=FakeClock(100), last=pack(100, 65_535))
    assert clock.now() == pack(101, 0)


def test_observe_moves_past_a_remote_timestamp() -> None:
    pt = FakeClock(1_000)
    clock = HybridClock(physical_ms=pt)
    clock.now()
    remote = pack(1_500, 3)
    assert clock.observe(remote) == pack(1_500, 4)
    assert clock.now() == pack(1_500, 5)
    # equal wall parts: the larger counter wins
    assert clock.observe(pack(1_500, 10)) == pack(1_500, 11)
    # a remote behind us does not pull us back
    assert clock.observe(pack(10, 0)) == pack(1_500, 12)
    pt.ms = 2_000
    assert clock.observe(pack(10, 0)) == pack(2_000, 0)


def test_observe_refuses_a_clock_too_far_ahead_and_stays_put() -> None:
    clock = HybridClock(physical_ms=FakeClock(1_000), max_drift_ms=500)
    before = clock.now()
    assert clock.observe(pack(1_500, 0)) == pack(1_500, 1)  # exactly at the limit is fine
    with pytest.raises(ClockSkewError, match="ahead"):
        clock.observe(pack(1_501 + 500, 0))
    assert clock.last == pack(1_500, 1) and clock.last > before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3_000), st.integers(0, 2_000),
                          st.integers(0, 5)), min_size=1, max_size=50))
def test_every_timestamp_is_greater_than_all_before_it(
    steps: list[tuple[bool, int, int, int]],
) -> None:
    pt = FakeClock(1_000)
    clock = HybridClock(physical_ms=pt, max_drift_ms=10_000)
    seen = 0
    for is_remote, wall, remote_ms, remote_c in steps:
        pt.ms = wall
        if is_remote:
            remote = pack(remote_ms, remote_c)
            ts = clock.observe(remote)
            assert ts > remote
        else:
            ts = clock.now()
            assert wall_ms(ts) >= wall
        assert ts > seen
        seen = ts
