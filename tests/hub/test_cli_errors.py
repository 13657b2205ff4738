"""Mistakes an operator can make at ``membergate-hub``: one clear line and a non-zero exit
each, never a traceback (and never a database password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import refused_in_one_line, run_cli, run_python

URL = "postgresql://postgres:pg-secret-99@127.0.0.1/postgres"
WITHOUT_PSYCOPG = ("import sys; sys.modules['psycopg'] = None; from hub.cli import main;"
                   " sys.exit(main())")


def config(tmp_path: Path) -> str:
    """Keeps the hub's files (the signing key) in ``tmp_path``."""
    path = tmp_path / "hub.toml"
    path.write_text(f'[hub]\ndata_dir = "{tmp_path}"\n', encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", [["run", "--seconds", "0.1"], ["status"], ["rebuild"]])
def test_a_postgresql_url_without_psycopg(tmp_path: Path, command: list[str]) -> None:
    refused = run_python("-c", WITHOUT_PSYCOPG, "--config", config(tmp_path), *command,
                         "--database", URL)
    message = refused_in_one_line(refused)
    assert "needs psycopg" in message and "[hub]" in message
    assert "pg-secret-99" not in message and "postgres:***@" in message


def test_a_postgresql_server_that_is_not_there(tmp_path: Path) -> None:
    refused = run_cli("hub.cli", "--config", config(tmp_path), "status", "--database",
                      "postgresql://postgres:pg-secret-99@127.0.0.1:1/postgres")
    message = refused_in_one_line(refused)
    assert "cannot connect" in message and "pg-secret-99" not in message


def test_log_level_in_any_case(tmp_path: Path) -> None:
    ran = run_cli("hub.cli", "--log-level", "debug", "status", "--database",
                  str(tmp_path / "hub.db"))
    assert ran.returncode == 0, ran.stderr
    refused = run_cli("hub.cli", "--log-level", "loud", "status")
    assert refused.returncode == 2 and "invalid choice" in refused_in_one_line(refused)
