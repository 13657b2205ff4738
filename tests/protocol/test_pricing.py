from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from protocol.campaigns import Campaign, CouponTemplate
from protocol.pricing import (
    AppliedDiscount,
    BasketLine,
    BirthdayGift,
    CouponSpec,
    MemberContext,
    Quote,
    QuotedLine,
    RedemptionTerms,
    birthday_in_window,
    evaluate,
    max_redeemable_points,
    points_needed,
    points_value,
    redemption_terms,
    topup_bonus,
)

TODAY = date(2026, 3, 15)
GOLD = MemberContext(tier="gold", birthday=date(1990, 7, 4))
STANDARD = MemberContext(tier="standard", birthday=None)


def camp(cid: str, rule: dict[str, Any], **fields: Any) -> Campaign:
    return Campaign.model_validate({"campaign_id": cid, "name": cid.upper(), "rule": rule,
                                    **fields})


def line(no: int, price: int, category: str = "grocery", qty: int = 1) -> BasketLine:
    return BasketLine(line_no=no, sku=f"SKU{no}", category=category, qty=qty, unit_price=price)


EARN = camp("earn", {"kind": "earn_points", "points": 1, "per_amount": 100,
                     "tier_multipliers": {"gold": 15_000}})
MJ_REPEAT = camp("mj", {"kind": "spend_threshold_off", "threshold": 30_000, "off": 3_000,
                        "repeat": True}, members_only=False)


def line_of(q: Quote, no: int) -> QuotedLine:
    return next(ql for ql in q.lines if ql.line_no == no)


# --- worked examples -------------------------------------------------------------------------


def test_spend_threshold_repeat_300_off_30() -> None:
    """满300减30, 每满: 650.00 over two lines → 60.00 off, split 400:250 by largest remainder."""
    q = evaluate([line(1, 40_000), line(2, 25_000)], [MJ_REPEAT], None, TODAY)
    assert (q.subtotal, q.discount_total, q.total) == (65_000, 6_000, 59_000)
    assert q.discounts == (
        AppliedDiscount("spend_threshold_off", "MJ", 6_000, "mj", None, ((1, 3_692), (2, 2_308))),
    )
    # 6000 * 400/650 = 3692.3, 6000 * 250/650 = 2307.7 → the larger remainder gets the cent
    assert (line_of(q, 1).net, line_of(q, 2).net) == (36_308, 22_692)
    assert q.points_earned == 0 and q.points_expire_days is None  # not a member


def test_spend_threshold_boundaries_and_without_repeat() -> None:
    once = camp("mj1", {"kind": "spend_threshold_off", "threshold": 30_000, "off": 3_000},
                members_only=False)
    assert evaluate([line(1, 29_999)], [MJ_REPEAT], None, TODAY).discount_total == 0
    assert evaluate([line(1, 30_000)], [MJ_REPEAT], None, TODAY).discount_total == 3_000
    assert evaluate([line(1, 89_999)], [MJ_REPEAT], None, TODAY).discount_total == 6_000
    assert evaluate([line(1, 90_000)], [MJ_REPEAT], None, TODAY).discount_total == 9_000
    assert evaluate([line(1, 90_000)], [once], None, TODAY).discount_total == 3_000


def test_spend_threshold_on_categories_counts_and_discounts_only_those_lines() -> None:
    mj = camp("mj", {"kind": "spend_threshold_off", "threshold": 10_000, "off": 1_000,
                     "categories": ["fresh"]}, members_only=False)
    q = evaluate([line(1, 6_000, "fresh"), line(2, 50_000), line(3, 4_000, "fresh")], [mj],
                 None, TODAY)
    assert q.discounts[0].per_line == ((1, 600), (3, 400))
    assert line_of(q, 2).discount == 0
    q = evaluate([line(1, 9_999, "fresh"), line(2, 50_000)], [mj], None, TODAY)
    assert q.discount_total == 0 and q.discounts == ()


def test_category_20_percent_off_rounds_half_up_per_line() -> None:
    fresh = camp("fresh20", {"kind": "category_percent_off", "categories": ["fresh"],
                             "percent_bp": 2_000}, members_only=False)
    q = evaluate([line(1, 123, "fresh"), line(2, 247, "fresh"), line(3, 999, "grocery"),
                  line(4, 1, "fresh")], [fresh], None, TODAY)
    # 24.6 → 25, 49.4 → 49, grocery untouched, 0.2 → 0 (and no zero entry in per_line)
    assert q.discounts[0].per_line == ((1, 25), (2, 49))
    assert [ql.net for ql in q.lines] == [98, 198, 999, 1]
    assert q.discount_total == 74 and q.total == 123 + 247 + 999 + 1 - 74


def test_category_percent_off_rounding_mode_is_honoured_on_a_tie() -> None:
    def off(rounding: str) -> int:
        c = camp("p15", {"kind": "category_percent_off", "categories": ["a"],
                         "percent_bp": 1_500, "rounding": rounding}, members_only=False)
        return evaluate([line(1, 30, "a")], [c], None, TODAY).discount_total  # 4.5

    assert (off("half_up"), off("half_even"), off("down"), off("up")) == (5, 4, 4, 5)


def test_gold_earns_1_5x_points_rounded_down_per_line() -> None:
    lines = [line(1, 1_999), line(2, 1_999)]
    q = evaluate(lines, [EARN], GOLD, TODAY)
    # 19.99 yuan * 1.5 = 29.985 → 29 a line; 58 in all (not 59 from the 39.98 total)
    assert [ql.points for ql in q.lines] == [29, 29]
    assert q.points_earned == 58 and q.points_expire_days == 365
    q = evaluate(lines, [EARN], STANDARD, TODAY)
    assert [ql.points for ql in q.lines] == [19, 19] and q.points_earned == 38


def test_points_are_on_the_net_after_every_discount() -> None:
    coupon = CouponSpec(code="C1", kind="amount_off", value=5_000)
    q = evaluate([line(1, 40_000)], [EARN, MJ_REPEAT], STANDARD, TODAY, [coupon])
    assert q.total == 40_000 - 3_000 - 5_000
    assert q.points_earned == 320


def test_coupon_min_spend_unmet_is_an_error_not_a_discount() -> None:
    coupon = CouponSpec(code="SAVE20", kind="amount_off", value=2_000, min_spend=10_000)
    q = evaluate([line(1, 9_999)], [], STANDARD, TODAY, [coupon])
    assert q.discounts == () and q.total == 9_999
    assert len(q.coupon_errors) == 1
    code, reason = q.coupon_errors[0]
    assert code == "SAVE20" and "10000" in reason and "9999" in reason
    q = evaluate([line(1, 10_000)], [], STANDARD, TODAY, [coupon])
    assert q.coupon_errors == () and q.total == 8_000


def test_coupon_min_spend_is_measured_after_campaign_discounts() -> None:
    coupon = CouponSpec(code="C", kind="amount_off", value=1_000, min_spend=30_000)
    q = evaluate([line(1, 30_000)], [MJ_REPEAT], None, TODAY, [coupon])
    assert q.total == 27_000 and q.coupon_errors[0][0] == "C"


def test_coupon_kinds_categories_and_caps() -> None:
    basket = [line(1, 3_000, "fresh"), line(2, 1_000, "fresh"), line(3, 5_000, "wine")]
    pct = CouponSpec(code="P", kind="percent_off", value=1_250, categories=("fresh",))
    q = evaluate(basket, [], None, TODAY, [pct])
    assert q.discounts == (AppliedDiscount("coupon", "coupon P", 500, None, "P",
                                           ((1, 375), (2, 125))),)
    big = CouponSpec(code="BIG", kind="amount_off", value=99_999, categories=("wine",))
    q = evaluate(basket, [], None, TODAY, [big])
    assert q.discount_total == 5_000 and line_of(q, 3).net == 0 and line_of(q, 1).net == 3_000


def test_coupon_errors_are_reported_and_change_nothing() -> None:
    basket = [line(1, 1_000, "fresh")]
    specs = [
        CouponSpec(code="WINE", kind="amount_off", value=100, categories=("wine",)),
        CouponSpec(code="ALL", kind="amount_off", value=1_000),
        CouponSpec(code="AGAIN", kind="amount_off", value=10),  # nothing left after ALL
        CouponSpec(code="ALL", kind="amount_off", value=1_000),  # the same coupon twice
        CouponSpec(code="ODD", kind="cashback", value=10),
        CouponSpec(code="NEG", kind="amount_off", value=-10),
        CouponSpec(code="HUGE", kind="percent_off", value=10_001),
        CouponSpec(code="ZERO", kind="percent_off", value=0),
    ]
    q = evaluate(basket, [], None, TODAY, specs)
    assert q.total == 0 and [d.coupon_code for d in q.discounts] == ["ALL"]
    reasons = dict(q.coupon_errors)  # ALL appears once: the applied one is no error
    assert [c for c, _ in q.coupon_errors] == ["WINE", "AGAIN", "ALL", "ODD", "NEG", "HUGE",
                                               "ZERO"]
    assert "wine" in reasons["WINE"]
    assert "nothing left" in reasons["AGAIN"]
    assert "already applied" in reasons["ALL"]
    assert "unknown coupon kind" in reasons["ODD"]
    assert "negative" in reasons["NEG"]
    assert "basis points" in reasons["HUGE"]
    assert "nothing left" in reasons["ZERO"]


def test_line_rules_come_before_order_rules_whatever_the_priority() -> None:
    fresh = camp("fresh20", {"kind": "category_percent_off", "categories": ["fresh"],
                             "percent_bp": 2_000}, priority=500, members_only=False)
    mj = camp("mj", {"kind": "spend_threshold_off", "threshold": 30_000, "off": 3_000},
              priority=1, members_only=False)
    q = evaluate([line(1, 30_000, "fresh")], [mj, fresh], None, TODAY)
    # 20% first: 240.00 left, below the 300.00 threshold
    assert [d.campaign_id for d in q.discounts] == ["fresh20"] and q.total == 24_000


def test_line_rules_stack_in_priority_order_on_the_current_net() -> None:
    a = camp("a", {"kind": "category_percent_off", "categories": ["x"], "percent_bp": 5_000},
             priority=1, members_only=False)
    b = camp("b", {"kind": "category_percent_off", "categories": ["x"], "percent_bp": 1_000},
             priority=2, members_only=False)
    q = evaluate([line(1, 1_001, "x")], [b, a], None, TODAY)
    # 50% of 1001 = 500.5 → 501 ; 10% of the 500 left = 50
    assert [(d.campaign_id, d.amount) for d in q.discounts] == [("a", 501), ("b", 50)]
    b_first = camp("b", {"kind": "category_percent_off", "categories": ["x"],
                         "percent_bp": 1_000}, priority=0, members_only=False)
    q = evaluate([line(1, 1_001, "x")], [b_first, a], None, TODAY)
    # 10% of 1001 = 100.1 → 100 ; 50% of 901 = 450.5 → 451
    assert [(d.campaign_id, d.amount) for d in q.discounts] == [("b", 100), ("a", 451)]


def test_tier_discount_for_the_members_tier_except_excluded_categories() -> None:
    tier = camp("tier", {"kind": "tier_discount", "tiers": {"gold": 500, "silver": 300},
                         "excluded_categories": ["tobacco"]})
    basket = [line(1, 10_010), line(2, 3_000, "tobacco")]
    q = evaluate(basket, [tier], GOLD, TODAY)
    assert q.discounts[0].per_line == ((1, 501),)  # 500.5 → 501
    assert q.discounts[0].kind == "tier_discount" and q.discounts[0].label == "TIER"
    assert evaluate(basket, [tier], STANDARD, TODAY).discounts == ()
    assert evaluate(basket, [tier], None, TODAY).discounts == ()


def test_members_only_tiers_and_dates_filter_campaigns() -> None:
    basket = [line(1, 10_000)]
    members = camp("m", {"kind": "category_percent_off", "categories": ["grocery"],
                         "percent_bp": 1_000})
    assert evaluate(basket, [members], None, TODAY).discount_total == 0
    assert evaluate(basket, [members], STANDARD, TODAY).discount_total == 1_000
    gold_only = camp("g", {"kind": "category_percent_off", "categories": ["grocery"],
                           "percent_bp": 1_000}, tiers=["gold"])
    assert evaluate(basket, [gold_only], STANDARD, TODAY).discount_total == 0
    assert evaluate(basket, [gold_only], GOLD, TODAY).discount_total == 1_000
    march = camp("mar", {"kind": "category_percent_off", "categories": ["grocery"],
                         "percent_bp": 1_000}, members_only=False, starts_on="2026-03-01",
                 ends_on="2026-03-15")
    assert evaluate(basket, [march], None, date(2026, 3, 15)).discount_total == 1_000
    assert evaluate(basket, [march], None, date(2026, 3, 16)).discount_total == 0
    assert evaluate(basket, [march], None, date(2026, 2, 28)).discount_total == 0


def test_first_earn_rule_by_priority_wins_and_rates_by_category() -> None:
    double = camp("double", {"kind": "earn_points", "points": 2, "per_amount": 100,
                             "expires_after_days": 90}, priority=10, starts_on="2026-03-10",
                  ends_on="2026-03-20")
    base = camp("base", {"kind": "earn_points", "points": 1, "per_amount": 100,
                         "category_rates": {"fresh": [3, 200], "tobacco": [0, 100]},
                         "excluded_categories": ["gift_card"]})
    basket = [line(1, 1_000), line(2, 1_000, "fresh"), line(3, 1_000, "tobacco"),
              line(4, 1_000, "gift_card")]
    q = evaluate(basket, [base, double], STANDARD, TODAY)
    assert [ql.points for ql in q.lines] == [20, 20, 20, 20] and q.points_expire_days == 90
    q = evaluate(basket, [base, double], STANDARD, date(2026, 3, 21))
    assert [ql.points for ql in q.lines] == [10, 15, 0, 0] and q.points_expire_days == 365


def test_earn_points_rounding_and_never_expiring_points() -> None:
    c = camp("e", {"kind": "earn_points", "points": 1, "per_amount": 100, "rounding": "half_up",
                   "expires_after_days": None})
    q = evaluate([line(1, 150), line(2, 149)], [c], STANDARD, TODAY)
    assert [ql.points for ql in q.lines] == [2, 1] and q.points_expire_days is None


def test_non_members_earn_nothing_even_under_an_open_earn_rule() -> None:
    c = camp("e", {"kind": "earn_points"}, members_only=False)
    q = evaluate([line(1, 10_000)], [c], None, TODAY)
    assert q.points_earned == 0 and all(ql.points == 0 for ql in q.lines)
    assert q.points_expire_days is None


def test_lines_come_back_in_line_no_order_with_their_numbers() -> None:
    q = evaluate([line(3, 300), line(1, 100, qty=3), line(2, 200)], [], None, TODAY)
    assert q.lines == (QuotedLine(1, 300, 0, 300, 0), QuotedLine(2, 200, 0, 200, 0),
                       QuotedLine(3, 300, 0, 300, 0))
    assert (q.subtotal, q.discount_total, q.total) == (800, 0, 800)


def test_empty_basket_prices_to_zero() -> None:
    q = evaluate([], [EARN, MJ_REPEAT], GOLD, TODAY)
    assert (q.subtotal, q.total, q.points_earned, q.lines, q.discounts) == (0, 0, 0, (), ())


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([line(1, 100, qty=0)], "quantity"),
        ([line(1, 100, qty=-2)], "quantity"),
        ([line(1, -1)], "negative"),
        ([line(1, 100), line(1, 200)], "twice"),
        ([BasketLine(1, "A", "x", 1, 9.99)], "unit_price must be an int"),  # type: ignore[arg-type]
        ([BasketLine(1, "A", "x", True, 100)], "qty must be an int"),
        ([BasketLine("1", "A", "x", 1, 100)], "line_no must be an int"),  # type: ignore[arg-type]
        ([("1", "A", "x", 1, 100)], "must be a BasketLine"),
    ],
)
def test_bad_baskets_are_refused(lines: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(lines, [], None, TODAY)


def test_duplicate_campaign_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        evaluate([line(1, 100)], [EARN, EARN], STANDARD, TODAY)


# --- birthdays -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birthday", "today", "window", "expected"),
    [
        (date(1990, 3, 15), date(2026, 3, 15), "day", True),
        (date(1990, 3, 15), date(2026, 3, 16), "day", False),
        (date(2000, 2, 29), date(2026, 2, 28), "day", True),  # common year: the 28th
        (date(2000, 2, 29), date(2026, 3, 1), "day", False),
        (date(2000, 2, 29), date(2028, 2, 28), "day", False),  # leap year: the 29th itself
        (date(2000, 2, 29), date(2028, 2, 29), "day", True),
        (date(1990, 3, 15), date(2026, 3, 12), "week", True),
        (date(1990, 3, 15), date(2026, 3, 18), "week", True),
        (date(1990, 3, 15), date(2026, 3, 11), "week", False),
        (date(1990, 3, 15), date(2026, 3, 19), "week", False),
        (date(1990, 12, 30), date(2027, 1, 2), "week", True),  # across the new year
        (date(1991, 1, 2), date(2026, 12, 30), "week", True),
        (date(1991, 1, 3), date(2026, 12, 30), "week", False),
        (date(2000, 2, 29), date(2026, 3, 3), "week", True),  # 28 Feb + 3 days
        (date(1990, 3, 31), date(2026, 3, 1), "month", True),
        (date(1990, 3, 31), date(2026, 4, 1), "month", False),
    ],
)
def test_birthday_windows(birthday: date, today: date, window: str, expected: bool) -> None:
    assert birthday_in_window(birthday, today, window) is expected


def test_birthday_gifts_for_each_active_rule_whose_window_holds() -> None:
    coupon = {"kind": "amount_off", "value": 2_000, "min_spend": 10_000, "valid_days": 14}
    week = camp("bday-week", {"kind": "birthday_gift", "coupon": coupon, "window": "week"})
    month = camp("bday-month", {"kind": "birthday_gift", "points": 200, "window": "month"})
    gold_day = camp("bday-gold", {"kind": "birthday_gift", "points": 500}, tiers=["gold"])
    member = MemberContext(tier="standard", birthday=date(1990, 3, 17))
    q = evaluate([line(1, 100)], [month, week, gold_day], member, TODAY)
    assert q.birthday_gifts == (
        BirthdayGift("bday-month", 200, None),
        BirthdayGift("bday-week", 0, CouponTemplate.model_validate(coupon)),
    )
    assert evaluate([line(1, 100)], [month], STANDARD, TODAY).birthday_gifts == ()  # no birthday
    assert evaluate([line(1, 100)], [month], None, TODAY).birthday_gifts == ()
    far = MemberContext(tier="gold", birthday=date(1990, 9, 1))
    assert evaluate([], [month, week, gold_day], far, TODAY).birthday_gifts == ()


# --- paying with points ----------------------------------------------------------------------

ONE_TO_ONE = RedemptionTerms(points_per_unit=100, unit_value=100, max_share_bp=10_000,
                             min_points=0)
TWO_PER_CENT = RedemptionTerms(points_per_unit=100, unit_value=50, max_share_bp=10_000,
                               min_points=0)
THREE_FOR_TWO = RedemptionTerms(points_per_unit=3, unit_value=2, max_share_bp=10_000,
                                min_points=0)


def test_points_value_uses_whole_steps_of_the_reduced_ratio() -> None:
    assert points_value(150, ONE_TO_ONE) == 150  # 100 = 100 is 1 point = 1 minor unit
    assert points_value(0, ONE_TO_ONE) == 0
    assert points_value(151, TWO_PER_CENT) == 75  # the odd point is not usable
    assert points_value(150, TWO_PER_CENT) == 75
    assert points_value(5, THREE_FOR_TWO) == 2
    assert points_value(6, THREE_FOR_TWO) == 4
    coarse = RedemptionTerms(points_per_unit=1_000, unit_value=300, max_share_bp=10_000,
                             min_points=0)  # 10 points = 3
    assert points_value(1_999, coarse) == 597


def test_points_needed_is_the_least_that_covers() -> None:
    assert points_needed(150, ONE_TO_ONE) == 150
    assert points_needed(75, TWO_PER_CENT) == 150
    assert points_needed(3, THREE_FOR_TWO) == 6  # 6 points pay 4: the least whole steps for 3
    assert points_needed(0, THREE_FOR_TWO) == 0
    for terms in (ONE_TO_ONE, TWO_PER_CENT, THREE_FOR_TWO):
        for p in range(0, 400):
            v = points_value(p, terms)
            assert points_needed(v, terms) <= p
            assert points_value(points_needed(v, terms), terms) == v
        for a in range(0, 400):
            n = points_needed(a, terms)
            assert points_value(n, terms) >= a
            assert n == 0 or points_value(n - 1, terms) < a


def test_negative_points_or_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        points_value(-1, ONE_TO_ONE)
    with pytest.raises(ValueError):
        points_needed(-1, ONE_TO_ONE)
    with pytest.raises(ValueError):
        max_redeemable_points(-1, 100, ONE_TO_ONE)
    with pytest.raises(ValueError):
        max_redeemable_points(100, -1, ONE_TO_ONE)
    with pytest.raises(ValueError):
        RedemptionTerms(points_per_unit=0, unit_value=1, max_share_bp=0, min_points=0)
    with pytest.raises(ValueError):
        RedemptionTerms(points_per_unit=1, unit_value=1, max_share_bp=10_001, min_points=0)


def test_max_redeemable_points_respects_balance_share_and_minimum() -> None:
    half = RedemptionTerms(points_per_unit=100, unit_value=100, max_share_bp=5_000,
                           min_points=500)
    assert max_redeemable_points(10_000, 400, half) == 200  # half of 4.00
    assert max_redeemable_points(10_000, 401, half) == 200  # 200.5 rounds down
    assert max_redeemable_points(600, 10_000, half) == 600  # the balance is the limit
    assert max_redeemable_points(499, 10_000, half) == 0  # below the minimum balance
    assert max_redeemable_points(500, 0, half) == 0
    assert max_redeemable_points(151, 10_000, TWO_PER_CENT) == 150
    assert max_redeemable_points(10_000, 5, THREE_FOR_TWO) == 6  # pays 4 of the 5
    none = RedemptionTerms(points_per_unit=1, unit_value=1, max_share_bp=0, min_points=0)
    assert max_redeemable_points(10_000, 10_000, none) == 0


def test_redemption_terms_from_the_first_active_campaign_or_the_default() -> None:
    gold = camp("r-gold", {"kind": "points_redemption", "points_per_unit": 50,
                           "unit_value": 100, "max_share_bp": 8_000}, priority=1,
                tiers=["gold"])
    everyone = camp("r", {"kind": "points_redemption", "points_per_unit": 100,
                          "unit_value": 100, "max_share_bp": 5_000, "min_points": 100})
    assert redemption_terms([everyone, gold], GOLD, TODAY, ONE_TO_ONE) == RedemptionTerms(
        50, 100, 8_000, 0)
    assert redemption_terms([everyone, gold], STANDARD, TODAY, ONE_TO_ONE) == RedemptionTerms(
        100, 100, 5_000, 100)
    assert redemption_terms([everyone, gold], None, TODAY, ONE_TO_ONE) is ONE_TO_ONE
    assert redemption_terms([], GOLD, TODAY, TWO_PER_CENT) is TWO_PER_CENT


# --- top-up bonus ----------------------------------------------------------------------------

TOPUP = camp("topup", {"kind": "topup_bonus", "tiers": [{"min_topup": 100_000, "bonus": 12_000},
                                                         {"min_topup": 50_000, "bonus": 5_000}]})


def test_topup_bonus_of_the_highest_tier_reached() -> None:
    assert topup_bonus(49_999, [TOPUP], STANDARD, TODAY) == (0, None)
    assert topup_bonus(50_000, [TOPUP], STANDARD, TODAY) == (5_000, "topup")
    assert topup_bonus(99_999, [TOPUP], STANDARD, TODAY) == (5_000, "topup")
    assert topup_bonus(250_000, [TOPUP], STANDARD, TODAY) == (12_000, "topup")
    assert topup_bonus(50_000, [TOPUP], None, TODAY) == (0, None)  # members only
    assert topup_bonus(0, [TOPUP], STANDARD, TODAY) == (0, None)
    with pytest.raises(ValueError):
        topup_bonus(-50_000, [TOPUP], STANDARD, TODAY)


def test_topup_bonus_repeat_uses_tiers_greedily() -> None:
    rep = camp("rep", {"kind": "topup_bonus", "repeat": True,
                       "tiers": [{"min_topup": 50_000, "bonus": 5_000},
                                 {"min_topup": 100_000, "bonus": 12_000}]})
    assert topup_bonus(150_000, [rep], STANDARD, TODAY) == (17_000, "rep")
    assert topup_bonus(249_999, [rep], STANDARD, TODAY) == (24_000, "rep")  # 2 x 1000.00
    assert topup_bonus(250_000, [rep], STANDARD, TODAY) == (29_000, "rep")
    assert topup_bonus(49_999, [rep], STANDARD, TODAY) == (0, None)


def test_topup_bonus_first_campaign_by_priority_that_gives_one() -> None:
    vip = camp("vip", {"kind": "topup_bonus", "tiers": [{"min_topup": 200_000, "bonus": 30_000}]},
               priority=1)
    assert topup_bonus(200_000, [TOPUP, vip], STANDARD, TODAY) == (30_000, "vip")
    assert topup_bonus(60_000, [TOPUP, vip], STANDARD, TODAY) == (5_000, "topup")
    ended = camp("old", {"kind": "topup_bonus", "tiers": [{"min_topup": 1, "bonus": 99_999}]},
                 priority=0, ends_on="2026-03-14")
    assert topup_bonus(60_000, [ended, TOPUP], STANDARD, TODAY) == (5_000, "topup")
