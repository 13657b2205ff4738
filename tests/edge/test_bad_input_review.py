"""Inputs a fuzzer and a reviewer found accepted and then failing (a 500, or a sale that could
never be paid): each is now a 4xx with a code, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edge.service import EdgeService
from protocol.ids import member_qr
from tests.edge import invariants
from tests.edge.conftest import key


def _h() -> dict[str, str]:
    return {"Idempotency-Key": key()}


async def _member(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/members", json={"phone": "13800138000"}, headers=_h())
    assert r.status_code == 201, r.text
    return str(r.json()["member_id"])


def _unchanged(service: EdgeService, before: dict[str, Any]) -> None:
    assert invariants.snapshot(service.config.database.path) == before


@pytest.mark.parametrize(("body", "code"), [
    ({"sku": "s" * 65, "name": "n", "category": "c", "qty": 1, "unit_price": 100},
     "validation_error"),  # a sku the sale's event cannot carry
    ({"sku": "s1", "name": "n", "category": "c" * 65, "qty": 1, "unit_price": 100},
     "validation_error"),
    ({"sku": "s2", "name": "n", "category": "c", "qty": 9_999, "unit_price": 10_000_000},
     "amount_too_large"),  # each within its limit, the total beyond a sale's
])
async def test_a_line_no_sale_could_carry_is_refused_when_added(
        client: httpx.AsyncClient, service: EdgeService, body: dict[str, Any], code: str
) -> None:
    sid = (await client.post("/v1/sales")).json()["sale_id"]
    r = await client.post(f"/v1/sales/{sid}/lines", json=body, headers=_h())
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert (await client.get(f"/v1/sales/{sid}")).json()["lines"] == []


async def test_raising_a_quantity_beyond_what_a_sale_carries_is_refused(
        client: httpx.AsyncClient) -> None:
    sid = (await client.post("/v1/sales")).json()["sale_id"]
    r = await client.post(f"/v1/sales/{sid}/lines", json={
        "sku": "s", "name": "n", "category": "c", "qty": 1, "unit_price": 10_000_000},
        headers=_h())
    assert r.status_code == 200
    r = await client.patch(f"/v1/sales/{sid}/lines/1", json={"qty": 9_999}, headers=_h())
    assert r.status_code == 422 and r.json()["error"]["code"] == "amount_too_large"
    assert (await client.get(f"/v1/sales/{sid}")).json()["lines"][0]["qty"] == 1
    r = await client.patch(f"/v1/sales/{sid}/lines/10001", json={"qty": 1}, headers=_h())
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


async def test_profile_and_registration_bad_input(client: httpx.AsyncClient,
                                                  service: EdgeService) -> None:
    mid = await _member(client)
    before = invariants.snapshot(service.config.database.path)
    r = await client.patch(f"/v1/members/{mid}", json={"phone": None}, headers=_h())
    assert r.status_code == 422 and r.json()["error"]["code"] == "phone_required"
    r = await client.post("/v1/members", json={"phone": "13900000001", "birthday": 0},
                          headers=_h())
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    utf16 = '{"phone": "13900000002"}'.encode("utf-16")
    for raw in (utf16, utf16[2:]):  # with its byte-order mark and without
        r = await client.post("/v1/members", content=raw, headers={
            **_h(), "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_encoding"
    _unchanged(service, before)
    r = await client.post("/v1/members", json={"phone": "13900000003", "birthday": "1990-05-17"},
                          headers=_h())  # ISO text is the one way to write a date
    assert r.status_code == 201 and r.json()["birthday"] == "1990-05-17", r.text


async def test_a_refund_of_no_lines_is_refused(client: httpx.AsyncClient,
                                               service: EdgeService) -> None:
    sid = (await client.post("/v1/sales")).json()["sale_id"]
    await client.post(f"/v1/sales/{sid}/lines", json={
        "sku": "s", "name": "n", "category": "c", "qty": 1, "unit_price": 500}, headers=_h())
    r = await client.post(f"/v1/sales/{sid}/finalize",
                          json={"tenders": [{"kind": "cash", "amount": 500}]}, headers=_h())
    assert r.status_code == 200
    before = invariants.snapshot(service.config.database.path)
    for lines in ([], [{"line_no": 10_001, "qty": 1}]):
        r = await client.post("/v1/refunds", json={"sale_id": sid, "lines": lines},
                              headers=_h())
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    _unchanged(service, before)


async def test_a_refused_scan_opens_no_sale(client: httpx.AsyncClient,
                                            service: EdgeService) -> None:
    for code in (member_qr("000199999999"), "MGC:NO-SUCH-COUPON", "6900000000000"):
        r = await client.post("/v1/scan", json={"code": code})
        assert r.status_code in (404, 409, 422), r.text
        assert (await client.get("/v1/status")).json()["live"]["open_sales"] == 0, code
