"""The hub database on SQLite: WAL checkpoints beside the writer, and schema v4."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hub import db as hub_db_mod
from hub.db import HubDatabase, Tx
from hub.schema import LATEST, migrate


async def test_wal_is_checkpointed_beside_the_writer_not_inside_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    async with HubDatabase(f"sqlite:///{path}") as db:
        await db.transaction(migrate)
        limit = await db.transaction(
            lambda tx: tx.scalar("PRAGMA wal_autocheckpoint"))
        assert limit == hub_db_mod.WRITER_AUTOCHECKPOINT_PAGES
        for i in range(200):
            await db.transaction(lambda tx, i=i: tx.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?)", (f"k{i}-{'x' * 500}", i)))
        # 200 small commits stay far below the writer's own limit: only the background thread
        # can have moved these frames into the database file.
        for _ in range(100):
            if db.checkpoints > 0:
                break
            await asyncio.sleep(0.05)
        assert db.checkpoints >= 1
    # Closed cleanly (the checkpointer stopped, not killed mid-checkpoint): every row is there.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM counters WHERE name LIKE 'k%'"
                            ).fetchone()[0] == 200


async def test_schema_4_drops_what_nothing_reads(hub_db: HubDatabase) -> None:
    def columns_and_indexes(tx: Tx) -> tuple[set[str], set[str]]:
        if tx.dialect == "postgres":
            cols = {r[0] for r in tx.all("SELECT column_name FROM information_schema.columns"
                                         " WHERE table_name = 'members'")}
            idx = {r[0] for r in tx.all("SELECT indexname FROM pg_indexes"
                                        " WHERE tablename = 'events'")}
        else:
            cols = {r[1] for r in tx.all("PRAGMA table_info(members)")}
            idx = {r[1] for r in tx.all("PRAGMA index_list(events)")}
        return cols, idx

    assert LATEST >= 4
    cols, idx = await hub_db.transaction(columns_and_indexes)
    assert "spend_total" not in cols and "change_no" in cols
    assert "events_member" not in idx
