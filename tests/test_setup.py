"""The README's two commands, as an operator types them on a fresh Debian 12, and CI's run."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.campaigns import parse_bundle
from tests.support.readme import campaign_example, code_block

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The command lines of the README's *The two commands* block, comments left out."""
    return [line for line in code_block("The two commands", "bash").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_readme_commands_install_into_a_venv() -> None:
    """Debian 12's python3 refuses ``pip install`` outside a venv (externally-managed-
    environment): the demo command makes and activates one first, and names its extras."""
    demo, tests = readme_commands()
    steps = [s.strip() for s in demo.split("&&")]
    assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"]
    assert any(s.startswith("pip install -e '.[hub]'") for s in steps[2:])
    assert steps[-1] == "membergate-hub demo"
    assert [s.strip() for s in tests.split("&&")] == [
        "bash tests/setup-machine.sh", ". .venv/bin/activate", "python -m pytest -q"]


def test_setup_machine_makes_the_venv_the_readme_activates() -> None:
    script = (ROOT / "tests" / "setup-machine.sh").read_text(encoding="utf-8")
    debs = re.search(r"^debs=\((.*?)\)", script, re.M | re.S)
    assert debs is not None and "python3-venv" in debs.group(1).split()
    assert "python3 -m venv .venv" in script
    assert re.search(r"^\.venv/bin/python -m pip install .*-e \"\.\[dev,hardware,hub\]\"",
                     script, re.M)
    assert not re.search(r"^python3 -m pip install", script, re.M)  # never the system's


def test_ci_runs_the_readme_test_command_inside_the_venv() -> None:
    """``.ci/run`` runs the README's test command, step by step in its order, and everything
    after the setup (lint, the demos, the tests) inside the venv it activates."""
    _, tests = readme_commands()
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    at = [lines.index(step.strip()) for step in tests.split("&&")]
    assert at == sorted(at), "the README's test command's steps, in its order"
    after_venv = lines[at[1] + 1:]
    assert any("membergate-hub demo" in line for line in after_venv)
    assert any("membergate-edge run --demo" in line for line in after_venv)
    assert lines[-1] == "python -m pytest -q"


def test_readme_campaign_example_is_a_valid_bundle() -> None:
    """The campaign file the README shows is one a hub and a store accept as written."""
    bundle = parse_bundle(campaign_example(), "campaigns.toml")
    assert [c.rule.kind for c in bundle.campaigns] == ["earn_points", "spend_threshold_off"]
