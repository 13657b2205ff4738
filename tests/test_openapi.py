"""Both APIs document every answer: each HTTP route declares what it returns, so OpenAPI
carries a schema for its success and for the shared error shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.routing import APIRoute

from edge.api import create_app as edge_app
from edge.api.app import ROUTERS as EDGE_ROUTERS
from edge.service import EdgeService
from hub.api.app import ROUTERS as HUB_ROUTERS
from hub.api.app import create_app as hub_app
from hub.app import Hub
from hub.config import HubConfig
from tests.edge.conftest import make_config


def _apps(tmp_path: Path) -> dict[str, FastAPI]:
    hub = Hub(HubConfig.model_validate({"hub": {"database": str(tmp_path / "hub.db"),
                                                "data_dir": str(tmp_path)},
                                        "api": {"token": "hq-token-000000"}}))
    return {"edge": edge_app(EdgeService(make_config(tmp_path))), "hub": hub_app(hub)}


@pytest.mark.parametrize("which", ["edge", "hub"])
def test_every_route_declares_its_answer(tmp_path: Path, which: str) -> None:
    app = _apps(tmp_path)[which]
    routes = [r for router in (EDGE_ROUTERS if which == "edge" else HUB_ROUTERS)
              for r in router.routes if isinstance(r, APIRoute)]
    assert routes
    undeclared = [f"{sorted(r.methods)} {r.path}" for r in routes
                  if r.response_model in (None, Any) and r.response_class is not Response]
    assert undeclared == []
    spec: dict[str, Any] = app.openapi()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
            assert "content" in ok, f"{method} {path}: no answer documented"
            schema = next(iter(ok["content"].values())).get("schema", {})
            described = {"$ref", "type", "properties", "items", "anyOf"} & set(schema)
            assert described or "text/plain" in ok["content"], f"{method} {path}: no schema"
            error = op["responses"].get("422") or op["responses"].get("401")
            assert error is not None and "ErrorResponse" in str(error), f"{method} {path}"

