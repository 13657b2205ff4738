"""The hub's one wall clock, so that tests and jobs agree on what "now" is."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
