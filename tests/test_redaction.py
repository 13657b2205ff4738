"""Secrets never reach what the commands print: the store's configuration, the store's start
banner (the journal keeps it), the hub's start line with a PostgreSQL URL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main as edge_main
from protocol import redact

TOKEN = "till-token-9f8e7d6c5b4a"
PASSWORD = "mqtt-password-s3cr3t-xyz"


def _edge_toml(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(f"""
[database]
path = "{tmp_path / 'edge.db'}"
[api]
port = 0
[api.tokens]
POS-1 = "{TOKEN}"
[sync]
broker_host = "127.0.0.1"
broker_port = 1
username = "S001"
password = "{PASSWORD}"
""", encoding="utf-8")
    return path


def test_the_store_configuration_prints_no_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert edge_main(["--config", str(_edge_toml(tmp_path)), "config"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out and PASSWORD not in out
    shown = json.loads(out)
    assert shown["api"]["tokens"]["POS-1"] == "***4a"[:3] + TOKEN[-4:]
    assert shown["sync"]["password"] == "***" and shown["sync"]["username"] == "S001"


def test_the_start_banner_masks_a_real_token(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edge.cli", "--config", str(_edge_toml(tmp_path)), "run",
         "--port", "0", "--seconds", "1"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "is up" in run.stdout
    assert TOKEN not in run.stdout + run.stderr and PASSWORD not in run.stdout + run.stderr
    assert redact.mask(TOKEN) in run.stdout


def test_a_database_url_loses_its_password() -> None:
    assert redact.url("postgresql://hub:pa55word@db.internal:5432/hub") == \
        "postgresql://hub:***@db.internal:5432/hub"
    assert redact.url("postgresql://hub@db.internal/hub") == "postgresql://hub@db.internal/hub"
    assert redact.config({"hub": {"database": "postgresql://u:p@h/d"}}) == {
        "hub": {"database": "postgresql://u:***@h/d"}}
