from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.db import SchemaTooNew, connect_sync, migrate, schema_version
from edge.schema import LATEST_VERSION, MIGRATIONS


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return sorted(tuple(r) for r in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def test_versions_are_numbered_without_gaps() -> None:
    assert [v for v, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_from_empty_reaches_latest(tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "a.db")
    assert schema_version(conn) == 0
    assert migrate(conn) == LATEST_VERSION
    assert schema_version(conn) == LATEST_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert migrate(conn) == LATEST_VERSION  # idempotent


@pytest.mark.parametrize("start", range(1, LATEST_VERSION + 1))
def test_from_every_earlier_version_matches_fresh(tmp_path: Path, start: int) -> None:
    fresh = connect_sync(tmp_path / "fresh.db")
    migrate(fresh)
    old = connect_sync(tmp_path / "old.db")
    migrate(old, target=start)
    assert schema_version(old) == start
    # data written under the old schema survives the upgrade
    old.execute("INSERT INTO meta(key, value) VALUES ('store_id', 'S9')")
    migrate(old)
    assert _schema(old) == _schema(fresh)
    assert old.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0] == "S9"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "n.db")
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(SchemaTooNew):
        migrate(conn)


def test_failed_migration_leaves_version_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.db as db

    broken = [*MIGRATIONS, (LATEST_VERSION + 1, "broken", "CREATE TABLE x(a); SELECT * FROM nope;")]
    monkeypatch.setattr(db, "MIGRATIONS", broken)
    monkeypatch.setattr(db, "LATEST_VERSION", LATEST_VERSION + 1)
    conn = connect_sync(tmp_path / "b.db")
    with pytest.raises(sqlite3.OperationalError):
        db.migrate(conn)
    assert not conn.in_transaction
    assert schema_version(conn) == LATEST_VERSION
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'x'").fetchone() is None
