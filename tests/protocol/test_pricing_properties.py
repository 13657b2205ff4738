"""Properties of the evaluator over generated baskets, campaigns, members and coupons."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.campaigns import (
    Campaign,
    CategoryPercentOff,
    SpendThresholdOff,
    TierDiscount,
)
from protocol.money import Rounding, percent_of
from protocol.pricing import (
    BasketLine,
    CouponSpec,
    MemberContext,
    Quote,
    RedemptionTerms,
    evaluate,
    max_redeemable_points,
    points_needed,
    points_value,
)

FAST = settings(max_examples=200, deadline=None)
TODAY = date(2026, 3, 15)
CATEGORIES = ["fresh", "grocery", "wine", "tobacco"]
TIERS = ["standard", "silver", "gold"]

categories = st.sampled_from(CATEGORIES)
category_lists = st.lists(categories, min_size=1, max_size=3, unique=True)
roundings = st.sampled_from([r.value for r in Rounding])
bp = st.integers(0, 10_000)


@st.composite
def basket(draw: st.DrawFn) -> list[BasketLine]:
    numbers = draw(st.lists(st.integers(1, 60), max_size=8, unique=True))
    return [
        BasketLine(line_no=no, sku=f"SKU{no}", category=draw(categories),
                   qty=draw(st.integers(1, 5)),
                   unit_price=draw(st.one_of(st.integers(0, 200), st.integers(0, 60_000))))
        for no in numbers
    ]


@st.composite
def rule(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["earn_points", "spend_threshold_off", "category_percent_off",
                                 "tier_discount", "birthday_gift"]))
    if kind == "earn_points":
        return {
            "kind": kind, "points": draw(st.integers(0, 5)),
            "per_amount": draw(st.integers(1, 1_000)),
            "category_rates": draw(st.dictionaries(
                st.sampled_from(["fresh", "wine"]),
                st.tuples(st.integers(0, 5), st.integers(1, 500)), max_size=2)),
            "excluded_categories": draw(st.lists(st.sampled_from(["tobacco"]), max_size=1)),
            "tier_multipliers": draw(st.dictionaries(st.sampled_from(TIERS),
                                                     st.integers(0, 30_000), max_size=3)),
            "rounding": draw(roundings),
            "expires_after_days": draw(st.one_of(st.none(), st.integers(1, 730))),
        }
    if kind == "spend_threshold_off":
        threshold = draw(st.integers(1, 50_000))
        return {"kind": kind, "threshold": threshold, "off": draw(st.integers(1, threshold)),
                "repeat": draw(st.booleans()),
                "categories": draw(st.one_of(st.none(), category_lists))}
    if kind == "category_percent_off":
        return {"kind": kind, "categories": draw(category_lists), "percent_bp": draw(bp),
                "rounding": draw(roundings)}
    if kind == "tier_discount":
        return {"kind": kind,
                "tiers": draw(st.dictionaries(st.sampled_from(TIERS), bp, min_size=1)),
                "excluded_categories": draw(st.lists(categories, max_size=2, unique=True)),
                "rounding": draw(roundings)}
    return {"kind": kind, "points": draw(st.integers(1, 500)),
            "window": draw(st.sampled_from(["day", "week", "month"]))}


@st.composite
def campaign_list(draw: st.DrawFn) -> list[Campaign]:
    ids = draw(st.lists(st.sampled_from("abcdefghij"), max_size=7, unique=True))
    out = []
    for cid in ids:
        start = draw(st.one_of(st.none(), st.integers(-10, 10)))
        length = draw(st.integers(0, 20))
        fields: dict[str, Any] = {
            "campaign_id": cid, "name": f"campaign {cid}", "rule": draw(rule()),
            "priority": draw(st.integers(-3, 3)),  # ties broken by campaign_id
            "members_only": draw(st.booleans()),
            "tiers": draw(st.one_of(st.none(), st.lists(st.sampled_from(TIERS), min_size=1,
                                                        max_size=3, unique=True))),
        }
        if start is not None:
            fields["starts_on"] = TODAY + timedelta(days=start)
            if draw(st.booleans()):
                fields["ends_on"] = TODAY + timedelta(days=start + length)
        out.append(Campaign.model_validate(fields))
    return out


members = st.one_of(
    st.none(),
    st.builds(MemberContext, tier=st.sampled_from([*TIERS, "unknown"]),
              birthday=st.one_of(st.none(), st.dates(date(1950, 1, 1), date(2010, 12, 31)))),
)

coupons = st.lists(
    st.builds(
        CouponSpec,
        code=st.sampled_from(["C1", "C2", "C3", "C4"]),
        kind=st.sampled_from(["amount_off", "amount_off", "percent_off", "percent_off", "bogus"]),
        value=st.one_of(st.integers(0, 20_000), st.integers(-5, 12_000)),
        min_spend=st.one_of(st.just(0), st.integers(0, 50_000)),
        categories=st.one_of(st.just(()), st.tuples(categories), st.tuples(categories,
                                                                            categories)),
    ),
    max_size=4,
)

days = st.dates(TODAY - timedelta(days=15), TODAY + timedelta(days=15))


def check_invariants(q: Quote, lines: list[BasketLine]) -> None:
    by_no = {ln.line_no: ln for ln in lines}
    assert [ql.line_no for ql in q.lines] == sorted(by_no)
    shares: dict[int, int] = defaultdict(int)
    for d in q.discounts:
        assert type(d.amount) is int and d.amount > 0
        assert sum(a for _, a in d.per_line) == d.amount  # per_line sums are exact
        assert len({no for no, _ in d.per_line}) == len(d.per_line)
        for no, a in d.per_line:
            assert type(a) is int and a > 0 and no in by_no
            shares[no] += a
    for ql in q.lines:
        ln = by_no[ql.line_no]
        assert ql.gross == ln.qty * ln.unit_price
        assert 0 <= ql.discount <= ql.gross  # never more off a line than the line costs
        assert ql.net == ql.gross - ql.discount >= 0
        assert ql.discount == shares[ql.line_no]
        assert type(ql.points) is int and ql.points >= 0
    assert q.subtotal == sum(ql.gross for ql in q.lines)
    assert q.discount_total == sum(ql.discount for ql in q.lines)
    assert q.discount_total == sum(d.amount for d in q.discounts)
    assert q.total == q.subtotal - q.discount_total >= 0
    assert q.points_earned == sum(ql.points for ql in q.lines) >= 0
    for value in (q.subtotal, q.discount_total, q.total, q.points_earned):
        assert type(value) is int


@FAST
@given(basket(), campaign_list(), members, days, coupons)
def test_quote_invariants_hold(
    lines: list[BasketLine], campaigns: list[Campaign], member: MemberContext | None,
    today: date, specs: list[CouponSpec],
) -> None:
    q = evaluate(lines, campaigns, member, today, specs)
    check_invariants(q, lines)
    if member is None:
        assert q.points_earned == 0 and q.birthday_gifts == ()
    applied = {d.coupon_code for d in q.discounts if d.coupon_code is not None}
    errored = [code for code, _ in q.coupon_errors]
    # every coupon offered is either applied once or reported, never silently dropped
    assert sorted([*applied, *errored]) == sorted(s.code for s in specs)


@FAST
@given(basket(), campaign_list(), members, coupons)
def test_a_discount_never_exceeds_what_it_applies_to(
    lines: list[BasketLine], campaigns: list[Campaign], member: MemberContext | None,
    specs: list[CouponSpec],
) -> None:
    q = evaluate(lines, campaigns, member, TODAY, specs)
    by_no = {ln.line_no: ln for ln in lines}
    gross = {ql.line_no: ql.gross for ql in q.lines}
    by_id = {c.campaign_id: c for c in campaigns}
    by_code: dict[str, CouponSpec] = {}
    for s in specs:
        by_code.setdefault(s.code, s)  # a repeated code applies (at most) the first time
    for d in q.discounts:
        touched = sum(gross[no] for no, _ in d.per_line)
        assert d.amount <= touched
        if d.coupon_code is not None:
            spec = by_code[d.coupon_code]
            assert d.kind == "coupon" and d.campaign_id is None
            assert not spec.categories or all(
                by_no[no].category in spec.categories for no, _ in d.per_line)
            if spec.kind == "amount_off":
                assert d.amount <= spec.value
            else:
                # The percent is of every covered line, spread over them by proportion, so a
                # small line can get a zero share and be absent from ``per_line``.
                covered = sum(gross[ln.line_no] for ln in lines
                              if not spec.categories or ln.category in spec.categories)
                assert d.amount <= percent_of(covered, spec.value, Rounding.UP)
            continue
        assert d.campaign_id is not None
        r = by_id[d.campaign_id].rule
        assert d.kind == r.kind
        assert by_id[d.campaign_id].active_on(TODAY)
        if isinstance(r, CategoryPercentOff):
            for no, a in d.per_line:
                assert by_no[no].category in r.categories
                assert a <= percent_of(gross[no], r.percent_bp, Rounding.UP)
        elif isinstance(r, TierDiscount):
            assert member is not None and member.tier in r.tiers
            for no, a in d.per_line:
                assert by_no[no].category not in r.excluded_categories
                assert a <= percent_of(gross[no], r.tiers[member.tier], Rounding.UP)
        elif isinstance(r, SpendThresholdOff):
            covered = [ln for ln in lines if r.categories is None or ln.category in r.categories]
            assert all(by_no[no] in covered for no, _ in d.per_line)
            base = sum(gross[ln.line_no] for ln in covered)
            assert d.amount % r.off == 0
            assert d.amount <= r.off * (base // r.threshold if r.repeat else 1)
        else:
            raise AssertionError(f"{r.kind} is not a discount rule")


@FAST
@given(basket(), campaign_list(), members, days, coupons, st.randoms(use_true_random=False))
def test_evaluation_is_deterministic_and_order_independent(
    lines: list[BasketLine], campaigns: list[Campaign], member: MemberContext | None,
    today: date, specs: list[CouponSpec], rnd: Any,
) -> None:
    first = evaluate(lines, campaigns, member, today, specs)
    assert evaluate(lines, campaigns, member, today, specs) == first
    shuffled_campaigns = list(campaigns)
    rnd.shuffle(shuffled_campaigns)
    shuffled_lines = list(lines)
    rnd.shuffle(shuffled_lines)
    assert evaluate(lines, shuffled_campaigns, member, today, specs) == first
    assert evaluate(shuffled_lines, shuffled_campaigns, member, today, specs) == first


@FAST
@given(basket(), campaign_list(), members, days)
def test_more_coupons_never_raise_the_total_or_the_points(
    lines: list[BasketLine], campaigns: list[Campaign], member: MemberContext | None,
    today: date,
) -> None:
    without = evaluate(lines, campaigns, member, today)
    spec = CouponSpec(code="X", kind="amount_off", value=1_000)
    with_coupon = evaluate(lines, campaigns, member, today, [spec])
    assert with_coupon.total == max(0, without.total - 1_000)
    assert 0 <= with_coupon.points_earned <= without.points_earned


terms = st.builds(
    RedemptionTerms,
    points_per_unit=st.integers(1, 1_000),
    unit_value=st.integers(1, 1_000),
    max_share_bp=bp,
    min_points=st.integers(0, 2_000),
)


@FAST
@given(terms, st.integers(0, 10**7), st.integers(0, 10**7))
def test_points_value_and_points_needed_agree(t: RedemptionTerms, points: int, amount: int) -> None:
    value = points_value(points, t)
    assert value >= 0
    assert value * t.points_per_unit <= points * t.unit_value  # never worth more than the rate
    assert points_needed(value, t) <= points
    assert points_value(points_needed(value, t), t) == value
    needed = points_needed(amount, t)
    assert points_value(needed, t) >= amount
    assert needed == 0 or points_value(needed - 1, t) < amount


@FAST
@given(terms, st.integers(0, 10**7), st.integers(0, 10**8))
def test_max_redeemable_points_stay_within_balance_and_share(
    t: RedemptionTerms, balance: int, total: int,
) -> None:
    most = max_redeemable_points(balance, total, t)
    assert 0 <= most <= balance
    assert points_value(most, t) * 10_000 <= total * t.max_share_bp
    assert points_needed(points_value(most, t), t) == most  # whole steps only: nothing wasted
    if balance < t.min_points:
        assert most == 0
    else:  # one more step would break a limit
        step_points, step_value = t.step
        assert (most + step_points > balance
                or (points_value(most, t) + step_value) * 10_000 > total * t.max_share_bp)
