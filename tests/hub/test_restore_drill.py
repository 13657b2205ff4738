"""The restore drill, end to end through a real Mosquitto and the hub: back up a selling store,
keep selling, lose the box, restore it, drain — nothing acknowledged is lost, nothing applied
twice, and the restored box's new events are not taken for duplicates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge import backup
from edge.checkout import TenderRequest
from hub import backup as hub_backup
from hub.app import Hub
from hub.core.db import Tx
from hub.ledger import audit
from tests.edge.conftest import key, register, sell
from tests.hub.test_sync_e2e import drained, hub_config, start_store, wait_for
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

LINE = [("A", "grocery", 1, 10_000)]


@pytest.fixture
async def hub(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Hub]:
    async with Hub(hub_config(tmp_path, mosquitto)) as h:
        yield h


def _say(_message: str) -> None:
    pass


async def _hub_sales(hub: Hub, store: str) -> dict[str, Any]:
    def read(tx: Tx) -> dict[str, Any]:
        rows = tx.all("SELECT epoch, seq, event_id, type FROM events WHERE store_id = ?",
                      (store,))
        return {"sales": sorted(str(r[2]) for r in rows if r[3] == "sale.finalized"),
                "events": len(rows), "distinct_ids": len({r[2] for r in rows}),
                "epochs": sorted({int(r[0]) for r in rows})}
    return await hub.db.transaction(read)


async def test_back_up_keep_selling_lose_the_box_restore_and_drain(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    db = tmp_path / "S001" / "edge.db"
    copy = tmp_path / "backups" / "S001.db"
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        mid = (await register(a, "13700000001", name="王芳"))["member_id"]
        before = await sell(a, LINE, member_id=mid)
        await wait_for(lambda: drained(a), "the first sale at the hub")
        # Offline when the backup is taken: the backup holds a sale the hub has not got.
        mosquitto.kill()
        unsent = await sell(a, LINE, member_id=mid)
        taken = backup.backup(db, copy, _say)  # the gateway keeps running
        assert taken["unsent_events"] >= 1 and taken["store_id"] == "S001"
        mosquitto.start()
        await wait_for(lambda: drained(a), "the unsent sale at the hub")
        # Selling goes on after the backup: a top-up, a sale paid with points (from lots the
        # backup holds) and stored value, another sale. The hub gets all of it; the box is lost.
        await a.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=50_000)
        after = [await sell(a, [("B", "grocery", 1, 20_000)], member_id=mid, tenders=[
            TenderRequest(kind="points", points=150),
            TenderRequest(kind="stored_value", amount=19_850)])]
        after.append(await sell(a, LINE, member_id=mid))
        await wait_for(lambda: drained(a), "the later sales at the hub")
        lost = await a.member(mid)
        old_epoch = a.context.epoch
    finally:
        await a.close()
    held = await _hub_sales(hub, "S001")
    assert len(held["sales"]) == 4

    restored = backup.restore(copy, db, "S001", _say)
    assert restored["epoch"] > old_epoch and restored["old_epoch"] == old_epoch
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        assert a.context.epoch == restored["epoch"]

        async def recovered() -> bool:  # what the lost box did after the backup, taken back
            return bool(await a.member(mid) == lost)

        await wait_for(recovered, "the restored store to show the member as the lost box did")
        lots = await a.db.read(lambda c: c.execute(
            "SELECT sum(remaining) FROM point_lots WHERE member_id = ?", (mid,)).fetchone()[0])
        assert lots == lost["points_here"]  # the lots drawn after the backup drawn here too
        # The backup's unsent sale goes up again under its old epoch (the hub has it: once),
        # then the restored box sells under the new one.
        new = await sell(a, LINE, member_id=mid)
        await wait_for(lambda: drained(a), "the restored box drained")
        shown = await a.member(mid)
        status = await a.sync.status()  # type: ignore[union-attr]
        assert status.epoch == restored["epoch"] and status.outbox_depth == 0
        new_last = status.last_seq
    finally:
        await a.close()

    now = await _hub_sales(hub, "S001")
    assert len(now["sales"]) == 5  # the four before, the restored box's one: no more
    assert now["distinct_ids"] == now["events"]  # nothing applied twice
    assert now["epochs"] == [old_epoch, restored["epoch"]]
    check = await hub.db.transaction(audit.compare)
    assert check["mismatches"] == []
    earned = sum(s["points_earned"] for s in (before, unsent, *after, new))
    points, principal, bonus = (await hub.db.transaction(audit.balances))[mid]
    assert points == earned - 150 == shown["points"]
    assert principal + bonus == shown["stored_value"]["total"] == lost["stored_value"]["total"]

    def fleet(tx: Tx) -> tuple[int, int]:
        row = tx.one("SELECT epoch, (SELECT acked_seq FROM store_streams s WHERE s.store_id ="
                     " t.store_id AND s.epoch = t.epoch) FROM stores t WHERE store_id = 'S001'")
        return int(row[0]), int(row[1])
    assert await hub.db.transaction(fleet) == (restored["epoch"], new_last)


async def test_a_backup_holding_what_the_hub_never_got_delivers_it_after_the_restore(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    """The box is lost while offline: its last sales are only in the backup. Restored, it sends
    them under their old epoch (the hub's gap check holds: they follow what it has)."""
    db = tmp_path / "S001" / "edge.db"
    copy = tmp_path / "S001-offline.db"
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        mid = (await register(a, "13700000002", name="李雷"))["member_id"]
        await wait_for(lambda: drained(a), "the registration at the hub")
        mosquitto.kill()
        offline = [await sell(a, LINE, member_id=mid) for _ in range(3)]
        backup.backup(db, copy, _say)
    finally:
        await a.close()
    mosquitto.start()
    assert (await _hub_sales(hub, "S001"))["sales"] == []

    restored = backup.restore(copy, db, "S001", _say)
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    try:
        await sell(a, LINE, member_id=mid)
        await wait_for(lambda: drained(a), "the restored box drained")
        # The restored store's own balance: everything it ever sold is in its own ledger.
        shown = (await a.member(mid))["points"]
    finally:
        await a.close()
    now = await _hub_sales(hub, "S001")
    assert len(now["sales"]) == 4 and now["distinct_ids"] == now["events"]
    assert now["epochs"] == [restored["old_epoch"], restored["epoch"]]
    balances = await hub.db.transaction(audit.balances)
    assert balances[mid][0] == shown == 4 * offline[0]["points_earned"]


async def test_a_hub_restored_from_a_backup_gets_back_what_it_lost_from_the_stores(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The hub's own backup is older than what it acknowledged: the stores kept those events
    (``keep_acked_days``) and send them again when the restored hub says where it is."""
    cfg = hub_config(tmp_path, mosquitto)
    copy = tmp_path / "hub-backup.db"
    h = await Hub(cfg).__aenter__()
    a = await start_store(tmp_path, "S001", 1, mosquitto, h, status_interval_s=0.3)
    try:
        mid = (await register(a, "13700000003", name="韩梅梅"))["member_id"]
        sold = [await sell(a, LINE, member_id=mid)]
        await wait_for(lambda: drained(a), "the first sale at the hub")
        hub_backup.backup(cfg.database_url, copy, _say)  # while the hub runs
        sold += [await sell(a, LINE, member_id=mid) for _ in range(3)]
        await wait_for(lambda: drained(a), "the later sales at the hub")
        await h.__aexit__(None, None, None)
        # Lose the hub's disk: put the backup back (the hub stopped; the store sells on).
        restored = hub_backup.restore(cfg.database_url, copy, _say)
        assert restored["streams"] and restored["moved_aside"]
        sold.append(await sell(a, LINE, member_id=mid))
        h = await Hub(cfg).__aenter__()

        async def all_back() -> bool:
            return len((await _hub_sales(h, "S001"))["sales"]) == len(sold)

        await wait_for(all_back, "the restored hub to hold every sale again")
        await wait_for(lambda: drained(a), "the store drained to the restored hub")
        now = await _hub_sales(h, "S001")
        assert now["distinct_ids"] == now["events"]
        assert (await h.db.transaction(audit.compare))["mismatches"] == []
        earned = sum(s["points_earned"] for s in sold)
        assert (await h.db.transaction(audit.balances))[mid][0] == earned
    finally:
        await a.close()
        await h.__aexit__(None, None, None)


async def test_a_store_that_no_longer_keeps_what_the_hub_lost_says_so(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = hub_config(tmp_path, mosquitto)
    copy = tmp_path / "hub-backup.db"
    h = await Hub(cfg).__aenter__()
    a = await start_store(tmp_path, "S001", 1, mosquitto, h, status_interval_s=0.3,
                          keep_acked_days=0)
    try:
        mid = (await register(a, "13700000004", name="李华"))["member_id"]
        await wait_for(lambda: drained(a), "the registration at the hub")
        hub_backup.backup(cfg.database_url, copy, _say)
        await sell(a, LINE, member_id=mid)
        await wait_for(lambda: drained(a), "the sale at the hub")
        await h.__aexit__(None, None, None)
        hub_backup.restore(cfg.database_url, copy, _say)
        h = await Hub(cfg).__aenter__()

        async def refused() -> bool:
            return a.sync is not None and a.sync.refused["hub_behind_retention"] >= 1

        await wait_for(refused, "the store to say it no longer has the events")
    finally:
        await a.close()
        await h.__aexit__(None, None, None)
