"""The gateway's ``/metrics`` for Prometheus, over a real uvicorn: what a store operator graphs
(outbox depth, ack lag, the hub link, device health, POS request latency)."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from edge.gateway import StoreGateway
from tests.edge.conftest import TOKEN, make_config, register
from tests.support.mosquitto import free_port
from tests.support.serving import pos_server, serving

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_show_the_outbox_the_link_devices_and_requests(tmp_path: Path) -> None:
    # A hub that cannot be reached (nothing listens on its port) and one simulated lane.
    config = make_config(tmp_path, sync={"broker_host": "127.0.0.1", "broker_port": free_port()},
                         lanes=[{"terminal_id": "POS-1", "simulated": True}])
    async with StoreGateway(config) as svc, serving(pos_server(svc)) as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {TOKEN}"}) as pos:
        assert (await pos.get("/metrics", headers={"Authorization": "Bearer nope"})
                ).status_code == 401
        member = await register(svc)
        assert (await pos.get(f"/v1/members/{member['member_id']}")).status_code == 200
        r = await pos.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        got = samples(r.text)
        depth = (await svc.status())["outbox"]["depth"]
        assert depth >= 1  # the registration waits for the hub
        assert got[("membergate_edge_outbox_depth", ())] == depth
        assert got[("membergate_edge_ack_lag_events", ())] == depth
        assert got[("membergate_edge_hub_connected", ())] == 0
        devices = {dict(labels)["device"] for (name, labels), value in got.items()
                   if name == "membergate_edge_device_health" and value == 1}
        assert devices == {d.device_id for d in svc.device_health()} and devices
        routes = {dict(labels).get("route") for (name, labels) in got
                  if name == "membergate_edge_http_request_seconds_count"}
        assert "/v1/members/{member_id}" in routes
        assert f"/v1/members/{member['member_id']}" not in routes
