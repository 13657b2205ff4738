"""The nightly backup units run the real command: their ``ExecStart`` line, with this machine's
paths put in, writes a whole backup, and their ``ExecStartPost`` keeps only the fortnight."""

from __future__ import annotations

import configparser
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[1] / "systemd"


def _unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name, encoding="utf-8")
    return parser["Service"] if name.endswith(".service") else parser["Timer"]


@pytest.mark.parametrize("side", ["edge", "hub"])
def test_the_nightly_unit_writes_a_backup_and_keeps_a_fortnight(side: str, tmp_path: Path) -> None:
    service = _unit(f"membergate-{side}-backup.service")
    assert _unit(f"membergate-{side}-backup.timer")["OnCalendar"]
    state = "/var/lib/membergate" + ("-hub" if side == "hub" else "")
    db = tmp_path / f"{side}.db"
    config = tmp_path / f"{side}.toml"
    if side == "edge":
        config.write_text(f'[database]\npath = "{db}"\n', encoding="utf-8")
        subprocess.run([sys.executable, "-m", "edge.cli", "--config", str(config), "migrate"],
                       check=True, capture_output=True, timeout=60)
    else:
        config.write_text(f'[hub]\ndatabase = "{db}"\ndata_dir = "{tmp_path}"\n',
                          encoding="utf-8")
        subprocess.run([sys.executable, "-m", "hub.cli", "--config", str(config), "stores",
                        "list"],
                       check=True, capture_output=True, timeout=60)

    def local(line: str) -> str:
        return (line.replace("%%", "%").replace(f"/etc/membergate/{side}.toml", str(config))
                .replace("/opt/membergate/venv/bin/", str(Path(sys.executable).parent) + "/")
                .replace(state, str(tmp_path / "state")))

    backups = tmp_path / "state" / "backups"
    backups.mkdir(parents=True)
    old = backups / f"{side}-20200101T000000.db"
    old.write_bytes(b"")
    os.utime(old, (time.time() - 20 * 86_400,) * 2)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(shlex.split(local(service["ExecStart"])), check=True, capture_output=True,
                   timeout=120, env=env)
    subprocess.run(shlex.split(local(service["ExecStartPost"])), check=True, timeout=60)
    written = sorted(backups.iterdir())
    assert len(written) == 1 and written[0].name.startswith(f"{side}-")  # the old one gone
    conn = sqlite3.connect(written[0])
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
