"""The store engineer's CLI beside a running edge: a campaign bundle applied with
``membergate-edge apply-campaigns`` prices the running edge's next quote, and ``membergate-edge
status`` shows what ``GET /v1/status`` shows (real uvicorn, the CLI in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.config import load_config
from edge.gateway import StoreGateway
from tests.edge.conftest import TOKEN
from tests.support.serving import pos_server, serving

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = {
    "version": 1, "scope": "store", "scope_id": "S001", "issued_at": "2026-01-01T00:00:00Z",
    "campaigns": [{"campaign_id": "fresh-half", "name": "Fresh half price",
                   "members_only": False,
                   "rule": {"kind": "category_percent_off", "categories": ["fresh"],
                            "percent_bp": 5_000}}],
}


def edge_cli(config: Path, *args: str) -> Any:
    """``membergate-edge --config config …`` in a process of its own; its JSON answer."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "edge.cli", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(f'[store]\nstore_id = "S001"\n[database]\npath = "{tmp_path / "edge.db"}"\n'
                    f'[api.tokens]\nPOS-1 = "{TOKEN}"\n', encoding="utf-8")
    return path


@pytest.fixture
async def pos(config_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The running edge: its POS API on a real socket."""
    async with StoreGateway(load_config(config_file)) as service, \
            serving(pos_server(service)) as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


async def test_campaigns_applied_with_the_cli_price_the_running_edges_next_quote(
        pos: httpx.AsyncClient, config_file: Path, tmp_path: Path) -> None:
    sid = (await pos.post("/v1/sales")).json()["sale_id"]
    r = await pos.post(f"/v1/sales/{sid}/lines", headers={"Idempotency-Key": "line-1"}, json={
        "sku": "APPLE", "name": "apple", "category": "fresh", "unit_price": 1_000})
    assert r.json()["total"] == 1_000  # no campaign yet
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(BUNDLE), encoding="utf-8")

    applied = edge_cli(config_file, "apply-campaigns", str(bundle))
    assert applied == {"applied": True, "outcome": "applied"}
    quote = (await pos.get(f"/v1/sales/{sid}/quote")).json()
    assert quote["total"] == 500  # the running edge prices with it, no restart
    assert "fresh-half" in (await pos.get("/v1/status")).json()["campaigns"]
    # The same file again changes nothing and says so.
    assert edge_cli(config_file, "apply-campaigns", str(bundle)) == {
        "applied": False, "outcome": "held"}


async def test_cli_status_and_the_api_status_are_the_same_figures(
        pos: httpx.AsyncClient, config_file: Path) -> None:
    r = await pos.post("/v1/members", headers={"Idempotency-Key": "reg-1"},
                       json={"phone": "13800138000", "name": "Li"})
    assert r.status_code == 201
    await pos.post("/v1/sales")  # an open basket: only the serving process knows it

    api = (await pos.get("/v1/status")).json()
    cli = edge_cli(config_file, "status")
    assert api["live"] == {"open_sales": 1, "subscribers": 0}
    assert cli.pop("live") is None  # a separate process has no baskets: it does not pretend
    api.pop("live")
    assert cli == api
    assert cli["members"] == 1 and cli["last_seq"] >= 1
    assert cli["hub"] == {"broker": None, "connected": False, "since": None, "acked_seq": 0,
                          "last_ack_at": None}
