"""Hybrid logical clock (Kulkarni et al.): physical milliseconds plus a logical counter.

An HLC timestamp is one ``int``: ``wall_ms << 16 | counter``. It orders profile edits across
stores whose clocks disagree, and never feeds ledger arithmetic. A remote timestamp too far ahead
of our wall clock is refused rather than dragging every later timestamp into the future.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

COUNTER_BITS = 16
_COUNTER_MASK = (1 << COUNTER_BITS) - 1
DEFAULT_MAX_DRIFT_MS = 60 * 60 * 1000  # an hour: wider than any store's clock should wander


class ClockSkewError(ValueError):
    """A remote HLC is further ahead of our physical clock than we accept."""


def pack(wall_ms: int, counter: int) -> int:
    return wall_ms << COUNTER_BITS | counter


def unpack(ts: int) -> tuple[int, int]:
    return ts >> COUNTER_BITS, ts & _COUNTER_MASK


def wall_ms(ts: int) -> int:
    return ts >> COUNTER_BITS


class HybridClock:
    def __init__(
        self,
        *,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        physical_ms: Callable[[], int] | None = None,
        last: int = 0,
    ) -> None:
        self._physical = physical_ms or (lambda: time.time_ns() // 1_000_000)
        self._max_drift = max_drift_ms
        self._last = last  # restored from storage so a restart never goes backwards
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A timestamp greater than every one this clock issued or observed."""
        with self._lock:
            pt = self._physical()
            l_ms, c = unpack(self._last)
            if pt > l_ms:
                self._last = pack(pt, 0)
            else:
                self._last = self._bump(l_ms, c)
            return self._last

    def observe(self, remote: int) -> int:
        """Merge a timestamp seen from another node; returns the new local timestamp."""
        with self._lock:
            pt = self._physical()
            r_ms, r_c = unpack(remote)
            if r_ms - pt > self._max_drift:
                raise ClockSkewError(
                    f"remote clock is {r_ms - pt} ms ahead (limit {self._max_drift} ms)"
                )
            l_ms, l_c = unpack(self._last)
            top = max(pt, l_ms, r_ms)
            if top == l_ms == r_ms:
                self._last = self._bump(top, max(l_c, r_c))
            elif top == l_ms:
                self._last = self._bump(top, l_c)
            elif top == r_ms:
                self._last = self._bump(top, r_c)
            else:
                self._last = pack(top, 0)
            return self._last

    @staticmethod
    def _bump(ms: int, counter: int) -> int:
        if counter >= _COUNTER_MASK:  # 65k events in one millisecond: step the wall part
            return pack(ms + 1, 0)
        return pack(ms, counter + 1)
