"""HQ's way out of a campaign version pushed too high: the next generation (issue 14)."""

from __future__ import annotations

from pathlib import Path

import httpx

from edge import demo
from edge.gateway import StoreGateway
from hub.api.app import create_app
from hub.app import Hub
from hub.config import HubConfig
from protocol import signing
from protocol.campaigns import MAX_BUNDLE_VERSION, CampaignBundle
from tests.edge.conftest import make_config

TOKEN = "hq-test-token-0003"


async def test_a_scope_held_at_the_top_version_moves_on_with_the_next_generation(
        tmp_path: Path) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0},
        "broker": {"embedded_port": 0}, "api": {"token": TOKEN}})
    async with Hub(cfg) as hub, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hq",
            headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        bundle = demo.demo_bundle().model_dump(mode="json")
        assert "generation" not in bundle  # generation 0: the wire form of before
        # A scope a store has run at the top version since before the step limit existed.
        top = demo.demo_bundle().model_copy(update={"version": MAX_BUNDLE_VERSION})
        await hub.db.transaction(lambda tx: tx.execute(
            "INSERT INTO campaign_bundles(scope, scope_id, version, manifest) VALUES"
            " ('fleet', '', ?, ?)", (MAX_BUNDLE_VERSION, b"")))
        r = await c.post("/v1/campaigns", json={**bundle, "version": MAX_BUNDLE_VERSION})
        assert r.status_code == 409 and r.json()["error"]["code"] == "stale_version"
        assert "push generation 1" in r.json()["error"]["message"]
        for change, code in (({"generation": 2}, "version_jump"),
                             ({"generation": -1}, "validation_error")):
            r = await c.post("/v1/campaigns", json={**bundle, **change})
            assert r.json()["error"]["code"] == code, r.text
        r = await c.post("/v1/campaigns", json={**bundle, "generation": 1, "version": 1})
        assert r.status_code == 201 and r.json()["generation"] == 1, r.text
        r = await c.post("/v1/campaigns", json={**bundle, "generation": 0, "version": 5})
        assert r.json()["error"]["code"] == "stale_version"
        r = await c.post("/v1/campaigns", json={**bundle, "generation": 1, "version": 2})
        assert r.status_code == 201, r.text

        # A store holding the top version takes the signed next generation, and no older one.
        store = make_config(tmp_path / "s", sync={"hub_public_key": signing.public_b64(hub.key)})
        (tmp_path / "s").mkdir()
        async with StoreGateway(store) as svc:
            assert await svc.apply_bundle(signing.sign(top, hub.key)) == "applied"
            nxt = top.model_copy(update={"generation": 1, "version": 1})
            assert await svc.apply_bundle(signing.sign(nxt, hub.key)) == "applied"
            assert await svc.apply_bundle(signing.sign(nxt, hub.key)) == "held"
            assert await svc.apply_bundle(signing.sign(top, hub.key)) == "stale"
            held = CampaignBundle.model_validate_json(await svc.db.read(lambda conn: conn.execute(
                "SELECT bundle FROM campaign_bundles").fetchone()[0]))
            assert held.order == (1, 1)
            # The signature covers the generation: a store cannot be moved on by a forgery.
            forged = signing.sign(top, hub.key).model_copy(update={"generation": 2})
            try:
                signing.verify(forged, hub.key.public_key())
            except signing.SignatureError:
                pass
            else:
                raise AssertionError("a bundle with its generation changed still verified")
