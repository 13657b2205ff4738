"""The ``membergate-*`` commands run as an operator runs them: a process of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(*args: str, env: dict[str, str] | None = None, limit_s: float = 120
               ) -> subprocess.CompletedProcess[str]:
    """``python args…`` from the checkout, output captured."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=limit_s, check=False)


def run_cli(module: str, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """``python -m module args…``: ``edge.cli`` is ``membergate-edge``, ``hub.cli``
    ``membergate-hub``."""
    return run_python("-m", module, *args, env=env)


def refused_in_one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """What a user's mistake must give: a non-zero exit and a message, not a traceback.
    Returns the message (stderr)."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip(), "no message at all"
    return proc.stderr
