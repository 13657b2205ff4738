"""Where fleet-level tools plug into ``membergate-hub``.

The demo fleet and the drain bench run stores and a hub together, so they need both ``edge``
and ``hub``; they live above both, in ``provisioning``, and the hub never imports them. They
are found by entry point instead (``pyproject.toml``, ``[project.entry-points]``): the hub's
command line offers whatever is installed, and a hub installed without them simply lacks them.
"""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

COMMANDS = "membergate.hub_commands"
BENCH_PARTS = "membergate.hub_bench"


class HubCommand(Protocol):
    """A ``membergate-hub`` subcommand contributed from outside the hub."""

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class BenchPart(Protocol):
    """Figures added to ``membergate-hub bench``: ``(events, workdir, seed) -> figures``; the
    figures say themselves when the part could not run (``"name": "unavailable: ..."``)."""

    def __call__(self, events: int, workdir: Path, seed: int) -> dict[str, Any]: ...


def commands() -> dict[str, HubCommand]:
    found: dict[str, HubCommand] = {ep.name: ep.load() for ep in entry_points(group=COMMANDS)}
    return found


def bench_parts() -> dict[str, BenchPart]:
    found: dict[str, BenchPart] = {ep.name: ep.load() for ep in entry_points(group=BENCH_PARTS)}
    return found
