"""Progress of long work on stderr, so a bench that runs for a minute is not silent and its
figures on stdout stay one clean JSON object."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """``phase("seeding")`` prints ``[1/6] seeding``; ``step(done, total)`` prints the phase's
    percentage each time it passes another tenth."""

    def __init__(self, phases: int, *, label: str = "bench", out: TextIO | None = None) -> None:
        self.phases = phases
        self.label = label
        self.out = out if out is not None else sys.stderr
        self._n = 0
        self._what = ""
        self._shown = 0

    def say(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.out, flush=True)

    def phase(self, what: str) -> None:
        self._n += 1
        self._what, self._shown = what, 0
        self.say(f"[{self._n}/{self.phases}] {what}")

    def step(self, done: int, total: int) -> None:
        if total <= 0:
            return
        tenth = min(10, done * 10 // total)
        if tenth > self._shown:
            self._shown = tenth
            self.say(f"[{self._n}/{self.phases}] {self._what}: {tenth * 10}%")
