"""The HQ API over a running hub (real Mosquitto): token, status, conflicts, members, campaigns."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from edge import demo
from hub.api.app import api_server, create_app
from hub.app import Hub
from hub.config import HubConfig
from hub.ledger.apply import apply_batch
from protocol import logs, topics
from protocol.codec import encode
from protocol.events import (
    MAX_POINTS,
    CouponRedeemed,
    Event,
    EventBatch,
    MemberRegistered,
    PointsEarned,
)
from protocol.mqtt import MqttClient
from protocol.tls import TlsError
from provisioning import certs
from tests.hub.test_sync_e2e import wait_for
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401
from tests.support.serving import (  # noqa: F401 - json_logs is a fixture
    chunked,
    json_logs,
    raw_exchange,
    refuses_plain_http_and_public_trust,
    serving,
    status_and_error,
    uvicorn_lines_are_json,
)

TOKEN = "hq-test-token-0001"


async def test_hq_api(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path)},
        "broker": {"host": mosquitto.host, "port": mosquitto.port},
        "api": {"token": TOKEN}})
    async with Hub(cfg) as hub:
        app = create_app(hub)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hq",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            r = await c.get("/v1/status", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert hub.link.mqtt is not None
            await hub.link.mqtt.wait_connected(10)  # subscribed: nothing published now is lost
            async with MqttClient(mosquitto.host, mosquitto.port, client_id="x") as edge:
                await edge.wait_connected(10)
                for store, hlc in (("S002", 2_000), ("S001", 1_000)):
                    body = CouponRedeemed(coupon_code="CPN0000000009", sale_id=f"s-{store}",
                                          amount=300)
                    batch = EventBatch(store_id=store, epoch=1, events=[Event(
                        event_id=f"e{store}", store_id=store, epoch=1, seq=1, hlc=hlc,
                        body=body)])
                    await edge.publish(topics.events(store), encode(batch))

                await edge.publish(topics.events("S003"), b"not msgpack")

                async def both() -> bool:
                    return hub.pipeline.applied_events == 2 and bool(hub.refusals.counts)

                await wait_for(both, "both batches applied, the junk refused")
            conflicts = (await c.get("/v1/conflicts/coupons")).json()["conflicts"]
            assert [(x["store_id"], x["kept_store"]) for x in conflicts] == [("S002", "S001")]
            status = (await c.get("/v1/status")).json()
            assert {s["store_id"] for s in status["stores"]} == {"S001", "S002"}
            ingest = status["ingest"]  # the uplink's way through the hub, for the operator
            assert ingest["received_batches"] >= 2 and ingest["commits"] >= 1
            assert ingest["validate_workers"] == 1 and ingest["validator_restarts"] == 0
            assert ingest["validation_fallbacks"] == 0  # the edge encodes canonically
            assert (await c.get("/v1/members/nobody")).status_code == 404
            bundle = demo.demo_bundle().model_dump(mode="json")
            r = await c.post("/v1/campaigns", json=bundle)
            assert r.status_code == 201 and r.json()["topic"] == topics.FLEET_CAMPAIGNS
            r = await c.post("/v1/campaigns", json=bundle)  # the same version again
            assert r.status_code == 409 and r.json()["error"]["code"] == "stale_version"
            assert (await c.get("/v1/rebuild")).json()["mismatch_count"] == 0
            await hq_metrics_say_what_happened(c, dict(hub.refusals.counts))


async def hq_metrics_say_what_happened(c: httpx.AsyncClient, refused: dict[str, int]) -> None:
    """``/metrics`` in the Prometheus text format: the merge, the fleet, the requests."""
    assert (await c.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
    r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(r.text) for s in family.samples}
    assert samples[("membergate_hub_applied_events_total", ())] == 2
    assert samples[("membergate_hub_store_lag_events", (("store", "S001"),))] == 0
    projected = {dict(labels)["projection"] for (name, labels) in samples
                 if name == "membergate_hub_projection_lag_events"}
    assert projected == {"sales_facts", "member_activity", "daily_rollups", "point_lots",
                         "store_sales", "sku_days", "member_refund_days", "staff_days",
                         "member_store_days", "points_days", "sv_days"}
    assert {dict(labels)["reason"]: value for (name, labels), value in samples.items()
            if name == "membergate_hub_refusals_total"} == refused
    # Latency by route template: a member id never becomes a label value.
    routes = {dict(labels).get("route") for (name, labels) in samples
              if name == "membergate_hub_http_request_seconds_count"}
    assert "/v1/members/{member_id}" in routes and "/v1/members/nobody" not in routes


async def test_hq_api_over_https(tmp_path: Path) -> None:
    """With ``[api] tls_cert_file``/``tls_key_file`` the API speaks HTTPS only: the token never
    crosses the network in clear text. Served for real (uvicorn on a free port)."""
    ca = certs.new_ca("HQ test CA")
    server_cert = certs.server_cert(ca, "127.0.0.1")
    (tmp_path / "api.crt").write_bytes(server_cert.cert_pem)
    (tmp_path / "api.key").write_bytes(server_cert.key_pem)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0},
        "broker": {"embedded_port": 0},
        "api": {"token": TOKEN, "port": 0, "tls_cert_file": str(tmp_path / "api.crt"),
                "tls_key_file": str(tmp_path / "api.key")}})
    assert cfg.api.scheme == "https"
    async with Hub(cfg) as hub, serving(api_server(hub)) as port:
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(verify=trust, headers=auth) as c:
            r = await c.get(f"https://127.0.0.1:{port}/v1/status")
            assert r.status_code == 200 and "stores" in r.json()
        await refuses_plain_http_and_public_trust(port, "/v1/status", auth)


def test_an_unusable_api_certificate_is_refused_before_serving(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        HubConfig.model_validate({"api": {"tls_cert_file": "x.crt"}})
    (tmp_path / "api.crt").write_text("not a certificate")
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path)},
        "api": {"token": TOKEN, "tls_cert_file": str(tmp_path / "api.crt"),
                "tls_key_file": str(tmp_path / "api.key")}})
    hub = Hub(cfg)  # not started: building the server reads only the configuration
    with pytest.raises(TlsError, match=r"\[api\] tls_cert_file .*api\.crt.*cannot be used"):
        api_server(hub)


@pytest.mark.usefixtures("json_logs")
async def test_the_hq_api_holds_clients_to_its_limits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As the POS API (tests/edge/test_api_limits.py): no body read without HQ's token, bodies
    counted as they arrive against [api] max_request_bytes, a stalled head closed, a token
    outside ASCII refused, uvicorn's lines in the hub's JSON log."""
    logs.setup("WARNING")
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0},
        "broker": {"embedded_port": 0},
        "api": {"token": TOKEN, "port": 0, "max_request_bytes": 1024, "head_timeout_s": 0.5}})
    assert HubConfig().api.max_request_bytes == 1024 * 1024
    bundle = demo.demo_bundle().model_dump_json().encode()
    assert len(bundle) > 1024

    def post(token: str | None) -> bytes:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        return (f"POST /v1/campaigns HTTP/1.1\r\nHost: hq\r\n{auth}Content-Type:"
                " application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()

    async with Hub(cfg) as hub, serving(api_server(hub)) as port:
        for token in (None, "wrong-token-0000"):  # the head alone: refused without its body
            assert status_and_error(await raw_exchange(port, post(token))) == (
                401, "unauthorized")
        response = await raw_exchange(port, post(TOKEN) + chunked(bundle[:1025]))
        assert status_and_error(response) == (413, "payload_too_large")
        assert await raw_exchange(port, b"GET /v1/status HTTP/1.1\r\nHost: hq\r\n") == b""
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{port}/v1/status",
                               headers={b"Authorization": "Bearer 总部令牌-0001".encode()})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        await uvicorn_lines_are_json(port, capsys)


async def test_hq_writes_points_and_coupons_once_per_key(tmp_path: Path,
                                                         mosquitto: Mosquitto) -> None:
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0},
        "broker": {"host": mosquitto.host, "port": mosquitto.port},
        "allowance": {"enabled": False}, "api": {"token": TOKEN}})
    async with Hub(cfg) as hub:
        batch = EventBatch(store_id="S001", epoch=1, events=[Event(
            event_id=f"e{i}", store_id="S001", epoch=1, seq=i, hlc=1_000 + i, body=body)
            for i, body in enumerate((
                MemberRegistered(member_id="m1", member_code="C1", phone="+8613900000001"),
                PointsEarned(member_id="m1", lot_id="l1", points=100)), 1)])
        await hub.db.transaction(lambda tx: apply_batch(tx, batch, 1))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)),
                                     base_url="http://hq",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            url = "/v1/members/m1/points/adjustments"
            ask = {"delta": -40, "reason": "damaged parcel, reversed", "actor": "li.wei@hq"}
            first = await c.post(url, json=ask, headers={"Idempotency-Key": "adj-1"})
            assert first.status_code == 201, first.text
            assert first.json()["points"] == 60 and first.json()["stream"] == "HQ"
            again = await c.post(url, json=ask, headers={"Idempotency-Key": "adj-1"})
            assert (again.status_code, again.json()) == (201, first.json())
            assert again.headers["Idempotent-Replayed"] == "true"
            other = await c.post(url, json={**ask, "delta": -41},
                                 headers={"Idempotency-Key": "adj-1"})
            assert other.status_code == 409
            assert other.json()["error"]["code"] == "idempotency_key_reused"
            too_much = await c.post(url, json={**ask, "delta": -61},
                                    headers={"Idempotency-Key": "adj-2"})
            assert too_much.status_code == 409
            assert too_much.json()["error"]["code"] == "insufficient_balance"
            for bad in ({**ask, "delta": 0}, {**ask, "delta": MAX_POINTS + 1},
                        {**ask, "reason": ""}, {"delta": 5, "reason": "r"},
                        {**ask, "surprise": 1}):
                r = await c.post(url, json=bad, headers={"Idempotency-Key": "adj-bad"})
                assert r.status_code == 422 and "error" in r.json(), bad
            r = await c.post(url, json=ask)  # no key: a retry could not be told apart
            assert r.status_code == 422 and "error" in r.json()
            r = await c.post("/v1/members/nobody/points/adjustments", json=ask,
                             headers={"Idempotency-Key": "adj-3"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "member_not_found"

            coupon = {"kind": "amount_off", "value": 1_000, "min_spend": 5_000,
                      "categories": ["grocery"], "expires_on": "2031-12-31"}
            issued = await c.post("/v1/members/m1/coupons", json=coupon,
                                  headers={"Idempotency-Key": "cpn-1"})
            assert issued.status_code == 201, issued.text
            code = issued.json()["coupon_code"]
            assert issued.json()["qr"] == f"MGC:{code}" and issued.json()["seq"] == 2
            again = await c.post("/v1/members/m1/coupons", json=coupon,
                                 headers={"Idempotency-Key": "cpn-1"})
            assert again.json()["coupon_code"] == code  # the same coupon, not a second
            for bad in ({**coupon, "kind": "percent_off", "value": 10_001},
                        {**coupon, "value": 0}, {**coupon, "kind": "free_lunch"},
                        {**coupon, "categories": ["x"] * 101}):
                r = await c.post("/v1/members/m1/coupons", json=bad,
                                 headers={"Idempotency-Key": "cpn-bad"})
                assert r.status_code == 422 and "error" in r.json(), bad
            member = (await c.get("/v1/members/m1")).json()
            assert member["points"] == 60 and [x["coupon_code"] for x in member["coupons"]] == [
                code]
            status = (await c.get("/v1/status")).json()
            assert {s["store_id"] for s in status["stores"]} == {"S001"}
            assert status["hub_streams"] == [{"stream": "HQ", "epoch": 1, "seq": 2}]
            assert (await c.get("/v1/rebuild")).json()["mismatch_count"] == 0


async def test_campaign_scopes_and_versions_are_bounded(tmp_path: Path) -> None:
    """A scope id that is no topic level, a version past 2^53 - 1, or a jump that would leave a
    scope near the top (stores only ever move up) is refused, and nothing is published."""
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0},
        "broker": {"embedded_port": 0}, "api": {"token": TOKEN}})
    async with Hub(cfg) as hub, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hq",
            headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        bundle = demo.demo_bundle().model_dump(mode="json")
        for change, code in (({"scope": "region", "scope_id": "east/#"}, "validation_error"),
                             ({"version": 2**63 - 1}, "validation_error"),
                             ({"version": 1_000_002}, "version_jump")):
            r = await c.post("/v1/campaigns", json={**bundle, **change})
            assert r.status_code in (409, 422) and r.json()["error"]["code"] == code, r.text
        assert await hub.db.read(lambda tx: tx.scalar(
            "SELECT count(*) FROM campaign_bundles")) == 0
        r = await c.post("/v1/campaigns", json={**bundle, "version": 1_000_000})
        assert r.status_code == 201, r.text  # one step of at most a million from nothing held
