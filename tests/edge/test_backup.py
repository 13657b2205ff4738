"""``membergate-edge backup`` / ``restore``: a whole copy of a live database, put back under a
new epoch; every wrong use refused in one line with nothing changed."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from edge import backup, cli
from edge.config import EdgeConfig
from edge.service import EdgeService
from protocol.sqlite_backup import BackupError
from tests.edge.conftest import make_config, register, sell


def _write_config(tmp_path: Path, store_id: str) -> Path:
    path = tmp_path / f"{store_id}.toml"
    db = tmp_path / "edge.db"
    path.write_text(f'[store]\nstore_id = "{store_id}"\n[database]\npath = "{db}"\n'
                    '[api.tokens]\n"POS-1" = "a-terminal-token-1"\n', encoding="utf-8")
    return path


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def test_a_backup_taken_while_selling_restores_under_a_new_epoch(
        tmp_path: Path, config: EdgeConfig, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = _write_config(tmp_path, config.store.store_id)
    async with EdgeService(config) as svc:
        mid = (await register(svc))["member_id"]
        await sell(svc, [("A", "grocery", 1, 5_000)], member_id=mid)
        # The gateway is running: a backup may be taken, a restore may not.
        assert cli.main(["--config", str(cfg_file), "backup", str(tmp_path / "b1.db")]) == 0
        taken = json.loads(capsys.readouterr().out)
        assert cli.main(["--config", str(cfg_file), "restore", str(tmp_path / "b1.db")]) == 2
        assert "in use" in capsys.readouterr().err
        await sell(svc, [("B", "grocery", 1, 7_000)], member_id=mid)  # after the backup
        epoch = svc.context.epoch
    copy = tmp_path / "b1.db"
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600  # members' personal data
    assert taken["epoch"] == epoch and taken["last_seq"] > 0
    assert not (tmp_path / "b1.db-wal").exists()  # one file, whole
    assert cli.main(["--config", str(cfg_file), "backup", str(copy)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err

    assert cli.main(["--config", str(cfg_file), "restore", str(copy)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["old_epoch"] == epoch and out["epoch"] > epoch and out["moved_aside"]
    db = tmp_path / "edge.db"
    assert _count(db, "SELECT count(*) FROM sales") == 1  # as the backup held it
    async with EdgeService(config) as svc:
        assert svc.context.epoch == out["epoch"]
        await sell(svc, [("C", "grocery", 1, 1_000)], member_id=mid)
        status = await svc.status(live=False)
        assert status["restored_from"]["epoch"] == epoch
        assert status["restored_from"]["seq"] == taken["last_seq"]
    # The new events are numbered from 1 in the new epoch; the backup's stay in theirs.
    assert _count(db, f"SELECT min(seq) FROM outbox WHERE epoch = {out['epoch']}") == 1
    # What was replaced is kept beside it, the later sale in it.
    aside = Path(next(p for p in out["moved_aside"] if not p.endswith(("-wal", "-shm"))))
    assert _count(aside, "SELECT count(*) FROM sales") == 2


def test_restores_that_would_mix_or_break_a_store_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = make_config(tmp_path / "other", store={"store_id": "S999"})
    (tmp_path / "other").mkdir()

    async def make() -> None:
        async with EdgeService(other):
            pass

    import asyncio

    asyncio.run(make())
    theirs = tmp_path / "theirs.db"
    backup.backup(other.database.path, theirs, lambda _m: None)
    cfg_file = _write_config(tmp_path, "S001")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    for source, why in ((theirs, "S999"), (junk, "not a usable SQLite"),
                        (tmp_path / "missing.db", "no such file")):
        assert cli.main(["--config", str(cfg_file), "restore", str(source)]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err
    assert not (tmp_path / "edge.db").exists()  # nothing put in place


def test_a_new_epoch_is_unique_even_for_two_restores_of_one_backup() -> None:
    assert backup.new_epoch(1, now_s=1_800_000_000) == 1_800_000_000
    assert backup.new_epoch(1_800_000_000, now_s=1_800_000_000) == 1_800_000_001
    assert backup.new_epoch(1, now_s=1_800_000_005) > backup.new_epoch(1, now_s=1_800_000_000)


def test_backup_of_something_else_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(BackupError, match="not a membergate store database"):
        backup.backup(plain, tmp_path / "out.db", lambda _m: None)
    assert not (tmp_path / "out.db").exists()


async def test_acknowledged_events_are_kept_then_swept_and_reopened_only_whole(
        service: EdgeService) -> None:
    """What the hub acknowledged is kept (for a hub restored from a backup) until it is older
    than ``keep_acked_days``; a reopen gives back all that was asked, or nothing."""
    from edge import outbox

    await register(service)
    await sell(service, [("A", "grocery", 1, 1_000)])
    epoch = service.context.epoch

    def step(conn: sqlite3.Connection) -> tuple[int, int]:
        last = int(outbox.meta_get(conn, f"outbox_seq:{epoch}") or 0)
        outbox.prune(conn, epoch, last, keep=True)
        kept = conn.execute("SELECT count(*) FROM outbox_sent").fetchone()[0]
        assert outbox.expire_sent(conn, keep_ms=86_400_000) == 0  # a day: all still young
        return last, int(kept)

    last, kept = await service.db.write(step)
    assert kept == last >= 2
    assert await service.db.write(lambda c: outbox.reopen(c, epoch, 1, last)) is True
    assert await service.db.read(lambda c: outbox.stats(c, epoch).depth) == last - 1
    await service.db.write(lambda c: outbox.prune(c, epoch, last, keep=True))
    assert await service.db.write(lambda c: outbox.expire_sent(c, keep_ms=0)) == last
    # Swept: the hub cannot be given them again, and nothing is half put back.
    assert await service.db.write(lambda c: outbox.reopen(c, epoch, 0, last)) is False
    assert await service.db.read(lambda c: outbox.stats(c, epoch).depth) == 0
