"""Where and when an event happened, as its store counts: region, store-local date and hour."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hub.core.db import Tx
from hub.stores.registry import store_region, store_zone
from protocol.hlc import wall_ms

# (zone, minute since the epoch) -> (store-local date, hour). Every zone offset in use is a
# whole number of minutes, so one conversion serves a minute's events.
_LOCAL: dict[tuple[str, int], tuple[str, int]] = {}
_LOCAL_MAX = 200_000


def local_time(zone: str, hlc: int) -> tuple[str, int]:
    """The store-local ISO date and hour of an event's HLC wall time in ``zone``."""
    minute = wall_ms(hlc) // 60_000
    key = (zone, minute)
    hit = _LOCAL.get(key)
    if hit is None:
        at = datetime.fromtimestamp(minute * 60, ZoneInfo(zone))
        hit = (at.date().isoformat(), at.hour)
        if len(_LOCAL) >= _LOCAL_MAX:
            _LOCAL.clear()
        _LOCAL[key] = hit
    return hit


class Places:
    """Each store's region and zone, read once per page (``hub.stores.registry``)."""

    def __init__(self, tx: Tx, chain_zone: str) -> None:
        self._tx = tx
        self._chain_zone = chain_zone
        self._stores: dict[str, tuple[str | None, str]] = {}

    def of(self, store_id: str) -> tuple[str | None, str]:
        """(region, zone) of ``store_id``."""
        found = self._stores.get(store_id)
        if found is None:
            found = (store_region(self._tx, store_id),
                     store_zone(self._tx, store_id, self._chain_zone))
            self._stores[store_id] = found
        return found
