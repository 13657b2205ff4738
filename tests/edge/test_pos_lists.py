"""The POS API's lists, over a real socket: the catalogue, a member's points history, the day's
receipts; and a catalogue line added by its sku alone. Bad paging, dates and skus are 4xx and
change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from edge import demo, products
from edge.checkout import TenderRequest
from edge.service import EdgeService
from tests.edge.conftest import TOKEN, key, register, sell
from tests.edge.invariants import snapshot
from tests.support.serving import pos_server, serving

MILK = "6901234567892"  # in demo.demo_products(): 牛奶 1L, dairy, 12.50


@pytest.fixture
async def pos(service: EdgeService) -> AsyncIterator[httpx.AsyncClient]:
    currency = service.config.store.currency
    await service.db.write(lambda conn: products.upsert(conn, demo.demo_products(), currency))
    async with serving(pos_server(service)) as port, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


async def refused(pos: httpx.AsyncClient, service: EdgeService, url: str,
                  params: dict[str, Any], status: int, code: str) -> None:
    before = snapshot(service.config.database.path)
    r = await pos.get(url, params=params)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert snapshot(service.config.database.path) == before


async def test_the_catalogue_is_listed_in_pages_and_filtered_by_prefix(
        pos: httpx.AsyncClient, service: EdgeService) -> None:
    r = await pos.get("/v1/products", params={"limit": 4})
    first = r.json()
    assert r.status_code == 200 and first["total"] == 6 and first["next_offset"] == 4
    rest = (await pos.get("/v1/products", params={"limit": 4, "offset": 4})).json()
    assert rest["next_offset"] is None
    skus = [p["sku"] for p in first["products"] + rest["products"]]
    assert skus == sorted(p["sku"] for p in demo.demo_products())
    dairy = (await pos.get("/v1/products", params={"category": "dai"})).json()
    assert dairy["products"] == [{"sku": MILK, "name": "牛奶 1L", "category": "dairy",
                                  "unit_price": 1_250}]
    by_sku = (await pos.get("/v1/products", params={"sku": "69012345"})).json()
    assert [p["sku"] for p in by_sku["products"]] == [MILK, "6901234567908"]
    assert (await pos.get("/v1/products", params={"sku": "7"})).json()["total"] == 0
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "ten"}, {"offset": -1},
                   {"sku": "x" * 65}):
        await refused(pos, service, "/v1/products", params, 422, "validation_error")


async def test_a_catalogue_sku_alone_adds_its_line(
        pos: httpx.AsyncClient, service: EdgeService) -> None:
    sid = (await pos.post("/v1/sales")).json()["sale_id"]
    r = await pos.post(f"/v1/sales/{sid}/lines", headers={"Idempotency-Key": key()},
                       json={"sku": MILK, "qty": 2})
    assert r.status_code == 200, r.text
    line = r.json()["lines"][0]
    assert (line["name"], line["unit_price"]) == ("牛奶 1L", 1_250)
    cart = service.carts.get_open(sid)
    assert cart.lines[line["line_no"]].category == "dairy"
    assert r.json()["subtotal"] == 2_500
    # An explicit price still overrides the catalogue's; the rest comes from it.
    r = await pos.post(f"/v1/sales/{sid}/lines", headers={"Idempotency-Key": key()},
                       json={"sku": MILK, "qty": 1, "unit_price": 1_000})
    assert r.json()["lines"][1]["unit_price"] == 1_000
    assert r.json()["lines"][1]["name"] == "牛奶 1L"
    # A sku the catalogue does not hold needs its name, category and price.
    for body, status, code in [
            ({"sku": "NOT-IN-CATALOGUE", "qty": 1}, 422, "unknown_sku"),
            ({"sku": "NOT-IN-CATALOGUE", "name": "x", "unit_price": 100}, 422, "unknown_sku"),
            ({"sku": "6901234567891"}, 422, "invalid_barcode"),
            ({"sku": MILK, "qty": 0}, 422, "invalid_quantity")]:
        r = await pos.post(f"/v1/sales/{sid}/lines", headers={"Idempotency-Key": key()},
                           json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
    assert len((await pos.get(f"/v1/sales/{sid}")).json()["lines"]) == 2  # nothing added
    r = await pos.post(f"/v1/sales/{sid}/lines", headers={"Idempotency-Key": key()}, json={
        "sku": "NOT-IN-CATALOGUE", "name": "bag", "category": "misc", "unit_price": 50})
    assert r.status_code == 200 and r.json()["lines"][2]["name"] == "bag"


async def test_a_members_points_history_newest_first_in_pages(
        pos: httpx.AsyncClient, service: EdgeService) -> None:
    mid = str((await register(service, "13800138000"))["member_id"])
    earned = await sell(service, [("A", "grocery", 1, 10_000)], member_id=mid)  # 100 points
    spent = await sell(service, [("B", "grocery", 1, 1_000)], member_id=mid,
                       tenders=[TenderRequest(kind="points", points=100),
                                TenderRequest(kind="cash", amount=900)])
    refund = await service.refund(terminal_id="POS-1", idem_key=key(),
                                  sale_id=spent["sale_id"], lines=None)
    today = service.context.today().isoformat()

    r = await pos.get(f"/v1/members/{mid}/points")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["store_id"] == "S001" and page["next_before"] is None
    entries = page["entries"]
    assert [(e["reason"], e["delta"]) for e in entries] == [
        ("refund_reversal", -10), ("refund_return", 100), ("earned", 10), ("redeemed", -100),
        ("earned", 100)]
    assert {e["date"] for e in entries} == {today}
    assert [e["sale_id"] for e in entries] == [spent["sale_id"]] * 4 + [earned["sale_id"]]
    assert [e["refund_id"] for e in entries] == [refund["refund_id"]] * 2 + [None] * 3
    expiry = (service.context.today() + timedelta(days=365)).isoformat()
    assert [e["lot_expires_on"] for e in entries] == [None, None, expiry, None, expiry]
    assert page["balance"]["points"] == (await service.member(mid))["points"]

    one = (await pos.get(f"/v1/members/{mid}/points", params={"limit": 1})).json()
    assert [e["reason"] for e in one["entries"]] == ["refund_reversal"]
    following = (await pos.get(f"/v1/members/{mid}/points",
                               params={"limit": 4, "before": one["next_before"]})).json()
    assert following["entries"] == entries[1:] and following["next_before"] is None

    url = f"/v1/members/{mid}/points"
    for params in ({"limit": 0}, {"limit": 501}, {"before": 0}, {"before": "last"}):
        await refused(pos, service, url, params, 422, "validation_error")
    await refused(pos, service, "/v1/members/no-such-member/points", {}, 404,
                  "member_not_found")


async def test_the_days_receipts_with_totals(
        pos: httpx.AsyncClient, service: EdgeService) -> None:
    first = await sell(service, [("A", "grocery", 1, 1_000)])
    second = await sell(service, [("B", "grocery", 2, 500)])
    refund = await service.refund(terminal_id="POS-1", idem_key=key(),
                                  sale_id=first["sale_id"], lines=None)
    today = service.context.today().isoformat()

    r = await pos.get("/v1/receipts", params={"date": today})
    assert r.status_code == 200, r.text
    day = r.json()
    assert [(e["kind"], e["id"]) for e in day["entries"]] == [
        ("sale", first["sale_id"]), ("sale", second["sale_id"]),
        ("refund", refund["refund_id"])]
    assert day["entries"][2]["sale_id"] == first["sale_id"]
    assert day["totals"] == {"sales": 2, "sales_amount": 2_000, "refunds": 1,
                             "refunds_amount": 1_000, "net_amount": 1_000}
    assert all(e["at"].startswith(today) for e in day["entries"])

    page = (await pos.get("/v1/receipts", params={"date": today, "limit": 2})).json()
    assert len(page["entries"]) == 2 and page["next_offset"] == 2
    assert page["totals"] == day["totals"]  # the whole day on every page
    last = (await pos.get("/v1/receipts",
                          params={"date": today, "limit": 2, "offset": 2})).json()
    assert [e["kind"] for e in last["entries"]] == ["refund"] and last["next_offset"] is None
    other = (await pos.get("/v1/receipts", params={"date": "2020-01-01"})).json()
    assert other["entries"] == [] and other["totals"]["sales"] == 0

    await refused(pos, service, "/v1/receipts", {"date": "2026-02-30"}, 422, "invalid_date")
    for params in ({}, {"date": "2026/01/01"}, {"date": "1700000000"},
                   {"date": today, "limit": 0}, {"date": today, "offset": -5}):
        await refused(pos, service, "/v1/receipts", params, 422, "validation_error")
    # The receipt of one sale is still where it was.
    r = await pos.get(f"/v1/receipts/{first['sale_id']}")
    assert r.status_code == 200 and r.json()["sale_id"] == first["sale_id"]
