"""The hub's campaign signing key in every store snippet: a store given only its snippet accepts
the hub's bundles; without the key provisioning warns (such a store refuses every bundle)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge import demo
from edge.config import EdgeConfig
from protocol import signing
from tests.provisioning.test_broker import fleet_text, run_cli


def snippet_sync(out: Path, store_id: str) -> EdgeConfig:
    text = (out / "stores" / f"{store_id}.toml").read_text(encoding="utf-8")
    return EdgeConfig.model_validate({"sync": tomllib.loads(text)["sync"]})


@pytest.mark.parametrize("given", ["fleet", "option"])
def test_every_store_snippet_carries_the_hub_public_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str) -> None:
    key = signing.new_private_key()
    public = signing.public_b64(key)
    fleet, extra = fleet_text(), ["--hub-public-key", public]
    if given == "fleet":
        fleet, extra = fleet.replace("[hub]\n", f'[hub]\npublic_key = "{public}"\n', 1), []
    out = tmp_path / "out"
    assert run_cli(tmp_path, fleet, out, *extra) == 0
    assert "no hub public key" not in capsys.readouterr().err
    bundle = signing.sign(demo.demo_bundle(), key)
    for store_id in ("S001", "S002", "S003"):
        configured = snippet_sync(out, store_id).sync.hub_public_key
        assert configured == public
        signing.verify(bundle, signing.load_public_b64(configured))  # what the store checks


def test_without_the_hub_key_provisioning_warns(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, fleet_text(), out) == 0
    err = capsys.readouterr().err
    assert "no hub public key" in err and "refuses every campaign bundle" in err
    assert snippet_sync(out, "S001").sync.hub_public_key is None


@pytest.mark.parametrize("where", ["fleet", "option"])
def test_a_key_that_is_not_an_ed25519_public_key_is_refused_and_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    fleet, extra = fleet_text(), ["--hub-public-key", "bm90IGEga2V5"]
    if where == "fleet":
        fleet, extra = fleet.replace("[hub]\n", '[hub]\npublic_key = "bm90IGEga2V5"\n', 1), []
    out = tmp_path / "out"
    assert run_cli(tmp_path, fleet, out, *extra) == 2
    err = capsys.readouterr().err
    assert "not an Ed25519 public key" in err and "nothing was written" in err
    assert not out.exists()
