"""The edge database's background WAL checkpoints: commits no longer pay for them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge import db as edge_db
from edge.db import Database


async def test_wal_is_checkpointed_beside_the_writer_not_inside_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    async with Database(path) as database:
        pages = await database.read(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        # Only the reader is asked here; the writer's limit is what a commit would act on.
        writer_limit = await database.write(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        assert writer_limit == edge_db.WRITER_AUTOCHECKPOINT_PAGES and pages >= 0
        for i in range(200):
            await database.write(lambda conn, i=i: conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?)", (f"k{i}", "x" * 500)))
        # 200 small commits stay far below the writer's own limit: only the background task
        # can have moved these frames into the database file.
        for _ in range(100):
            if database.checkpointed_frames > 0:
                break
            await asyncio.sleep(0.05)
        assert database.checkpoints >= 1 and database.checkpointed_frames > 0
    # Closed cleanly (the checkpointer stopped, not killed mid-checkpoint): every row is there.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 200


async def test_a_write_that_can_be_fetched_again_does_not_wait_for_the_disk(
        tmp_path: Path) -> None:
    """``durable=False`` (a directory step) commits with ``synchronous=NORMAL``; every other
    write, before and after it, with ``FULL`` — also when the step fails."""
    db = await Database(tmp_path / "d.db").open()
    try:
        def level(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await db.write(level) == 2
        assert await db.write(level, durable=False) == 1
        assert await db.write(level) == 2

        def fails(conn: sqlite3.Connection) -> None:
            raise ValueError("a bad step")

        with pytest.raises(ValueError, match="a bad step"):
            await db.write(fails, durable=False)
        assert await db.write(level) == 2
    finally:
        await db.close()
