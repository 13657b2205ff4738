from __future__ import annotations

import random

import pytest

from edge import coupons
from edge.checkout import TenderRequest
from edge.errors import EdgeError
from edge.service import EdgeService
from tests.edge import invariants
from tests.edge.conftest import key, register, sell


async def _refund(svc: EdgeService, sale_id: str, lines: list[tuple[int, int]] | None) -> dict:  # type: ignore[type-arg]
    return await svc.refund(terminal_id="POS-1", idem_key=key(), sale_id=sale_id, lines=lines)


async def test_line_refund_in_steps_equals_one_refund(service: EdgeService) -> None:
    m = await register(service)
    basket = [("A", "grocery", 3, 11_111), ("B", "fresh", 2, 2_345)]
    s1 = await sell(service, basket, member_id=m["member_id"])
    s2 = await sell(service, basket, member_id=m["member_id"])
    steps = [await _refund(service, s1["sale_id"], [(1, 1)]),
             await _refund(service, s1["sale_id"], [(1, 2)])]
    whole = await _refund(service, s2["sale_id"], [(1, 3)])
    # 满300减30 applied to 380.23; what is kept (2 x 23.45) no longer reaches it, so its share
    # of the 30.00 off is taken back, whichever way the line goes back.
    assert sum(r["amount"] for r in steps) == whole["amount"]
    assert whole["amount"] == s1["lines"][0]["net"] - whole["discounts_reversed"]
    assert whole["discounts_reversed"] > 0
    assert sum(r["discounts_reversed"] for r in steps) == whole["discounts_reversed"]
    assert sum(r["points_reversed"] for r in steps) == whole["points_reversed"] \
        == s1["lines"][0]["points"]
    invariants.check(service.config.database.path)


async def test_refund_beyond_sale_is_refused_and_changes_nothing(service: EdgeService) -> None:
    s = await sell(service, [("A", "grocery", 2, 1_000)])
    await _refund(service, s["sale_id"], [(1, 1)])
    before = invariants.snapshot(service.config.database.path)
    for lines, code in [([(1, 2)], "refund_exceeds_sale"),
                        ([(1, 1), (1, 1)], "refund_exceeds_sale"),
                        ([(2, 1)], "line_not_found"), ([(1, 0)], "invalid_quantity"),
                        ([(1, -1)], "invalid_quantity")]:
        with pytest.raises(EdgeError) as exc:
            await _refund(service, s["sale_id"], lines)
        assert exc.value.code == code
    with pytest.raises(EdgeError) as exc:
        await _refund(service, "no-such-sale", None)
    assert exc.value.code == "sale_not_found"
    assert invariants.snapshot(service.config.database.path) == before
    await _refund(service, s["sale_id"], None)
    with pytest.raises(EdgeError) as exc:
        await _refund(service, s["sale_id"], None)
    assert exc.value.code == "refund_exceeds_sale"


async def test_full_refund_rolls_back_every_benefit(service: EdgeService) -> None:
    m = await register(service)
    mid = m["member_id"]
    await sell(service, [("A", "grocery", 1, 50_000)], member_id=mid)  # 470 points
    await service.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=50_000)
    code = await service._write(lambda c, x: coupons.issue(
        c, x, member_id=mid, campaign_id=None, kind="amount_off", value=1_000))
    before = await service.member(mid)
    sale = await sell(
        service, [("B", "grocery", 2, 7_000), ("C", "fresh", 1, 3_000)], member_id=mid,
        coupons=[code],
        tenders=[TenderRequest(kind="points", points=400),
                 TenderRequest(kind="stored_value", amount=8_000, sv_order="bonus_first"),
                 TenderRequest(kind="cash", amount=20_000)],
    )
    assert sale["change"] == 20_000 - (sale["total"] - 400 - 8_000)
    r = await _refund(service, sale["sale_id"], None)
    assert r["amount"] == sale["total"]
    assert r["points_returned"] == 400
    assert r["points_reversed"] == sale["points_earned"] and r["points_shortfall"] == 0
    assert r["coupon_reopened"] == code
    after = await service.member(mid)
    assert after["points"] == before["points"]
    assert after["stored_value"] == before["stored_value"]  # principal and bonus as they were
    assert code in [c["coupon_code"] for c in after["coupons"]]
    invariants.check(service.config.database.path)
    assert invariants.replayed_balances(service.config.database.path)[mid] == (
        after["points"], after["stored_value"]["principal"], after["stored_value"]["bonus"])


async def test_partial_refund_keeps_coupon_and_splits_tenders_exactly(service: EdgeService) -> None:
    m = await register(service)
    mid = m["member_id"]
    await service.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=50_000)
    sale = await sell(service, [("A", "grocery", 3, 3_333), ("B", "dairy", 1, 1_001)],
                      member_id=mid,
                      tenders=[TenderRequest(kind="stored_value", amount=7_000),
                               TenderRequest(kind="bank_card", amount=4_000)])
    r1 = await _refund(service, sale["sale_id"], [(1, 1)])
    assert sum(t["amount"] for t in r1["tenders"]) == r1["amount"] == 3_333
    assert r1["coupon_reopened"] is None
    r2 = await _refund(service, sale["sale_id"], None)
    assert r1["amount"] + r2["amount"] == sale["total"]
    back = {}
    for r in (r1, r2):
        for t in r["tenders"]:
            back[t["kind"]] = back.get(t["kind"], 0) + t["amount"]
    assert back == {"stored_value": 7_000, "bank_card": 4_000}
    invariants.check(service.config.database.path)


async def test_reversal_beyond_balance_records_a_debt_paid_by_later_earnings(
        service: EdgeService) -> None:
    m = await register(service)
    mid = m["member_id"]
    first = await sell(service, [("A", "grocery", 1, 20_000)], member_id=mid)  # earns 200
    await sell(service, [("B", "grocery", 1, 400)], member_id=mid,
               tenders=[TenderRequest(kind="points", points=200),
                        TenderRequest(kind="cash", amount=200)])  # earns 4, balance 4
    r = await _refund(service, first["sale_id"], None)
    assert (r["points_reversed"], r["points_shortfall"]) == (4, 196)
    view = await service.member(mid)
    assert view["points"] == 0 and view["points_debt"] == 196
    later = await sell(service, [("C", "grocery", 1, 25_000)], member_id=mid)  # earns 250
    assert later["member"]["points_balance"] == 250 - 196
    assert later["member"]["points_debt"] == 0
    invariants.check(service.config.database.path)
    assert invariants.replayed_balances(service.config.database.path)[mid][0] == 54


async def test_random_refund_sequences_never_exceed_and_always_balance(
        service: EdgeService) -> None:
    rng = random.Random(42)
    m = await register(service)
    mid = m["member_id"]
    await service.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=100_000)
    for _ in range(15):
        lines = [(f"S{i}", rng.choice(["grocery", "fresh", "dairy"]), rng.randrange(1, 5),
                  rng.randrange(1, 9_999)) for i in range(rng.randrange(1, 5))]
        sale = await sell(service, lines, member_id=mid)
        total = sale["total"]
        sv = rng.randrange(0, min(total, 5_000) + 1)
        # a second sale paid partly from stored value, to exercise tender splits
        s2 = await sell(service, lines, member_id=mid, tenders=(
            [TenderRequest(kind="stored_value", amount=sv)] if sv else [])
            + [TenderRequest(kind="cash", amount=total - sv + rng.randrange(0, 500))])
        for s in (sale, s2):
            left = {ln["line_no"]: ln["qty"] for ln in s["lines"]}
            refunded = 0
            while any(left.values()) and rng.random() < 0.8:
                n = rng.choice([k for k, v in left.items() if v])
                q = rng.randrange(1, left[n] + 1)
                r = await _refund(service, s["sale_id"], [(n, q)])
                left[n] -= q
                refunded += r["amount"]
                assert sum(t["amount"] for t in r["tenders"]) == r["amount"]
            if not any(left.values()):
                assert refunded == s["total"]
    invariants.check(service.config.database.path)
    view = await service.member(mid)
    assert invariants.replayed_balances(service.config.database.path)[mid] == (
        view["points"], view["stored_value"]["principal"], view["stored_value"]["bonus"])
