"""``membergate-edge bench`` on a tiny store: progress on stderr, figures alone on stdout, and
no folder left behind (a real run's is ~900 MB), at the end or after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.cli import ROOT, run_cli

TINY = ["--members", "200", "--finalizes", "10", "--catchup-entries", "0"]


def temp_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A TMPDIR of the test's own, to see what the bench leaves in it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return tmp, {"TMPDIR": str(tmp)}


def test_progress_on_stderr_figures_on_stdout_nothing_left(tmp_path: Path) -> None:
    tmp, env = temp_dir(tmp_path)
    ran = run_cli("edge.cli", "bench", *TINY, "--lookups", "30", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    figures = json.loads(ran.stdout)  # one JSON object and nothing else
    assert figures["members"] == 200 and ran.stdout.count("\n") == 1
    phases = [line for line in ran.stderr.splitlines() if line.startswith("bench: [")]
    assert phases[0] == "bench: [1/4] seeding 200 members"
    assert "bench: [4/4] 30 lookups over HTTP: 100%" in phases
    assert list(tmp.iterdir()) == []


def test_workdir_is_kept(tmp_path: Path) -> None:
    ran = run_cli("edge.cli", "bench", *TINY, "--lookups", "10", "--workdir",
                  str(tmp_path / "keep"))
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "keep" / "bench.db").exists()


def test_ctrl_c_removes_the_temporary_folder(tmp_path: Path) -> None:
    tmp, env = temp_dir(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "bench", "--members", "200", "--finalizes",
         "100000000", "--lookups", "10"], cwd=ROOT,
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        for line in proc.stderr:  # interrupted among the checkouts: the store's files are there
            seen.append(line)
            if "checkouts" in line:
                break
        assert any(tmp.iterdir()), seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and out == ""
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp.iterdir()) == []
