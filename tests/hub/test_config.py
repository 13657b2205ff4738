"""The hub's configuration refuses what would break a guarantee, with the reason."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.cli import main as edge_main
from hub.cli import main as hub_main
from hub.config import HubConfig


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "hub.example.internal"])
def test_the_embedded_broker_is_not_served_beyond_this_box(host: str) -> None:
    with pytest.raises(ValidationError, match="serves this box only"):
        HubConfig.model_validate({"broker": {"embedded_host": host}})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_embedded_broker_may_listen_on_loopback(host: str) -> None:
    assert HubConfig.model_validate({"broker": {"embedded_host": host}}).broker.host is None


def test_with_an_external_broker_the_embedded_address_does_not_matter() -> None:
    cfg = HubConfig.model_validate({"broker": {"host": "mqtt.example.internal",
                                               "embedded_host": "0.0.0.0"}})
    assert cfg.broker.host == "mqtt.example.internal"


def test_tls_needs_an_external_broker() -> None:
    with pytest.raises(ValidationError, match=r"\[broker.tls\] needs \[broker\] host"):
        HubConfig.model_validate({"broker": {"tls": {}}})


@pytest.mark.parametrize("command", ["hub", "edge"])
def test_a_bad_configuration_file_is_named_with_the_reason_and_nothing_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    bad = tmp_path / "bad.toml"
    if command == "hub":
        bad.write_text('[broker]\nembedded_host = "0.0.0.0"\n', encoding="utf-8")
        run = hub_main
    else:
        bad.write_text("[sync]\nbroker_port = 0\n", encoding="utf-8")
        run = edge_main
    with pytest.raises(SystemExit) as exit_:
        run(["--config", str(bad), "run", "--seconds", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid configuration {bad}" in err and "Traceback" not in err
    assert ("serves this box only" if command == "hub" else "broker_port") in err
    (tmp_path / "broken.toml").write_text("[sync\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        run(["--config", str(tmp_path / "broken.toml"), "run"])
    assert "invalid configuration" in capsys.readouterr().err


def test_the_chain_time_zone_is_an_iana_name() -> None:
    assert HubConfig().hub.timezone == "Asia/Shanghai"
    assert HubConfig.model_validate({"hub": {"timezone": "Europe/Paris"}}).hub.timezone \
        == "Europe/Paris"
    for bad in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(ValidationError, match="unknown time zone"):
            HubConfig.model_validate({"hub": {"timezone": bad}})


def test_the_readme_messaging_settings_load_as_written() -> None:
    """The marketing section's ``hub.toml`` block is a configuration the hub takes."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"loads this block as written\):\n\n```toml\n(.*?)```", readme, re.S)
    assert block is not None
    cfg = HubConfig.model_validate(tomllib.loads(block.group(1)))
    assert cfg.notify.quotas["webhook"].messages == 1
    assert cfg.channels.sms is not None and cfg.channels.sms.callback_token is not None
    assert cfg.channels.email is not None and cfg.automation.message_cost == {"sms": 5}


@pytest.mark.parametrize(("channel", "says"), [
    ({"webhook": {"url": "http://bridge.example.cn/hook", "secret": "s"}}, "must be https"),
    ({"webhook": {"url": "http://bridge.example.cn/hook", "secret": "s",
                  "allow_http_loopback": True}}, "must be https"),
    ({"sms": {"access_key_id": "a", "access_key_secret": "s", "sign_name": "【店】"}},
     "without 【】"),
    ({"email": {"host": "smtp.example.cn", "sender": "m@example.cn", "starttls": False,
                "username": "u", "password": "p"}}, "needs starttls"),
])
def test_a_channel_set_up_unsafely_is_refused_at_load(channel: dict[str, object],
                                                      says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        HubConfig.model_validate({"channels": channel})
