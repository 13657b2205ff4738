"""What every domain operation needs to know about where and when it runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from edge.config import EdgeConfig
from protocol.hlc import HybridClock


@dataclass
class StoreContext:
    config: EdgeConfig
    clock: HybridClock
    epoch: int
    # Set by tests and tools that replay a day (expiry, birthdays); None means the real calendar.
    today_override: date | None = None

    @property
    def store_id(self) -> str:
        return self.config.store.store_id

    @property
    def currency(self) -> str:
        return self.config.store.currency

    def now(self) -> datetime:
        return datetime.now(ZoneInfo(self.config.store.timezone))

    def today(self) -> date:
        # The store's own calendar day decides expiry and birthdays, not UTC's.
        return self.today_override or self.now().date()
