from __future__ import annotations

from typing import Any

import httpx
import pytest

from edge.service import EdgeService
from tests.edge import invariants
from tests.edge.conftest import TOKEN2, key


def _h(**extra: str) -> dict[str, str]:
    return {"Idempotency-Key": key(), **extra}


async def _checkout(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/members", json={"phone": "13800138000", "name": "李雷",
                                               "card_uid": "04112233"}, headers=_h())
    assert r.status_code == 201, r.text
    sale = (await client.post("/v1/sales")).json()
    sid = sale["sale_id"]
    r = await client.post(f"/v1/sales/{sid}/member", json={"card_uid": "04112233"}, headers=_h())
    assert r.status_code == 200 and r.json()["member_id"]
    r = await client.post(f"/v1/sales/{sid}/lines", json={
        "sku": "6901234567892", "name": "牛奶", "category": "dairy", "qty": 2,
        "unit_price": 1_250}, headers=_h())
    assert r.json()["total"] == 2_500
    line_no = r.json()["lines"][0]["line_no"]
    r = await client.patch(f"/v1/sales/{sid}/lines/{line_no}", json={"qty": 4}, headers=_h())
    assert r.json()["total"] == 5_000
    q = (await client.get(f"/v1/sales/{sid}/quote")).json()
    assert q["points_to_earn"] == 50
    r = await client.post(f"/v1/sales/{sid}/finalize",
                          json={"tenders": [{"kind": "cash", "amount": 10_000}]},
                          headers=_h())
    assert r.status_code == 200, r.text
    return r.json()


async def test_checkout_over_http(client: httpx.AsyncClient, service: EdgeService) -> None:
    receipt = await _checkout(client)
    assert receipt["change"] == 5_000 and receipt["points_earned"] == 50
    assert receipt["member"]["qr"].startswith("MGM:")
    r = await client.get("/v1/members/lookup", params={"phone": "+86 138 0013 8000"})
    assert r.json()["points"] == 50
    r = await client.post("/v1/refunds", json={"sale_id": receipt["sale_id"]}, headers=_h())
    assert r.status_code == 201 and r.json()["amount"] == 5_000
    invariants.check(service.config.database.path)


async def test_no_token_no_access(client: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-token-xxxx"}):
        r = await client.get("/v1/status", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
    assert (await client.get("/v1/health", headers={"Authorization": ""})).status_code == 200


async def test_a_terminal_cannot_touch_another_terminals_sale(client: httpx.AsyncClient) -> None:
    sid = (await client.post("/v1/sales")).json()["sale_id"]
    r = await client.post(f"/v1/sales/{sid}/lines", headers=_h(Authorization=f"Bearer {TOKEN2}"),
                          json={"sku": "A", "name": "A", "category": "c", "unit_price": 1})
    assert r.status_code == 403 and r.json()["error"]["code"] == "sale_of_other_terminal"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"sku": "A", "name": "A", "category": "c", "qty": 1, "unit_price": 12.5}, 422,
         "validation_error"),
        ({"sku": "A", "name": "A", "category": "c", "qty": 1, "unit_price": "100"}, 422,
         "validation_error"),
        ({"sku": "A", "name": "A", "category": "c", "qty": 0, "unit_price": 100}, 422,
         "invalid_quantity"),
        ({"sku": "A", "name": "A", "category": "c", "qty": -2, "unit_price": 100}, 422,
         "invalid_quantity"),
        ({"sku": "A", "name": "A", "category": "c", "qty": 1, "unit_price": -100}, 422,
         "invalid_price"),
        ({"sku": "A", "name": "A", "category": "c", "qty": 1, "unit_price": 10**9}, 422,
         "price_out_of_range"),
        ({"sku": "", "name": "A", "category": "c", "qty": 1, "unit_price": 1}, 422,
         "invalid_sku"),
        ({"sku": "A", "name": "A", "category": "c", "unit_price": 1, "evil": True}, 422,
         "validation_error"),
    ],
)
async def test_bad_lines_are_refused_with_a_code(client: httpx.AsyncClient, body: dict[str, Any],
                                                 status: int, code: str) -> None:
    sid = (await client.post("/v1/sales")).json()["sale_id"]
    r = await client.post(f"/v1/sales/{sid}/lines", json=body, headers=_h())
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert (await client.get(f"/v1/sales/{sid}")).json()["lines"] == []


async def test_bad_requests_change_nothing(client: httpx.AsyncClient, service: EdgeService) -> None:
    receipt = await _checkout(client)
    mid = receipt["member"]["member_id"]
    before = invariants.snapshot(service.config.database.path)
    cases = [
        (client.post("/v1/members", json={"phone": "12"}, headers=_h()), 422, "invalid_phone"),
        (client.post("/v1/members", json={"phone": "13800138000"}, headers=_h()), 409,
         "phone_taken"),
        (client.post("/v1/members", content=b"{not json", headers=_h(**{
            "content-type": "application/json"})), 422, "validation_error"),
        (client.post("/v1/members", json={"phone": "13900139000"}), 400,
         "missing_idempotency_key"),
        (client.get("/v1/members/lookup", params={"card_uid": "DEADBEEF"}), 404, "unknown_card"),
        (client.get("/v1/members/lookup"), 422, "identifier_required"),
        (client.post(f"/v1/members/{mid}/topups", json={"amount": -100}, headers=_h()), 422,
         "invalid_amount"),
        (client.post(f"/v1/members/{mid}/topups", json={"amount": 0}, headers=_h()), 422,
         "invalid_amount"),
        (client.post(f"/v1/members/{mid}/topups", json={"amount": 10**9}, headers=_h()), 422,
         "amount_out_of_range"),
        (client.post(f"/v1/members/{mid}/topups", json={"amount": 100.5}, headers=_h()), 422,
         "validation_error"),
        (client.post("/v1/members/nobody/topups", json={"amount": 100}, headers=_h()), 404,
         "member_not_found"),
        (client.post("/v1/refunds", json={"sale_id": receipt["sale_id"],
                                          "lines": [{"line_no": 1, "qty": 5}]}, headers=_h()),
         409, "refund_exceeds_sale"),
        (client.post("/v1/sales/nope/finalize", json={"tenders": [{"kind": "cash",
                                                                   "amount": 1}]},
                     headers=_h()), 404, "sale_not_found"),
        (client.post("/v1/members", content=b"x" * 300_000, headers=_h(**{
            "content-type": "application/json"})), 413, "payload_too_large"),
    ]
    for call, status, code in cases:
        r = await call
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert invariants.snapshot(service.config.database.path) == before


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/sales/{sale_id}/finalize" in spec["paths"]
    assert "/v1/refunds" in spec["paths"]


async def test_a_finalize_retried_with_a_new_key_is_told_the_sale_is_paid(
        client: httpx.AsyncClient, service: EdgeService) -> None:
    """A POS that timed out and retries finalize with a fresh key gets the receipt of the sale
    it already paid, not "no open sale", and nothing is paid twice."""
    receipt = await _checkout(client)
    before = invariants.snapshot(service.config.database.path)
    r = await client.post(f"/v1/sales/{receipt['sale_id']}/finalize",
                          json={"tenders": [{"kind": "cash", "amount": 10_000}]}, headers=_h())
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "sale_already_finalized"
    assert error["details"]["receipt"]["sale_id"] == receipt["sale_id"]
    assert error["details"]["receipt"]["total"] == receipt["total"]
    assert invariants.snapshot(service.config.database.path) == before
    r = await client.post("/v1/sales/no-such-sale/finalize",
                          json={"tenders": [{"kind": "cash", "amount": 1}]}, headers=_h())
    assert r.status_code == 404 and r.json()["error"]["code"] == "sale_not_found"
