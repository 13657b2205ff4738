"""The HQ API's /docs without internet: Swagger UI served by the hub itself."""

from __future__ import annotations

from pathlib import Path

from hub.api.app import api_server
from hub.app import Hub
from hub.config import HubConfig
from hub.sync.broker import free_port
from tests.support.docs import assert_docs_served_locally
from tests.support.serving import serving


async def test_docs_load_nothing_from_another_host(tmp_path: Path) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path)},
        "broker": {"embedded_port": free_port()},
        "api": {"token": "hq-docs-token-0001", "port": 0}})
    async with Hub(cfg) as hub, serving(api_server(hub)) as port:
        assets = await assert_docs_served_locally(f"http://127.0.0.1:{port}")
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("redoc.standalone.js") for a in assets)
