"""Mistakes a store engineer can make at ``membergate-edge``: one clear line and a non-zero
exit each, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import refused_in_one_line, run_cli, run_python

# A package made unimportable in the child process, as on a box without it installed.
WITHOUT = "import sys; sys.modules[{name!r}] = None; from edge.cli import main; sys.exit(main())"


def test_receipt_preview_of_an_unknown_sale(tmp_path: Path) -> None:
    refused = run_cli("edge.cli", "receipt-preview", "--sale", "nope",
                      "--db", str(tmp_path / "edge.db"), "--out", str(tmp_path / "r.png"))
    error = json.loads(refused_in_one_line(refused))["error"]
    assert error["code"] == "sale_not_found" and error["details"] == {"sale_id": "nope"}
    assert not (tmp_path / "r.png").exists()


def test_receipt_preview_of_a_missing_capture(tmp_path: Path) -> None:
    refused = run_cli("edge.cli", "receipt-preview", "--escpos", str(tmp_path / "none.bin"))
    assert "No such file" in refused_in_one_line(refused)


@pytest.mark.parametrize("level", ["debug", "Warning", "ERROR"])
def test_log_level_in_any_case(tmp_path: Path, level: str) -> None:
    ran = run_cli("edge.cli", "--log-level", level, "status", "--db", str(tmp_path / "e.db"))
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr


def test_an_unknown_log_level_is_a_usage_error() -> None:
    refused = run_cli("edge.cli", "--log-level", "verbose", "config")
    assert refused.returncode == 2 and "invalid choice: 'VERBOSE'" in refused_in_one_line(refused)


def test_bench_devices_without_pyscard(tmp_path: Path) -> None:
    refused = run_python("-c", WITHOUT.format(name="smartcard"), "bench-devices",
                      "--taps", "1", "--scans", "1", "--workdir", str(tmp_path / "w"))
    message = refused_in_one_line(refused)
    assert "needs pyscard" in message and "[hardware]" in message
    assert not (tmp_path / "w").exists()  # nothing made before the check
