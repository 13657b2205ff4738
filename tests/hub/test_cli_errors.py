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


def test_backup_and_restore_of_the_hub_from_the_shell(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A whole copy, a restore refused while the hub has its database open, a PostgreSQL hub
    sent to pg_dump: one line each, no traceback."""
    from hub import cli
    from hub.core.db import HubDatabase

    db = tmp_path / "hub.db"
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndatabase = "{db}"\ndata_dir = "{tmp_path}"\n', encoding="utf-8")
    assert cli.main(["--config", str(config), "stores", "list"]) == 0
    assert cli.main(["--config", str(config), "backup", str(tmp_path / "b.db")]) == 0
    assert '"schema"' in capsys.readouterr().out
    held = HubDatabase(f"sqlite:///{db}").open_sync()
    try:
        assert cli.main(["--config", str(config), "restore", str(tmp_path / "b.db")]) == 2
        err = capsys.readouterr().err
        assert "in use" in err and "Traceback" not in err
    finally:
        held.close_sync()
    assert cli.main(["--config", str(config), "restore", str(tmp_path / "b.db")]) == 0
    pg = tmp_path / "pg.toml"
    pg.write_text('[hub]\ndatabase = "postgresql://postgres@127.0.0.1/x"\n', encoding="utf-8")
    assert cli.main(["--config", str(pg), "backup", str(tmp_path / "c.db")]) == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and "Traceback" not in err and not (tmp_path / "c.db").exists()
