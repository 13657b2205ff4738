"""Who is held out of a journey or a campaign: one draw the hub and every till compute alike.

SHA-256 of ``"<unit>:<member>"`` (the journey's or campaign's id, then the member's), its first
8 bytes as an unsigned integer, modulo 10,000: a member is held out when that falls below the
share in basis points. Deterministic (a re-run, a restart, a replay, a till offline all draw the
same members) and independent between units (another id, another draw)."""

from __future__ import annotations

import hashlib


def draw(text: str) -> int:
    """0..9,999 from ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 10_000


def held_out(unit: str, member_id: str, percent: int) -> bool:
    """Whether ``member_id`` is in the ``percent`` % that ``unit`` holds out."""
    return bool(percent) and draw(f"{unit}:{member_id}") < percent * 100
