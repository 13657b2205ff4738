"""Paging of the POS API's lists: ``limit`` and ``offset``, and where the next page starts."""

from __future__ import annotations

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def next_offset(offset: int, returned: int, total: int) -> int | None:
    """The ``offset`` of the next page, or None when this page reached the end."""
    return offset + returned if offset + returned < total else None
