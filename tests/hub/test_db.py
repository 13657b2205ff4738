"""The hub database: WAL checkpoints beside the writer (SQLite), schema v4 and v5."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hub.auth import roles, users
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.core import db as hub_db_mod
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.core.schema import LATEST, migrate
from hub.members.tiers import TierRules
from hub.reports import member360
from provisioning import demo_history


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


CLUSTERED = ("shares", "grants", "spend_months", "cards", "store_streams")


async def test_schema_5_keeps_every_row_and_clusters_the_member_tables(hub_url: str) -> None:
    rows = {
        "shares": [("m1", "S001", 10, 200, 20), ("m1", "S002", -3, 0, 0)],
        "grants": [("m1", "S001", 100, 40, 5000, 0)],
        "spend_months": [("m1", "2026-10", 12345), ("m1", "2026-11", 1)],
        "cards": [("04AA", "m1"), ("04BB", "m1")],
        "store_streams": [("S001", 1, 77), ("S002", 3, 5)],
    }

    def at_4(tx: Tx) -> None:
        assert migrate(tx, target=4) == 4
        for table, values in rows.items():
            marks = ", ".join("?" * len(values[0]))
            tx.executemany(f"INSERT INTO {table} VALUES ({marks})", values)

    def after(tx: Tx) -> tuple[int, dict[str, list[tuple[object, ...]]], set[str]]:
        version = migrate(tx)
        # The columns each table had at schema 4 (later schemas add some of their own).
        kept = {t: sorted(tuple(r)[:len(rows[t][0])] for r in tx.all(f"SELECT * FROM {t}"))
                for t in rows}
        clustered: set[str] = set()
        if tx.dialect == "sqlite":
            clustered = {t for t in CLUSTERED if "WITHOUT ROWID" in tx.scalar(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (t,))}
        return version, kept, clustered

    async with HubDatabase(hub_url) as db:
        await db.transaction(at_4)
        version, kept, clustered = await db.transaction(after)
        assert version == LATEST >= 5
        assert kept == {t: sorted(v) for t, v in rows.items()}
        if db.dialect == "sqlite":
            assert clustered == set(CLUSTERED)
            # The cards index came back, and upserts on the clustered keys still conflict.
            indexes = await db.transaction(lambda tx: {r[1] for r in tx.all(
                "PRAGMA index_list(cards)")})
            assert "cards_member" in indexes
        await db.transaction(lambda tx: tx.execute(
            "INSERT INTO shares(member_id, store_id, points) VALUES ('m1', 'S001', 5)"
            " ON CONFLICT(member_id, store_id) DO UPDATE SET points = shares.points + 5"))
        assert await db.transaction(lambda tx: tx.scalar(
            "SELECT points FROM shares WHERE member_id = 'm1' AND store_id = 'S001'")) == 15


async def test_schema_6_moves_the_escrow_books_of_merged_ids_onto_their_members(
        hub_url: str) -> None:
    """Before schema 6 a merge left the merged id's grants where they were; the upgrade moves
    them, per store, onto the member each id became (summed with what is there already)."""
    member = ("INSERT INTO members(member_id, member_code, home_store, registered_hlc,"
              " merged_into, change_no) VALUES (?, ?, 'S001', 1, ?, 1)")

    def at_5(tx: Tx) -> None:
        assert migrate(tx, target=5) == 5
        tx.executemany(member, [("m-kept", "C1", None), ("m-old1", "C2", "m-kept"),
                                ("m-old2", "C3", "m-kept"), ("m-alone", "C4", None)])
        tx.executemany("INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?)", [
            ("m-kept", "S001", 100, 40, 5000, 0),
            ("m-old1", "S001", 500, 200, 0, 0),
            ("m-old1", "S002", 300, 0, 700, 100),
            ("m-old2", "S002", 10, 10, 0, 0),
            ("m-alone", "S003", 7, 1, 0, 0)])

    def after(tx: Tx) -> tuple[int, list[tuple[object, ...]]]:
        return migrate(tx), sorted(tuple(r) for r in tx.all("SELECT * FROM grants"))

    async with HubDatabase(hub_url) as db:
        await db.transaction(at_5)
        version, rows = await db.transaction(after)
    assert version == LATEST >= 6
    assert rows == [("m-alone", "S003", 7, 1, 0, 0),
                    ("m-kept", "S001", 600, 240, 5000, 0),
                    ("m-kept", "S002", 310, 10, 700, 100)]


async def test_a_members_aliases_are_found_by_index_not_by_a_scan(tmp_path: Path) -> None:
    """Every directory page and member lookup asks for aliases (``merged_into IN (...)``)."""
    async with HubDatabase(f"sqlite:///{tmp_path / 'hub.db'}") as db:
        await db.transaction(migrate)
        plan = await db.transaction(lambda tx: " ".join(str(r[3]) for r in tx.all(
            "EXPLAIN QUERY PLAN SELECT member_id, merged_into FROM members"
            " WHERE merged_into IN (?, ?) ORDER BY member_id", ("a", "b"))))
    # (hub schema 22's members_aliases holds them with their ids: the index alone answers)
    assert ("USING INDEX members_merged" in plan
            or "USING COVERING INDEX members_aliases" in plan), plan


async def test_reads_run_on_readers_apart_from_the_writer(hub_db: HubDatabase) -> None:
    """HQ reads take a snapshot on a reader connection: a batch commits while a report is in
    the middle of its transaction, the report's figures stay consistent, rows answer by name,
    and a reader cannot write."""
    await hub_db.transaction(lambda tx: tx.execute(
        "INSERT INTO counters(name, value) VALUES ('orders', 1)"))
    inside, committed = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def report(tx: Tx) -> tuple[int, int, str]:
        first = tx.one("SELECT value, name FROM counters WHERE name = 'orders'")
        loop.call_soon_threadsafe(inside.set)
        # The writer commits meanwhile; this transaction keeps the snapshot it started with.
        asyncio.run_coroutine_threadsafe(committed.wait(), loop).result(10)
        again = tx.one("SELECT value FROM counters WHERE name = 'orders'")
        return int(first["value"]), int(again[0]), str(first["name"])

    reading = asyncio.ensure_future(hub_db.read(report))
    await inside.wait()
    # The writer is not held up by the open read (it would time out here if it were).
    await asyncio.wait_for(hub_db.transaction(lambda tx: tx.execute(
        "UPDATE counters SET value = 2 WHERE name = 'orders'")), 5)
    committed.set()
    assert await reading == (1, 1, "orders")
    assert await hub_db.read(lambda tx: tx.scalar(
        "SELECT value FROM counters WHERE name = 'orders'")) == 2  # a new read sees it
    failed = False
    try:
        await hub_db.read(lambda tx: tx.execute("DELETE FROM counters"))
    except Exception:
        failed = True
    assert failed
    assert await hub_db.read(lambda tx: tx.scalar("SELECT count(*) FROM counters")) >= 1


async def test_schema_7_numbers_the_log_in_the_order_it_was_written(hub_url: str) -> None:
    """Events logged before schema 7 keep their order as positions; later ones come after,
    and the stream key still refuses a duplicate."""
    insert = ("INSERT INTO events(store_id, epoch, seq, event_id, hlc, type, member_id, payload)"
              " VALUES (?, 1, ?, ?, 0, 'coupon.voided', NULL, ?) ON CONFLICT DO NOTHING")
    written = [("S002", 1), ("S001", 1), ("S002", 2), ("S001", 2)]

    def at_6(tx: Tx) -> None:
        assert migrate(tx, target=6) == 6
        tx.executemany(insert, [(s, q, f"e-{s}-{q}", b"x") for s, q in written])

    def after(tx: Tx) -> list[tuple[str, int]]:
        assert migrate(tx) == LATEST >= 7
        tx.executemany(insert, [(s, q, f"e-{s}-{q}", b"x")
                                for s, q in [("S001", 3), ("S001", 1)]])
        return [(str(r[0]), int(r[1])) for r in tx.all(
            "SELECT store_id, seq FROM events ORDER BY pos")]

    async with HubDatabase(hub_url) as db:
        await db.transaction(at_6)
        assert await db.transaction(after) == [*written, ("S001", 3)]


# Tables a member's card may read whole: a chain holds a few of each (runs, segments,
# journeys, roles, group names), never one per member or per sale.
SMALL = {"rfm_runs", "rfm_group_names", "segments", "journeys", "roles", "stores", "users",
         "tiers", "tags", "hq_tags"}


async def test_a_member_card_reads_by_key_not_by_a_scan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The member 360 card (HQ's and a store manager's) reads each of the member's rows by
    key. Two of its reads once went through a whole table: the member's RFM history every
    score of every run (~95 ms a card at a million members) and their coupons every coupon
    (~35 ms at 300,000)."""
    async with HubDatabase(f"sqlite:///{tmp_path / 'hub.db'}") as db:
        await db.transaction(migrate)
        await demo_history.seed(db, members=40, days=60)
        home = demo_history.STORES[0][0]
        member = await db.read(lambda tx: tx.scalar(
            "SELECT member_id FROM members WHERE home_store = ? AND merged_into IS NULL"
            " ORDER BY member_id LIMIT 1", (home,)))
        said: list[tuple[str, tuple[Any, ...]]] = []
        execute = Tx.execute

        def recorded(self: Tx, sql: str, params: Sequence[Any] = ()) -> Any:
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                said.append((sql, tuple(params)))
            return execute(self, sql, params)

        for username in ("admin", home.lower()):  # HQ, and the manager of their store
            def card(tx: Tx, username: str = username) -> Any:
                user = users.get(tx, username)
                scope = Scope(Principal(user, roles.load(tx)[user.role], None))
                monkeypatch.setattr(Tx, "execute", recorded)
                try:
                    return member360.card(tx, scope, member, rules=TierRules(), now_ms=now_ms(),
                                          zone="Asia/Shanghai")
                finally:
                    monkeypatch.setattr(Tx, "execute", execute)

            assert (await db.read(card))["member"]["member_id"] == member
        assert len(said) > 15

        def scans(tx: Tx) -> list[str]:
            out = []
            for sql, params in said:
                for row in tx.all(f"EXPLAIN QUERY PLAN {sql}", params):
                    found = re.match(r"SCAN (\w+)", str(row[3]))
                    if found and found.group(1) not in SMALL:
                        out.append(f"{row[3]}: {' '.join(sql.split())[:120]}")
            return out

        assert await db.read(scans) == []
