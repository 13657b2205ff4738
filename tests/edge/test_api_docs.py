"""The POS API's /docs in a store without internet: Swagger UI served by the edge itself."""

from __future__ import annotations

from edge.service import EdgeService
from tests.support.docs import assert_docs_served_locally
from tests.support.serving import pos_server, serving


async def test_docs_load_nothing_from_another_host(service: EdgeService) -> None:
    async with serving(pos_server(service)) as port:
        assets = await assert_docs_served_locally(f"http://127.0.0.1:{port}")
    assert {"/openapi.json"} < set(assets)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("swagger-ui.css") for a in assets)
