"""Who is held out: a deterministic share of each journey's audience, and optionally one
chain-wide control group that no marketing reaches.

The draw hashes the journey and the member (SHA-256, first 8 bytes, modulo 10,000), so a re-run,
a restart or a replay of the log draws the same members, and two journeys draw independently
of each other. The chain's control group hashes the member alone (with a salt that names it),
so it is the same members for every journey: the chain can measure all its marketing at once.
"""

from __future__ import annotations

from protocol import holdout

JOURNEY = 1  # held out by the journey's own share
CONTROL = 2  # in the chain's control group


def held_out(journey_id: str, member_id: str, percent: int, control_percent: int = 0) -> int:
    """0 (treated), ``JOURNEY`` or ``CONTROL`` (``protocol.holdout``: the tills draw alike)."""
    if holdout.held_out("membergate-control", member_id, control_percent):
        return CONTROL
    if holdout.held_out(journey_id, member_id, percent):
        return JOURNEY
    return 0
