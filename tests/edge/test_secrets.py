"""Secrets in the edge's output, and its database's mode: a token or the MQTT password never
printed whole (the journal keeps every line), members' data 0600 from the first write."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edge.db import Database
from tests.support.cli import refused_in_one_line, run_cli

TOKEN = "pos-secret-token-9f3a"
PASSWORD = "mqtt-secret-password-77"


def secret_config(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(f'[database]\npath = "{tmp_path / "edge.db"}"\n'
                    f'[api.tokens]\nPOS-1 = "{TOKEN}"\n'
                    f'[sync]\nusername = "S001"\npassword = "{PASSWORD}"\n', encoding="utf-8")
    return path


def test_config_prints_no_token_or_password(tmp_path: Path) -> None:
    shown = run_cli("edge.cli", "--config", str(secret_config(tmp_path)), "config")
    assert shown.returncode == 0, shown.stderr
    assert TOKEN not in shown.stdout and PASSWORD not in shown.stdout
    assert '"POS-1": "***9f3a"' in shown.stdout  # which token is set, not the token
    assert '"password": "***"' in shown.stdout


def test_run_prints_no_configured_token(tmp_path: Path) -> None:
    ran = run_cli("edge.cli", "--config", str(secret_config(tmp_path)), "run", "--port", "0",
                  "--seconds", "0.5")
    assert ran.returncode == 0, ran.stderr
    assert "is up" in ran.stdout and "***9f3a" in ran.stdout
    assert TOKEN not in ran.stdout + ran.stderr


def test_an_invalid_token_is_not_echoed(tmp_path: Path) -> None:
    """pydantic's own message repeats every value given: a refused config says where, not what."""
    path = tmp_path / "edge.toml"
    path.write_text('[api.tokens]\nPOS-1 = "short-sec"\n'
                    f'[sync]\npassword = "{PASSWORD}"\nbroker_port = 0\n', encoding="utf-8")
    message = refused_in_one_line(run_cli("edge.cli", "--config", str(path), "config"))
    assert "api.tokens" in message and "sync.broker_port" in message
    assert "short-sec" not in message and PASSWORD not in message




@pytest.mark.usefixtures("umask_022")
async def test_the_database_and_its_wal_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "store" / "edge.db"
    async with Database(path) as db:
        await db.write(lambda conn: conn.execute("CREATE TABLE t(x)"))
        files = [path, path.with_name("edge.db-wal"), path.with_name("edge.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
            f.name: 0o600 for f in files}
