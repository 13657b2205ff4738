"""Both APIs fuzzed from their own OpenAPI (schemathesis), as a client that holds a valid token
would call them: whatever it sends, the answer is never a 5xx. A fixed seed and a bounded
number of cases per operation keep the run the same in every CI and under a minute."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from edge.api import create_app as pos_app
from edge.service import EdgeService
from hub.api.app import create_app as hq_app
from hub.app import Hub
from hub.config import HubConfig
from tests.edge.conftest import make_config
from tests.support.mosquitto import free_port

TOKEN = "fuzz-token-0000000001"
CASES = settings(max_examples=25, derandomize=True, deadline=None,
                 suppress_health_check=list(HealthCheck))


def _serve(app: Any, port: int, started: threading.Event, stop: threading.Event,
           hub: Hub | None = None) -> None:
    """The app on a real uvicorn in this thread's own event loop (the hub started in it)."""
    async def main() -> None:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning"))
        if hub is not None:
            async with hub:
                await _until(server, started, stop)
        else:
            await _until(server, started, stop)

    asyncio.run(main())


async def _until(server: uvicorn.Server, started: threading.Event, stop: threading.Event
                 ) -> None:
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 - a flag only
        await asyncio.sleep(0.05)
    started.set()
    while not stop.is_set():  # noqa: ASYNC110 - a thread's flag
        await asyncio.sleep(0.05)
    server.should_exit = True
    await serving


# Ids that exist (a member, a sale, a product, a store): a path parameter of that name is
# given one, so the cases reach past "not found" into what a route does with its body.
KNOWN: dict[str, str] = {}


def _schema(app: Any, tmp: Path, hub: Hub | None = None) -> Iterator[Any]:
    port = free_port()
    started, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve, args=(app, port, started, stop, hub), daemon=True)
    thread.start()
    assert started.wait(30), "the API did not start"
    base = f"http://127.0.0.1:{port}"
    try:
        _seed(base, pos=hub is None)
        yield schemathesis.openapi.from_url(f"{base}/openapi.json",
                                            headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        stop.set()
        thread.join(30)


def _seed(base: str, *, pos: bool) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=auth) as c:
        if pos:
            c.put("/v1/products", json={"products": [{
                "sku": "6901234567892", "name": "牛奶", "category": "dairy",
                "unit_price": 1200}]}).raise_for_status()
            member = c.post("/v1/members", json={"phone": "13800138000"},
                            headers={"Idempotency-Key": "seed-1"})
            member.raise_for_status()
            sale = c.post("/v1/sales")
            sale.raise_for_status()
            KNOWN.update(member_id=member.json()["member_id"], sale_id=sale.json()["sale_id"],
                         sku="6901234567892", line_no="1")
            c.post(f"/v1/sales/{KNOWN['sale_id']}/lines", json={"sku": "6901234567892"},
                   headers={"Idempotency-Key": "seed-2"}).raise_for_status()
        else:
            c.put("/v1/stores/S001", json={"name": "Seed", "region": "east"}).raise_for_status()
            KNOWN.update(store_id="S001")


def _known(case: Any) -> Any:
    for name in list(case.path_parameters or {}):
        if name in KNOWN:
            case.path_parameters[name] = KNOWN[name]
    # The token is the caller's (a valid one): the fuzz is of everything else it sends.
    for name in [h for h in (case.headers or {}) if h.lower() == "authorization"]:
        del case.headers[name]
    return case


@pytest.fixture(scope="module")
def pos_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("pos")
    config = make_config(tmp, api={"tokens": {"POS-1": TOKEN}})
    yield from _schema(pos_app(EdgeService(config)), tmp)


@pytest.fixture(scope="module")
def hq_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("hq")
    hub = Hub(HubConfig.model_validate({
        "hub": {"database": str(tmp / "hub.db"), "data_dir": str(tmp), "validate_workers": 0},
        "broker": {"embedded_port": 0}, "api": {"token": TOKEN}}))
    yield from _schema(hq_app(hub), tmp, hub)


pos = schemathesis.pytest.from_fixture("pos_schema")
hq = schemathesis.pytest.from_fixture("hq_schema")


@pos.parametrize()
@CASES
def test_the_pos_api_answers_no_5xx(case: Any) -> None:
    _known(case).call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                           checks=[not_a_server_error])


@hq.parametrize()
@CASES
def test_the_hq_api_answers_no_5xx(case: Any) -> None:
    _known(case).call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                           checks=[not_a_server_error])
