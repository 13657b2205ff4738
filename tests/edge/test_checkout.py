from __future__ import annotations

from datetime import date

import pytest

from edge import coupons
from edge.checkout import TenderRequest
from edge.config import EdgeConfig
from edge.errors import EdgeError
from edge.gateway import StoreGateway
from edge.service import EdgeService
from tests.edge import invariants
from tests.edge.conftest import key, make_config, register, sell


async def test_member_sale_prices_earns_and_records_everything(service: EdgeService) -> None:
    m = await register(service)
    receipt = await sell(service, [("A", "grocery", 2, 10_000), ("B", "fresh", 1, 5_000)],
                         member_id=m["member_id"])
    # fresh 20% off: 5000 -> 4000; 满300减30 not reached (24000 < 30000)
    assert receipt["subtotal"] == 25_000
    assert receipt["discount_total"] == 1_000
    assert receipt["total"] == 24_000
    assert receipt["points_earned"] == 240  # 1 point per 1.00, rounded down per line
    assert receipt["member"]["points_balance"] == 240
    types = [e.body.type for e in invariants.outbox_events(service.config.database.path)]
    assert types == ["member.registered", "sale.finalized", "points.earned"]
    assert invariants.check(service.config.database.path)["sales"] == 1
    assert invariants.replayed_balances(service.config.database.path)[m["member_id"]] == (240, 0, 0)


async def test_spend_threshold_repeats_and_non_members_earn_nothing(service: EdgeService) -> None:
    receipt = await sell(service, [("A", "grocery", 1, 65_000)])
    assert receipt["discount_total"] == 6_000  # every full 300.00 takes 30.00 off
    assert receipt["total"] == 59_000
    assert receipt["points_earned"] == 0 and receipt["member"] is None


async def test_finalize_retry_gets_first_answer_even_after_restart(config: EdgeConfig) -> None:
    async with StoreGateway(config) as svc:
        sale = await svc.open_sale("POS-1")
        sid = sale["sale_id"]
        await svc.add_line(sid, "POS-1", key(), sku="A", name="A", category="grocery", qty=1,
                           unit_price=1_000)
        tenders = [TenderRequest(kind="cash", amount=2_000)]
        first = await svc.finalize(sid, "POS-1", "fin-1", tenders)
        assert first["change"] == 1_000
        assert await svc.finalize(sid, "POS-1", "fin-1", tenders) == first
    async with StoreGateway(config) as svc:  # the basket is gone; the answer is on disk
        assert await svc.finalize(sid, "POS-1", "fin-1", tenders) == first
        with pytest.raises(EdgeError) as exc:  # another key: the sale is paid, not paid again
            await svc.finalize(sid, "POS-1", "fin-2", tenders)
        assert exc.value.code == "sale_already_finalized"
        assert exc.value.details["receipt"]["sale_id"] == sid
    assert invariants.check(config.database.path)["sales"] == 1


async def test_points_pay_part_of_a_sale(service: EdgeService) -> None:
    m = await register(service)
    await sell(service, [("A", "grocery", 1, 80_000)], member_id=m["member_id"])  # earns 740
    assert (await service.member(m["member_id"]))["points"] == 740
    receipt = await sell(
        service, [("B", "grocery", 1, 10_000)], member_id=m["member_id"],
        tenders=[TenderRequest(kind="points", points=350), TenderRequest(kind="cash",
                                                                         amount=9_650)],
    )
    points_tender = next(t for t in receipt["tenders"] if t["kind"] == "points")
    assert points_tender == {**points_tender, "amount": 350, "points": 350}
    assert receipt["member"]["points_balance"] == 740 - 350 + 100
    # at most half of a sale can be paid with points (demo redemption campaign)
    sale = await service.open_sale("POS-1")
    service.carts.get_open(sale["sale_id"]).member_id = m["member_id"]
    await service.add_line(sale["sale_id"], "POS-1", key(), sku="C", name="C",
                           category="grocery", qty=1, unit_price=400)
    quote = await service.sale_view(sale["sale_id"], "POS-1")
    assert quote["points"]["redeemable"] == 200 and quote["points"]["redeemable_value"] == 200
    with pytest.raises(EdgeError) as exc:
        await service.finalize(sale["sale_id"], "POS-1", key(),
                               [TenderRequest(kind="points", points=300),
                                TenderRequest(kind="cash", amount=100)])
    assert exc.value.code == "points_over_limit"
    invariants.check(service.config.database.path)


async def test_redemption_draws_soonest_expiring_lot_first(service: EdgeService) -> None:
    from edge import points

    m = await register(service)
    mid = m["member_id"]

    def lots(conn, ctx):  # type: ignore[no-untyped-def]
        late = points.earn(conn, ctx, mid, 100, reason="manual", expires_after_days=300)
        soon = points.earn(conn, ctx, mid, 100, reason="manual", expires_after_days=10)
        never = points.earn(conn, ctx, mid, 100, reason="manual", expires_after_days=None)
        return late, soon, never

    late, soon, never = await service._write(lots)
    await sell(service, [("A", "grocery", 1, 1_000)], member_id=mid,
               tenders=[TenderRequest(kind="points", points=150),
                        TenderRequest(kind="cash", amount=850)])
    ev = next(e for e in invariants.outbox_events(service.config.database.path)
          if e.body.type == "points.redeemed")
    assert [(d.lot_id, d.points) for d in ev.body.lots] == [(soon, 100), (late, 50)]  # type: ignore[union-attr]
    assert never not in {d.lot_id for d in ev.body.lots}  # type: ignore[union-attr]


async def test_points_expire_on_their_date(service: EdgeService) -> None:
    from datetime import timedelta

    from edge import points

    m = await register(service)
    mid = m["member_id"]
    await service._write(lambda c, x: points.earn(c, x, mid, 70, reason="manual",
                                                  expires_after_days=5))
    view = await service.member(mid)
    assert view["points_expiring"][0]["points"] == 70  # within the 30-day reminder window
    assert await service.expire_points() == 0
    service.context.today_override = service.context.today() + timedelta(days=6)
    assert await service.expire_points() == 70
    assert (await service.member(mid))["points"] == 0
    assert [e.body.type for e in invariants.outbox_events(service.config.database.path)][-1] \
        == "points.expired"
    invariants.check(service.config.database.path)


async def test_stored_value_top_up_bonus_and_spend_orders(service: EdgeService) -> None:
    m = await register(service)
    mid = m["member_id"]
    top = await service.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid,
                               amount=50_000)
    assert (top["bonus"], top["campaign_id"]) == (5_000, "topup-500-50")
    r1 = await sell(service, [("A", "grocery", 1, 10_000)], member_id=mid,
                    tenders=[TenderRequest(kind="stored_value", amount=10_000)])
    assert r1["tenders"][0]["sv_principal"] == 10_000 and r1["tenders"][0]["sv_bonus"] == 0
    r2 = await sell(service, [("A", "grocery", 1, 10_000)], member_id=mid,
                    tenders=[TenderRequest(kind="stored_value", amount=10_000,
                                           sv_order="bonus_first")])
    assert (r2["tenders"][0]["sv_principal"], r2["tenders"][0]["sv_bonus"]) == (5_000, 5_000)
    view = await service.member(mid)
    assert view["stored_value"] == {**view["stored_value"], "principal": 35_000, "bonus": 0}
    with pytest.raises(EdgeError) as exc:
        await sell(service, [("A", "grocery", 1, 40_000)], member_id=mid,
                   tenders=[TenderRequest(kind="stored_value", amount=36_000),
                            TenderRequest(kind="cash", amount=4_000)])
    assert exc.value.code == "insufficient_stored_value"
    assert invariants.replayed_balances(service.config.database.path)[mid][1:] == (35_000, 0)


async def test_proportional_split_is_exact(service: EdgeService) -> None:
    m = await register(service)
    mid = m["member_id"]
    await service.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=50_000)
    r = await sell(service, [("A", "grocery", 1, 333)], member_id=mid,
                   tenders=[TenderRequest(kind="stored_value", amount=333,
                                          sv_order="proportional")])
    t = r["tenders"][0]
    assert t["sv_principal"] + t["sv_bonus"] == 333
    assert (t["sv_principal"], t["sv_bonus"]) == (303, 30)  # 50000:5000 of 333, largest remainder


async def test_offline_allowance_refuses_beyond_escrow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path, allowance={"points": 100, "stored_value": 5_000})
    async with StoreGateway(cfg) as svc:
        from edge import demo

        await svc.apply_bundle(demo.demo_bundle())
        m = await register(svc)
        mid = m["member_id"]
        await svc.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=20_000)
        before = invariants.snapshot(cfg.database.path)
        with pytest.raises(EdgeError) as exc:
            await sell(svc, [("A", "grocery", 1, 8_000)], member_id=mid,
                       tenders=[TenderRequest(kind="stored_value", amount=6_000),
                                TenderRequest(kind="cash", amount=2_000)])
        assert exc.value.code == "allowance_exceeded"
        assert exc.value.details["allowed"] == 5_000
        after = invariants.snapshot(cfg.database.path)
        assert after["members"] == before["members"] and after["outbox"] == before["outbox"]
        await sell(svc, [("A", "grocery", 1, 8_000)], member_id=mid,
                   tenders=[TenderRequest(kind="stored_value", amount=5_000),
                            TenderRequest(kind="cash", amount=3_000)])
        quote_sale = await svc.open_sale("POS-1")
        svc.carts.get_open(quote_sale["sale_id"]).member_id = mid
        await svc.add_line(quote_sale["sale_id"], "POS-1", key(), sku="B", name="B",
                           category="grocery", qty=1, unit_price=1_000)
        q = await svc.sale_view(quote_sale["sale_id"], "POS-1")
        assert q["stored_value"]["offline_allowance"] == 0 and q["stored_value"]["usable"] == 0


async def test_coupon_verified_redeemed_once(service: EdgeService) -> None:
    m = await register(service)
    mid = m["member_id"]
    code = await service._write(lambda c, x: coupons.issue(
        c, x, member_id=mid, campaign_id=None, kind="amount_off", value=1_500,
        min_spend=5_000))
    r = await sell(service, [("A", "grocery", 1, 6_000)], member_id=mid, coupons=[code])
    assert r["total"] == 4_500
    assert any(d["coupon_code"] == code and d["amount"] == 1_500 for d in r["discounts"])
    sale = await service.open_sale("POS-1")
    service.carts.get_open(sale["sale_id"]).member_id = mid
    with pytest.raises(EdgeError) as exc:
        await service.add_coupon(sale["sale_id"], "POS-1", key(), f"MGC:{code}")
    assert exc.value.code == "coupon_used"
    with pytest.raises(EdgeError) as exc:
        await service.add_coupon(sale["sale_id"], "POS-1", key(), "NOTACOUPON")
    assert exc.value.code == "invalid_coupon_code"


async def test_coupon_below_min_spend_blocks_finalize(service: EdgeService) -> None:
    m = await register(service)
    mid = m["member_id"]
    code = await service._write(lambda c, x: coupons.issue(
        c, x, member_id=mid, campaign_id=None, kind="amount_off", value=1_500,
        min_spend=5_000))
    sale = await service.open_sale("POS-1")
    sid = sale["sale_id"]
    service.carts.get_open(sid).member_id = mid
    await service.add_line(sid, "POS-1", key(), sku="A", name="A", category="grocery", qty=1,
                           unit_price=1_000)
    view = await service.add_coupon(sid, "POS-1", key(), code)
    assert view["coupons"][0]["valid"] is False and view["coupons"][0]["reason"]
    with pytest.raises(EdgeError) as exc:
        await service.finalize(sid, "POS-1", key(), [TenderRequest(kind="cash", amount=1_000)])
    assert exc.value.code == "coupon_not_applicable"


@pytest.mark.parametrize(
    ("tenders", "code"),
    [
        ([TenderRequest(kind="cash", amount=500)], "tender_short"),
        ([TenderRequest(kind="bank_card", amount=2_000)], "tender_over"),
        ([TenderRequest(kind="cash", amount=0)], "invalid_amount"),
        ([TenderRequest(kind="cash", amount=-5)], "invalid_amount"),
        ([TenderRequest(kind="points", points=100)], "member_required"),
        ([TenderRequest(kind="cheque", amount=1_000)], "invalid_tender"),
        ([], "no_tender"),
    ],
)
async def test_bad_tenders_change_nothing(service: EdgeService, tenders: list[TenderRequest],
                                          code: str) -> None:
    sale = await service.open_sale("POS-1")
    sid = sale["sale_id"]
    await service.add_line(sid, "POS-1", key(), sku="A", name="A", category="grocery", qty=1,
                           unit_price=1_000)
    before = invariants.snapshot(service.config.database.path)
    with pytest.raises(EdgeError) as exc:
        await service.finalize(sid, "POS-1", key(), tenders)
    assert exc.value.code == code
    assert invariants.snapshot(service.config.database.path) == before
    ok = await service.finalize(sid, "POS-1", key(), [TenderRequest(kind="cash", amount=1_000)])
    assert ok["total"] == 1_000  # the basket is still usable after a refusal


async def test_birthday_gift_once_a_year(service: EdgeService) -> None:
    today = service.context.today()
    m = await register(service, birthday=date(1990, today.month, 1))
    r1 = await sell(service, [("A", "grocery", 1, 1_000)], member_id=m["member_id"])
    assert r1["member"]["points_balance"] == 10 + 200
    r2 = await sell(service, [("A", "grocery", 1, 1_000)], member_id=m["member_id"])
    assert r2["member"]["points_balance"] == 10 + 200 + 10


@pytest.mark.parametrize("days", [90, None])
async def test_earned_points_expire_as_the_earning_campaign_says(service: EdgeService,
                                                                 days: int | None) -> None:
    import sqlite3
    from datetime import timedelta

    from edge import demo

    bundle = demo.demo_bundle().model_dump(mode="json")
    bundle["version"] = 2
    for c in bundle["campaigns"]:
        if c["rule"]["kind"] == "earn_points":
            c["rule"]["expires_after_days"] = days
    from protocol.campaigns import CampaignBundle
    await service.apply_bundle(CampaignBundle.model_validate(bundle))
    m = await register(service)
    await sell(service, [("A", "grocery", 1, 10_000)], member_id=m["member_id"])
    with sqlite3.connect(service.config.database.path) as conn:
        (expires_on,) = conn.execute(
            "SELECT expires_on FROM point_lots WHERE member_id = ?", (m["member_id"],)).fetchone()
    want = None if days is None else (service.context.today() + timedelta(days=days)).isoformat()
    assert expires_on == want
    # The configured default (used for manual and birthday points) must not leak in.
    assert service.config.points.default_expiry_days not in (None, days)


async def test_finalize_reprices_when_anything_changed_since_the_quote(
        service: EdgeService) -> None:
    """The quote shown is reused only for the very same inputs: a new campaign bundle or a
    changed basket after the quote must price the sale anew."""
    from edge import demo
    from protocol.campaigns import CampaignBundle

    m = await register(service)
    sale = await service.open_sale("POS-1")
    sid = sale["sale_id"]
    service.carts.get_open(sid).member_id = m["member_id"]
    await service.add_line(sid, "POS-1", key(), sku="F", name="F", category="fresh", qty=1,
                           unit_price=10_000)
    assert (await service.sale_view(sid, "POS-1"))["total"] == 8_000  # fresh 20% off
    bundle = demo.demo_bundle().model_dump(mode="json")
    bundle["version"] = 2
    bundle["campaigns"] = [c for c in bundle["campaigns"] if c["campaign_id"] != "fresh-20"]
    await service.apply_bundle(CampaignBundle.model_validate(bundle))
    receipt = await service.finalize(sid, "POS-1", key(),
                                     [TenderRequest(kind="cash", amount=10_000)])
    assert receipt["total"] == 10_000 and receipt["discount_total"] == 0

    sale = await service.open_sale("POS-1")
    sid = sale["sale_id"]
    await service.add_line(sid, "POS-1", key(), sku="A", name="A", category="grocery", qty=1,
                           unit_price=1_000)
    assert (await service.sale_view(sid, "POS-1"))["total"] == 1_000
    cart = service.carts.get_open(sid, "POS-1")
    service.carts.set_qty(cart, 1, 3)  # changed without a new quote
    receipt = await service.finalize(sid, "POS-1", key(),
                                     [TenderRequest(kind="cash", amount=3_000)])
    assert receipt["total"] == 3_000
