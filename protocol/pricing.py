"""Pricing a basket against the campaigns: pure, deterministic, integer-only.

``evaluate`` turns basket lines, campaigns, the member (if any), the day and the coupons offered
into a ``Quote``. The same inputs give the same ``Quote`` whatever order the lines or campaigns
come in (lines are taken by ``line_no``, campaigns by ``(priority, campaign_id)``), so the edge
and the hub agree on every number.

Order of application:

1. Campaigns active on ``today`` and eligible for the customer are taken by
   ``(priority, campaign_id)``.
2. Line-level rules (``category_percent_off``, ``tier_discount``), each on every line's current
   net, rounded per line.
3. Order-level rules (``spend_threshold_off``), on the current net of the lines they cover, shared
   over those lines in proportion to their net (``money.allocate``).
4. Coupons, in the order given, on the current net of the lines they cover, shared the same way.
   A coupon that cannot apply is reported in ``Quote.coupon_errors``, never raised.
5. Points, per line on its final net, with the first active earn rule and the member's tier
   multiplier; rounded per line. A customer who is not a member earns nothing.
6. Birthday gifts of every active birthday rule whose window holds the member's birthday.

Invariants (tested): every line's discount is at most its gross and its net is never negative;
every ``AppliedDiscount.per_line`` sums to its ``amount``; the lines' discounts sum to
``discount_total``; ``total == subtotal - discount_total``; points are never negative.

Paying with points uses the reduced ratio of ``points_per_unit : unit_value``: 100 points = 100
minor units is 1 point = 1 minor unit, so 150 points are worth 150; 100 points = 50 minor units is
2 points = 1 minor unit, so 151 points are worth 75 and the odd point cannot be used. Points that
do not make a whole step are never usable; an amount is never paid with a fraction of a step.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from math import gcd

from protocol.campaigns import (
    FULL_BP,
    BirthdayGiftRule,
    Campaign,
    CategoryPercentOff,
    CouponTemplate,
    EarnPoints,
    PointsRedemption,
    SpendThresholdOff,
    Targeting,
    TierDiscount,
    TopupBonus,
)
from protocol.money import Rounding, allocate, divide, percent_of

COUPON_KINDS = ("amount_off", "percent_off")


@dataclass(frozen=True)
class BasketLine:
    line_no: int
    sku: str
    category: str
    qty: int
    unit_price: int  # minor units


@dataclass(frozen=True)
class MemberContext:
    tier: str
    birthday: date | None
    # What campaigns with an ``audience`` look at (the directory's view of the member).
    targeting: Targeting = field(default_factory=Targeting)


@dataclass(frozen=True)
class CouponSpec:
    """A coupon the edge has already found valid (issued, unexpired, unused, this member's)."""

    code: str
    kind: str  # "amount_off" (value in minor units) | "percent_off" (value in basis points)
    value: int
    min_spend: int = 0  # on the current net of the lines the coupon covers
    categories: tuple[str, ...] = ()  # empty: the whole basket


@dataclass(frozen=True)
class QuotedLine:
    line_no: int
    gross: int
    discount: int
    net: int
    points: int


@dataclass(frozen=True)
class AppliedDiscount:
    kind: str  # the rule's kind, or "coupon"
    label: str
    amount: int
    campaign_id: str | None
    coupon_code: str | None
    per_line: tuple[tuple[int, int], ...]  # (line_no, amount), lines with a share above zero


@dataclass(frozen=True)
class BirthdayGift:
    campaign_id: str
    points: int
    coupon: CouponTemplate | None


@dataclass(frozen=True)
class Quote:
    lines: tuple[QuotedLine, ...]  # by line_no
    discounts: tuple[AppliedDiscount, ...]  # in the order they were applied
    subtotal: int
    discount_total: int
    total: int
    points_earned: int
    points_expire_days: int | None  # of the earn rule used; None: no rule, or never expire
    coupon_errors: tuple[tuple[str, str], ...]  # (code, reason)
    birthday_gifts: tuple[BirthdayGift, ...]


@dataclass(frozen=True)
class RedemptionTerms:
    points_per_unit: int
    unit_value: int
    max_share_bp: int
    min_points: int  # the balance a member needs before any points can be used

    def __post_init__(self) -> None:
        for name in ("points_per_unit", "unit_value", "max_share_bp", "min_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"redemption {name} must be an int, got {value!r}")
        if self.points_per_unit <= 0 or self.unit_value <= 0:
            raise ValueError("redemption points_per_unit and unit_value must be above zero")
        if not 0 <= self.max_share_bp <= FULL_BP:
            raise ValueError(f"redemption max_share_bp must be 0..{FULL_BP}")
        if self.min_points < 0:
            raise ValueError("redemption min_points must not be negative")

    @property
    def step(self) -> tuple[int, int]:
        """The smallest usable exchange, ``(points, minor units)``: the ratio in lowest terms."""
        g = gcd(self.points_per_unit, self.unit_value)
        return self.points_per_unit // g, self.unit_value // g


# --- helpers ---------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_basket(lines: Sequence[BasketLine]) -> list[BasketLine]:
    seen: set[int] = set()
    for ln in lines:
        if not isinstance(ln, BasketLine):
            raise ValueError(f"basket line must be a BasketLine, got {type(ln).__name__}")
        for name in ("line_no", "qty", "unit_price"):
            if not _is_int(getattr(ln, name)):
                raise ValueError(f"line {ln.line_no!r}: {name} must be an int")
        if ln.qty <= 0:
            raise ValueError(f"line {ln.line_no}: quantity must be above zero, got {ln.qty}")
        if ln.unit_price < 0:
            raise ValueError(f"line {ln.line_no}: unit price must not be negative")
        if ln.line_no in seen:
            raise ValueError(f"line number {ln.line_no} appears twice in the basket")
        seen.add(ln.line_no)
    return sorted(lines, key=lambda ln: ln.line_no)


def _applicable(
    campaigns: Sequence[Campaign], member: MemberContext | None, today: date
) -> list[Campaign]:
    """Active, eligible campaigns in application order. Duplicate ids are refused: with two
    campaigns of one id the order, and so the result, would depend on the input order."""
    ids: set[str] = set()
    for c in campaigns:
        if c.campaign_id in ids:
            raise ValueError(f"campaign {c.campaign_id!r} is given twice")
        ids.add(c.campaign_id)
    tier = member.tier if member is not None else None
    who = member.targeting if member is not None else None
    chosen = [c for c in campaigns if c.active_on(today) and c.eligible(tier, who)]
    return sorted(chosen, key=lambda c: (c.priority, c.campaign_id))


def _adjusted_birthday(birthday: date, year: int) -> date:
    """The birthday in ``year``; 29 February falls on 28 February in a common year."""
    if birthday.month == 2 and birthday.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return birthday.replace(year=year)


def birthday_in_window(birthday: date, today: date, window: str) -> bool:
    """``day``: the birthday is today; ``week``: within 3 days either side (across a new year
    too); ``month``: the birthday's month is this month."""
    if window == "month":
        return birthday.month == today.month
    if window == "day":
        return _adjusted_birthday(birthday, today.year) == today
    if window == "week":
        return any(
            abs((_adjusted_birthday(birthday, y) - today).days) <= 3
            for y in (today.year - 1, today.year, today.year + 1)
            if date.min.year <= y <= date.max.year
        )
    raise ValueError(f"unknown birthday window {window!r}")


class _Basket:
    """Running state of an evaluation: every line's current net, and the discounts so far."""

    def __init__(self, lines: list[BasketLine]) -> None:
        self.lines = lines
        self.gross = {ln.line_no: ln.qty * ln.unit_price for ln in lines}
        self.net = dict(self.gross)
        self.discounts: list[AppliedDiscount] = []

    def take(
        self, kind: str, label: str, shares: list[tuple[int, int]], *,
        campaign_id: str | None = None, coupon_code: str | None = None,
    ) -> None:
        per_line = tuple((no, amt) for no, amt in shares if amt)
        amount = sum(amt for _, amt in per_line)
        if amount == 0:
            return
        for no, amt in per_line:
            if not 0 < amt <= self.net[no]:  # a rule bug, never a customer's input
                raise AssertionError(f"{kind} would take {amt} off line {no} (net {self.net[no]})")
            self.net[no] -= amt
        self.discounts.append(AppliedDiscount(kind, label, amount, campaign_id, coupon_code,
                                              per_line))

    def spread(self, amount: int, line_nos: list[int]) -> list[tuple[int, int]]:
        """``amount`` (at most the lines' net) over ``line_nos`` in proportion to their net."""
        weights = [self.net[no] for no in line_nos]
        return list(zip(line_nos, allocate(amount, weights), strict=True))


def _line_rule(basket: _Basket, campaign: Campaign, member: MemberContext | None) -> None:
    rule = campaign.rule
    shares: list[tuple[int, int]] = []
    if isinstance(rule, CategoryPercentOff):
        for ln in basket.lines:
            if ln.category in rule.categories:
                net = basket.net[ln.line_no]
                shares.append((ln.line_no, percent_of(net, rule.percent_bp, rule.rounding)))
    elif isinstance(rule, TierDiscount):
        bp = rule.tiers.get(member.tier, 0) if member is not None else 0
        for ln in basket.lines:
            if bp and ln.category not in rule.excluded_categories:
                net = basket.net[ln.line_no]
                shares.append((ln.line_no, percent_of(net, bp, rule.rounding)))
    basket.take(rule.kind, campaign.name, shares, campaign_id=campaign.campaign_id)


def _order_rule(basket: _Basket, campaign: Campaign) -> None:
    rule = campaign.rule
    if not isinstance(rule, SpendThresholdOff):
        return
    covered = [ln.line_no for ln in basket.lines
               if rule.categories is None or ln.category in rule.categories]
    eligible = sum(basket.net[no] for no in covered)
    if eligible < rule.threshold:
        return
    times = eligible // rule.threshold if rule.repeat else 1
    basket.take(rule.kind, campaign.name, basket.spread(rule.off * times, covered),
                campaign_id=campaign.campaign_id)


def _coupon_problem(spec: CouponSpec) -> str | None:
    if not isinstance(spec, CouponSpec):
        return "not a coupon"
    if spec.kind not in COUPON_KINDS:
        return f"unknown coupon kind {spec.kind!r}"
    if not _is_int(spec.value) or not _is_int(spec.min_spend):
        return "coupon value and minimum spend must be whole minor units"
    if spec.value < 0 or spec.min_spend < 0:
        return "coupon value and minimum spend must not be negative"
    if spec.kind == "percent_off" and spec.value > FULL_BP:
        return f"a percent_off coupon is at most {FULL_BP} basis points"
    return None


def _coupon(basket: _Basket, spec: CouponSpec) -> str | None:
    """Apply ``spec``; the reason it cannot apply, or None when it did."""
    problem = _coupon_problem(spec)
    if problem is not None:
        return problem
    covered = [ln.line_no for ln in basket.lines
               if not spec.categories or ln.category in spec.categories]
    if not covered:
        return f"no item in the basket is in {', '.join(spec.categories)}"
    eligible = sum(basket.net[no] for no in covered)
    if eligible < spec.min_spend:
        return f"needs a spend of {spec.min_spend} on eligible items; they come to {eligible}"
    if spec.kind == "amount_off":
        amount = min(spec.value, eligible)
    else:
        amount = percent_of(eligible, spec.value, Rounding.HALF_UP)
    if amount <= 0:
        return "nothing left for this coupon to discount"
    basket.take("coupon", f"coupon {spec.code}", basket.spread(amount, covered),
                coupon_code=spec.code)
    return None


def _line_points(rule: EarnPoints, category: str, net: int, tier: str) -> int:
    if category in rule.excluded_categories:
        return 0
    points, per_amount = rule.category_rates.get(category, (rule.points, rule.per_amount))
    multiplier = rule.tier_multipliers.get(tier, FULL_BP)
    return divide(net * points * multiplier, per_amount * FULL_BP, rule.rounding)


# --- the evaluator ---------------------------------------------------------------------------


def evaluate(
    lines: Sequence[BasketLine],
    campaigns: Sequence[Campaign],
    member: MemberContext | None,
    today: date,
    coupons: Sequence[CouponSpec] = (),
) -> Quote:
    """Price ``lines``; raises ``ValueError`` only for a malformed basket or campaign list."""
    basket = _Basket(_check_basket(lines))
    applicable = _applicable(campaigns, member, today)

    for c in applicable:
        if isinstance(c.rule, CategoryPercentOff | TierDiscount):
            _line_rule(basket, c, member)
    for c in applicable:
        if isinstance(c.rule, SpendThresholdOff):
            _order_rule(basket, c)

    coupon_errors: list[tuple[str, str]] = []
    used: set[str] = set()
    for spec in coupons:
        code = spec.code if isinstance(spec, CouponSpec) else repr(spec)
        if code in used:
            coupon_errors.append((code, "this coupon is already applied to the sale"))
            continue
        used.add(code)
        reason = _coupon(basket, spec)
        if reason is not None:
            coupon_errors.append((code, reason))

    earn = None
    if member is not None:
        earn = next((c.rule for c in applicable if isinstance(c.rule, EarnPoints)), None)
    quoted = []
    for ln in basket.lines:
        net = basket.net[ln.line_no]
        gross = basket.gross[ln.line_no]
        pts = 0
        if earn is not None and member is not None:
            pts = _line_points(earn, ln.category, net, member.tier)
        quoted.append(QuotedLine(ln.line_no, gross, gross - net, net, pts))

    gifts: list[BirthdayGift] = []
    if member is not None and member.birthday is not None:
        for c in applicable:
            rule = c.rule
            if isinstance(rule, BirthdayGiftRule) and birthday_in_window(
                member.birthday, today, rule.window
            ):
                gifts.append(BirthdayGift(c.campaign_id, rule.points, rule.coupon))

    subtotal = sum(q.gross for q in quoted)
    discount_total = sum(q.discount for q in quoted)
    return Quote(
        lines=tuple(quoted),
        discounts=tuple(basket.discounts),
        subtotal=subtotal,
        discount_total=discount_total,
        total=subtotal - discount_total,
        points_earned=sum(q.points for q in quoted),
        points_expire_days=earn.expires_after_days if earn is not None else None,
        coupon_errors=tuple(coupon_errors),
        birthday_gifts=tuple(gifts),
    )


# --- paying with points ----------------------------------------------------------------------


def redemption_terms(
    campaigns: Sequence[Campaign],
    member: MemberContext | None,
    today: date,
    default: RedemptionTerms,
) -> RedemptionTerms:
    """The terms of the first active, eligible ``points_redemption`` campaign, else ``default``."""
    for c in _applicable(campaigns, member, today):
        rule = c.rule
        if isinstance(rule, PointsRedemption):
            return RedemptionTerms(rule.points_per_unit, rule.unit_value, rule.max_share_bp,
                                   rule.min_points)
    return default


def _non_negative(value: int, what: str) -> None:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{what} must be an int of at least zero, got {value!r}")


def points_value(points: int, terms: RedemptionTerms) -> int:
    """What ``points`` pay, in minor units: whole steps only, rounded down.

    With 100 points = 100 minor units, 150 points pay 150; with 100 points = 50, 151 points pay
    75 (the odd point is not usable). ``min_points`` does not enter here: see
    ``max_redeemable_points``.
    """
    _non_negative(points, "points")
    step_points, step_value = terms.step
    return points // step_points * step_value


def points_needed(amount: int, terms: RedemptionTerms) -> int:
    """The fewest points whose ``points_value`` covers ``amount`` (whole steps, rounded up).

    ``points_value(points_needed(a)) >= a``, equal whenever ``a`` is a whole number of steps'
    value (always, when the reduced step is worth one minor unit); and
    ``points_needed(points_value(p)) <= p`` — it is ``p`` less the points no step can use.
    """
    _non_negative(amount, "amount")
    step_points, step_value = terms.step
    return divide(amount, step_value, Rounding.UP) * step_points


def max_redeemable_points(balance: int, total: int, terms: RedemptionTerms) -> int:
    """The most points that may pay toward a sale of ``total``: whole steps, within the balance
    and ``max_share_bp`` of the total (rounded down); none below a balance of ``min_points``."""
    _non_negative(balance, "points balance")
    _non_negative(total, "sale total")
    if balance < terms.min_points:
        return 0
    cap = percent_of(total, terms.max_share_bp, Rounding.DOWN)
    step_points, step_value = terms.step
    return min(balance // step_points, cap // step_value) * step_points


# --- stored value ----------------------------------------------------------------------------


def topup_bonus(
    amount: int, campaigns: Sequence[Campaign], member: MemberContext | None, today: date
) -> tuple[int, str | None]:
    """The bonus for topping up ``amount``: of the first active, eligible ``topup_bonus``
    campaign (by priority) that gives one. ``(0, None)`` when none does."""
    _non_negative(amount, "top-up amount")
    for c in _applicable(campaigns, member, today):
        rule = c.rule
        if isinstance(rule, TopupBonus):
            bonus = _tier_bonus(rule, amount)
            if bonus > 0:
                return bonus, c.campaign_id
    return 0, None


def _tier_bonus(rule: TopupBonus, amount: int) -> int:
    tiers = sorted(rule.tiers, key=lambda t: t.min_topup, reverse=True)
    if not rule.repeat:
        return next((t.bonus for t in tiers if amount >= t.min_topup), 0)
    bonus, left = 0, amount
    for t in tiers:
        times, left = divmod(left, t.min_topup)
        bonus += times * t.bonus
    return bonus


__all__ = [
    "AppliedDiscount",
    "BasketLine",
    "BirthdayGift",
    "CouponSpec",
    "MemberContext",
    "Quote",
    "QuotedLine",
    "RedemptionTerms",
    "birthday_in_window",
    "evaluate",
    "max_redeemable_points",
    "points_needed",
    "points_value",
    "redemption_terms",
    "topup_bonus",
]
