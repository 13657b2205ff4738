"""``membergate-hub push-campaigns``: TOML or JSON, through a running hub's HQ API, or alone
when no hub runs; a running hub's busy broker port is a one-line refusal, not a traceback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path

from hub.api.app import api_server
from hub.app import Hub
from hub.config import HubConfig
from hub.sync.broker import free_port
from protocol import topics
from tests.support.cli import refused_in_one_line, run_cli
from tests.support.readme import campaign_example
from tests.support.serving import serving

TOKEN = "hq-push-token-0001"

BUNDLE_TOML = campaign_example()  # the README's example bundle, as HQ writes it


def config_file(tmp_path: Path, *, api_port: int | None = None) -> Path:
    """A hub on SQLite in ``tmp_path`` with its embedded broker on a port of its own."""
    text = (f'[hub]\ndatabase = "{tmp_path / "hub.db"}"\ndata_dir = "{tmp_path}"\n'
            f"[broker]\nembedded_port = {free_port()}\n")
    if api_port is not None:
        text += f'[api]\ntoken = "{TOKEN}"\nport = {api_port}\n'
    path = tmp_path / "hub.toml"
    path.write_text(text, encoding="utf-8")
    return path


def held_versions(tmp_path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(tmp_path / "hub.db") as conn:
        return conn.execute("SELECT scope, scope_id, version FROM campaign_bundles").fetchall()


async def push(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, "hub.cli", *args)


async def test_a_running_hub_takes_a_toml_bundle_through_its_api(tmp_path: Path) -> None:
    """Only ``--config``: the hub it names runs and serves ``[api]``, so the bundle goes there
    (a second hub would bind the running one's broker port)."""
    cfg_path = config_file(tmp_path, api_port=free_port())
    (tmp_path / "bundle.toml").write_text(BUNDLE_TOML, encoding="utf-8")
    async with Hub(HubConfig.load(cfg_path)) as hub, serving(api_server(hub)):
        done = await push("--config", str(cfg_path), "push-campaigns",
                          str(tmp_path / "bundle.toml"))
        assert done.returncode == 0, done.stderr
        assert topics.region_campaigns("east") in done.stdout
        assert held_versions(tmp_path) == [("region", "east", 7)]
        again = await push("--config", str(cfg_path), "push-campaigns",
                           str(tmp_path / "bundle.toml"))
        assert "stale_version" in refused_in_one_line(again)


async def test_api_flag_json_file_and_a_wrong_token(tmp_path: Path) -> None:
    cfg = HubConfig.load(config_file(tmp_path, api_port=0))
    import tomllib

    bundle = tomllib.loads(BUNDLE_TOML)
    (tmp_path / "bundle.json").write_text(json.dumps(bundle, default=str), encoding="utf-8")
    async with Hub(cfg) as hub, serving(api_server(hub)) as port:
        url = f"http://127.0.0.1:{port}"
        wrong = await push("push-campaigns", str(tmp_path / "bundle.json"), "--api", url,
                           "--token", "not-the-token-0000")
        assert "unauthorized" in refused_in_one_line(wrong)
        assert held_versions(tmp_path) == []
        done = await asyncio.to_thread(
            run_cli, "hub.cli", "push-campaigns", str(tmp_path / "bundle.json"), "--api", url,
            env={"MEMBERGATE_HQ_TOKEN": TOKEN})
        assert done.returncode == 0, done.stderr
        assert held_versions(tmp_path) == [("region", "east", 7)]


async def test_a_running_hub_without_api_is_a_one_line_refusal(tmp_path: Path) -> None:
    cfg_path = config_file(tmp_path)
    (tmp_path / "bundle.toml").write_text(BUNDLE_TOML, encoding="utf-8")
    async with Hub(HubConfig.load(cfg_path)):
        refused = await push("--config", str(cfg_path), "push-campaigns",
                             str(tmp_path / "bundle.toml"))
    message = refused_in_one_line(refused)
    assert "already in use" in message and "--api" in message
    assert len(message.strip().splitlines()) == 1


async def test_with_no_hub_running_it_pushes_alone(tmp_path: Path) -> None:
    """No hub answers at ``[api]``: a hub is started for the push, as before."""
    cfg_path = config_file(tmp_path, api_port=free_port())
    (tmp_path / "bundle.toml").write_text(BUNDLE_TOML, encoding="utf-8")
    done = await push("--config", str(cfg_path), "push-campaigns",
                      str(tmp_path / "bundle.toml"))
    assert done.returncode == 0, done.stderr
    assert held_versions(tmp_path) == [("region", "east", 7)]


async def test_a_bad_bundle_file_is_a_one_line_refusal(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BUNDLE_TOML.replace("version = 7", "version = 0"),
                                       encoding="utf-8")
    refused = await push("push-campaigns", str(tmp_path / "bad.toml"))
    assert "not a valid campaign bundle" in refused_in_one_line(refused)
    missing = await push("push-campaigns", str(tmp_path / "nope.json"))
    assert "cannot read" in refused_in_one_line(missing)
