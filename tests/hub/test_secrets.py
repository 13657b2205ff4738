"""Secrets in the hub's output and on its disk: a database URL's password never printed, the
database 0600, the signing key never anything but 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hub.campaigns.bundles import KEY_FILE, load_or_create_key
from hub.core.db import HubDatabase
from hub.sync.broker import free_port
from tests.support.cli import run_cli


def test_run_prints_no_database_password(tmp_path: Path, pg_url: str) -> None:
    """The test server trusts 127.0.0.1, so any password connects; it must not be printed."""
    url = pg_url.replace("postgres@", "postgres:pg-secret-pass-55@")
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'[hub]\ndata_dir = "{tmp_path}"\n[broker]\nembedded_port = {free_port()}\n',
                   encoding="utf-8")
    ran = run_cli("hub.cli", "--config", str(cfg), "run", "--database", url, "--seconds", "0.2")
    assert ran.returncode == 0, ran.stderr
    assert "membergate hub is up" in ran.stdout and "postgres:***@127.0.0.1" in ran.stdout
    assert "pg-secret-pass-55" not in ran.stdout + ran.stderr


@pytest.mark.usefixtures("umask_022")
async def test_the_sqlite_database_and_its_wal_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "hub" / "hub.db"
    async with HubDatabase(str(path)) as db:
        await db.transaction(lambda tx: tx.execute("CREATE TABLE t(x)"))
        files = [path, path.with_name("hub.db-wal"), path.with_name("hub.db-shm")]
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
            f.name: 0o600 for f in files}


@pytest.mark.usefixtures("umask_022")
def test_the_signing_key_is_made_0600_not_chmod_after(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Made 0644 and then chmod-ed, the key is readable by anyone for a moment (and stays so if
    the process dies in between): with every chmod disabled it must still come out 0600."""
    def no_chmod(*_args: object, **_kwargs: object) -> None:
        return None

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    key = load_or_create_key(tmp_path / "data")
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_key(tmp_path / "data")  # the same key, read back
    assert again.private_bytes_raw() == key.private_bytes_raw()
