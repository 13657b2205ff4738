"""What the hub refused from a store, counted per store and reason (fleet status shows them)."""

from __future__ import annotations

import logging
from collections import Counter

from hub.core.db import HubDatabase, Tx

log = logging.getLogger("membergate.hub")


def record_refusal(tx: Tx, store_id: str, reason: str, detail: str) -> None:
    tx.execute(
        "INSERT INTO refusals(store_id, reason, count, last_detail) VALUES (?, ?, 1, ?)"
        " ON CONFLICT(store_id, reason) DO UPDATE SET count = refusals.count + 1,"
        " last_detail = excluded.last_detail",
        (store_id, reason, detail[:500]))


class Refusals:
    """Counts refusals in this run (status) and records each in the database (fleet view)."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.counts: Counter[str] = Counter()

    async def refuse(self, store_id: str, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        log.warning("refused from store %s: %s (%s)", store_id, reason, detail)
        await self.db.transaction(lambda tx: record_refusal(tx, store_id, reason, detail))
