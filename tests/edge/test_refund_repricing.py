"""A partial refund reprices what is kept (issue 14): a 满减 threshold or a coupon's minimum
spend that the kept items no longer reach is taken back, to the minor unit, stated on the
refund; a return that would leave the rest costing more than was paid is refused."""

from __future__ import annotations

import random
from typing import Any

import pytest

from edge import directory
from edge.errors import EdgeError
from edge.service import EdgeService
from protocol.ids import coupon_code
from protocol.sync import MemberCoupon, MemberEntry
from tests.edge import invariants
from tests.edge.conftest import key, register, sell


async def _refund(svc: EdgeService, sale_id: str, lines: list[tuple[int, int]] | None
                  ) -> dict[str, Any]:
    return await svc.refund(terminal_id="POS-1", idem_key=key(), sale_id=sale_id, lines=lines)


async def test_the_reviews_basket_a_return_that_loses_the_threshold_is_refused(
        service: EdgeService) -> None:
    # 299.00 + 6.50 with 满300减30 (the demo's, for walk-in customers too): 275.50 paid.
    sale = await sell(service, [("A", "grocery", 1, 29_900), ("B", "grocery", 1, 650)])
    assert sale["total"] == 27_550
    before = invariants.snapshot(service.config.database.path)
    with pytest.raises(EdgeError) as exc:
        await _refund(service, sale["sale_id"], [(2, 1)])
    assert exc.value.code == "refund_below_zero"
    assert exc.value.details == {"kept_costs": 29_900, "paid": 27_550}
    assert invariants.snapshot(service.config.database.path) == before
    whole = await _refund(service, sale["sale_id"], None)  # both back: everything paid
    assert whole["amount"] == 27_550 and whole["discounts_reversed"] == 0
    invariants.check(service.config.database.path)


async def test_a_lost_threshold_is_taken_back_from_the_refund_to_the_cent(
        service: EdgeService) -> None:
    # 250.00 + 60.00 = 310.00, 30.00 off: 280.00 paid, 5.81 of the discount on the 60.00 line.
    sale = await sell(service, [("A", "grocery", 1, 25_000), ("B", "grocery", 1, 6_000)])
    assert [ln["net"] for ln in sale["lines"]] == [22_581, 5_419]
    r = await _refund(service, sale["sale_id"], [(2, 1)])
    # The 250.00 kept is below 300.00: it costs 250.00, so 280.00 - 250.00 = 30.00 comes back.
    assert (r["amount"], r["discounts_reversed"]) == (3_000, 2_419)
    assert r["lines"] == [{"line_no": 2, "qty": 1, "amount": 5_419, "points_reversed": 0}]
    assert sum(t["amount"] for t in r["tenders"]) == 3_000
    event = invariants.outbox_events(service.config.database.path)[-1].body
    assert (event.type, event.v, event.discounts_reversed) == (  # type: ignore[union-attr]
        "refund.completed", 3, 2_419)
    rest = await _refund(service, sale["sale_id"], None)
    assert rest["amount"] == 25_000  # in all, exactly what was paid
    receipt = await service.receipt(sale["sale_id"])
    assert receipt["refunded_total"] == 28_000
    invariants.check(service.config.database.path)


async def test_a_coupons_minimum_spend_missed_after_a_return_is_taken_back(
        service: EdgeService) -> None:
    m = await register(service)
    code = coupon_code()
    e = MemberEntry(member_id=m["member_id"], member_code=m["member_code"], home_store="S001",
                    phone=m["phone"], coupons=[MemberCoupon(
                        coupon_code=code, kind="amount_off", value=1_000, min_spend=10_000)])
    await service._write(lambda conn, ctx: directory.apply_entry(conn, ctx, e))
    sale = await sell(service, [("A", "grocery", 1, 8_000), ("B", "grocery", 1, 3_000)],
                      member_id=m["member_id"], coupons=[code])
    assert sale["total"] == 10_000
    r = await _refund(service, sale["sale_id"], [(2, 1)])
    # 80.00 kept is below the coupon's 100.00: it costs 80.00, 20.00 of the 100.00 comes back.
    assert (r["amount"], r["discounts_reversed"]) == (2_000, 727)
    assert r["coupon_reopened"] is None  # the coupon stays used: the kept items had it
    invariants.check(service.config.database.path)


async def test_random_baskets_refunded_in_random_steps_give_back_exactly_what_was_paid(
        service: EdgeService) -> None:
    rng = random.Random(7)
    m = await register(service)
    refused = reversed_ = 0
    for i in range(40):
        lines = [(f"S{i}", rng.choice(["grocery", "fresh", "dairy"]), rng.randrange(1, 4),
                  rng.randrange(100, 20_000)) for i in range(rng.randrange(1, 5))]
        if i % 4 == 0:  # just over 满300 with a small item: returning it alone loses the 30
            lines = [("T", "grocery", 1, rng.randrange(29_000, 29_990)),
                     ("U", "grocery", 1, rng.randrange(100, 900))]
        sale = await sell(service, lines, member_id=m["member_id"] if rng.random() < 0.5
                          else None)
        left = {ln["line_no"]: ln["qty"] for ln in sale["lines"]}
        given = 0
        while any(left.values()):
            n = rng.choice([k for k, v in left.items() if v])
            q = rng.randrange(1, left[n] + 1)
            try:
                r = await _refund(service, sale["sale_id"], [(n, q)])
            except EdgeError as exc:
                assert exc.code == "refund_below_zero"
                refused += 1
                r = await _refund(service, sale["sale_id"], None)  # all the rest instead
                left = dict.fromkeys(left, 0)
            else:
                left[n] -= q
            assert r["amount"] >= 0
            assert sum(t["amount"] for t in r["tenders"]) == r["amount"]
            assert r["amount"] == sum(ln["amount"] for ln in r["lines"]) - r[
                "discounts_reversed"]
            given += r["amount"]
            reversed_ += r["discounts_reversed"] > 0
        assert given == sale["total"]
    assert refused > 0 and reversed_ > 0  # the baskets did reach both cases
    invariants.check(service.config.database.path)
