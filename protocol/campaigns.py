"""The campaign rule language: what HQ can promise a customer, as data.

A ``Campaign`` is a rule (discriminated by ``kind``) plus when and for whom it runs. Campaigns
travel in a ``CampaignBundle`` (one per scope: fleet, region or store), written by HQ in TOML or
JSON, signed by the hub and verified by the edge. ``protocol.pricing`` evaluates them.

Conventions:

* Money is ``int`` minor units; a share is basis points (1% = 100 bp, 100% = 10,000 bp); a
  ratio is two ints. Ints are strict: ``1.5``, ``"100"`` or ``true`` for an amount is refused.
* ``priority``: lower applies first; ties are broken by ``campaign_id``.
* Dates are inclusive: a campaign with ``starts_on = ends_on = 2026-03-08`` runs that one day.
* ``tiers = None`` means every member tier (and, if ``members_only`` is false, non-members too);
  a list limits the campaign to members of those tiers.
* ``audience`` narrows a campaign to members HQ picked out: in one of ``segments`` (marked for
  the tills), with one of ``tags`` (set at a store, by HQ or by a rule), in one of
  ``rfm_groups`` (the latest run's, e.g. ``HHH``) and at one of ``stages`` (lifecycle); each
  list given must match, and the member directory brings each member's values to the store,
  so the store decides offline exactly as the hub's data says.
* ``members_only`` defaults to true: a promotion that also applies to walk-in customers (a 满减
  or a category sale, typically) must say ``members_only = false``.

Which rules stack: every active discount rule applies, one after the other. Of the rules that
define a single thing for the sale — ``earn_points``, ``points_redemption`` — only the first
active, eligible one (by priority) counts, so a "double points week" is an earn rule with a
lower priority number and its own dates, not a second rule added on top of the base rate. Every
active ``birthday_gift`` gives its gift; ``topup_bonus`` gives the bonus of the first campaign
(by priority) that gives any.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import msgpack
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

from protocol.holdout import held_out
from protocol.money import MAX_AMOUNT, Rounding

MAX_POINTS = 1_000_000_000
FULL_BP = 10_000  # 100% in basis points

Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
PositiveAmount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
Points = Annotated[int, Field(strict=True, ge=0, le=MAX_POINTS)]
PositivePoints = Annotated[int, Field(strict=True, gt=0, le=MAX_POINTS)]
PercentBp = Annotated[int, Field(strict=True, ge=0, le=FULL_BP)]
# A points multiplier: 10,000 = 1x, 15,000 = 1.5x. Up to 100x; below 1x is allowed (0 = none).
MultiplierBp = Annotated[int, Field(strict=True, ge=0, le=100 * FULL_BP)]
Days = Annotated[int, Field(strict=True, ge=1, le=36_500)]
Priority = Annotated[int, Field(strict=True, ge=-1_000_000, le=1_000_000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Tier = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# A member's lifecycle stage and RFM group as the hub computes them (hub.members.lifecycle,
# hub.members.rfm; "none": no purchase in the run's window).
LifecycleStage = Literal["new", "active", "sleeping", "lost", "reactivated"]
RfmGroup = Annotated[str, StringConstraints(pattern=r"^([HL]{3}|none)$")]

# (points, per_amount): ``points`` points for every ``per_amount`` minor units of net spend.
EarnRate = tuple[Points, PositiveAmount]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_duplicates(values: list[str] | None, what: str) -> None:
    if values is None:
        return
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} lists {v!r} twice")
        seen.add(v)


# --- rules -----------------------------------------------------------------------------------


class EarnPoints(_Model):
    """Points for spend, computed per line on the line's net (after every discount).

    Per line: ``net * points * multiplier_bp / (per_amount * 10,000)``, rounded once with
    ``rounding`` (down by default: nobody earns a fraction). The sale's points are the sum of its
    lines', so a refunded line takes back exactly what it earned.
    """

    kind: Literal["earn_points"] = "earn_points"
    points: Points = 1
    per_amount: PositiveAmount = 100
    category_rates: dict[Category, EarnRate] = Field(default_factory=dict)
    excluded_categories: list[Category] = Field(default_factory=list)
    tier_multipliers: dict[Tier, MultiplierBp] = Field(default_factory=dict)
    rounding: Rounding = Rounding.DOWN
    expires_after_days: Days | None = 365  # None: the points never expire

    @model_validator(mode="after")
    def _check(self) -> EarnPoints:
        _no_duplicates(self.excluded_categories, "excluded_categories")
        both = sorted(set(self.category_rates) & set(self.excluded_categories))
        if both:
            raise ValueError(
                f"categories {both} are both excluded and given a rate; use a rate of 0 or "
                "exclude them, not both"
            )
        return self


class SpendThresholdOff(_Model):
    """满减: ``off`` off when the basket (or its ``categories``) reaches ``threshold``.

    With ``repeat`` (每满减) the discount is given for every full ``threshold``: spend 650 with
    300/30 → 60 off. Measured on the current net of the matching lines (after line-level
    discounts) and shared over those lines in proportion to their net.
    """

    kind: Literal["spend_threshold_off"] = "spend_threshold_off"
    threshold: PositiveAmount
    off: PositiveAmount
    repeat: bool = False
    categories: list[Category] | None = None  # None: the whole basket

    @model_validator(mode="after")
    def _check(self) -> SpendThresholdOff:
        if self.off > self.threshold:
            raise ValueError(
                f"off ({self.off}) must not exceed threshold ({self.threshold}): a discount "
                "larger than the spend that earns it would make a basket free"
            )
        if self.categories is not None and not self.categories:
            raise ValueError("categories must not be empty; leave it out for the whole basket")
        _no_duplicates(self.categories, "categories")
        return self


class CategoryPercentOff(_Model):
    """A percentage off every line of the given categories, rounded per line."""

    kind: Literal["category_percent_off"] = "category_percent_off"
    categories: list[Category] = Field(min_length=1)
    percent_bp: PercentBp
    rounding: Rounding = Rounding.HALF_UP

    @field_validator("categories")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        _no_duplicates(v, "categories")
        return v


class TierDiscount(_Model):
    """Member prices: a percentage off per tier (e.g. gold 5%), rounded per line."""

    kind: Literal["tier_discount"] = "tier_discount"
    tiers: dict[Tier, PercentBp] = Field(min_length=1)
    excluded_categories: list[Category] = Field(default_factory=list)
    rounding: Rounding = Rounding.HALF_UP

    @field_validator("excluded_categories")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        _no_duplicates(v, "excluded_categories")
        return v


class CouponTemplate(_Model):
    """A coupon to issue: ``value`` is minor units (amount_off) or basis points (percent_off)."""

    kind: Literal["amount_off", "percent_off"]
    value: PositiveAmount
    min_spend: Amount = 0
    valid_days: Days = 30

    @model_validator(mode="after")
    def _check(self) -> CouponTemplate:
        if self.kind == "percent_off" and self.value > FULL_BP:
            raise ValueError(
                f"a percent_off coupon's value is basis points, 1..{FULL_BP}; got {self.value}"
            )
        return self


class BirthdayGiftRule(_Model):
    """Points and/or a coupon for a member whose birthday falls in the ``window`` around today.

    ``day``: the birthday itself (29 February counts as 28 February in a common year);
    ``week``: within three days either side; ``month``: the birthday's calendar month.
    """

    kind: Literal["birthday_gift"] = "birthday_gift"
    points: Points = 0
    coupon: CouponTemplate | None = None
    window: Literal["day", "week", "month"] = "day"

    @model_validator(mode="after")
    def _check(self) -> BirthdayGiftRule:
        if self.points == 0 and self.coupon is None:
            raise ValueError("a birthday gift needs points above zero, a coupon, or both")
        return self


class TopupTier(_Model):
    min_topup: PositiveAmount
    bonus: Amount


class TopupBonus(_Model):
    """Stored-value bonus for a top-up: the bonus of the highest tier the amount reaches.

    With ``repeat`` the tiers are used greedily as often as they fit, largest first: with
    500→50 and 1000→120, topping up 1,500 gives 120 + 50.
    """

    kind: Literal["topup_bonus"] = "topup_bonus"
    tiers: list[TopupTier] = Field(min_length=1, max_length=50)
    repeat: bool = False

    @model_validator(mode="after")
    def _check(self) -> TopupBonus:
        mins = [t.min_topup for t in self.tiers]
        if len(set(mins)) != len(mins):
            raise ValueError("two top-up tiers have the same min_topup")
        return self


class PointsRedemption(_Model):
    """Paying with points: ``points_per_unit`` points are worth ``unit_value`` minor units.

    At most ``max_share_bp`` of a sale's total may be paid with points, and a member needs a
    balance of at least ``min_points`` before any can be used. See ``protocol.pricing``.
    """

    kind: Literal["points_redemption"] = "points_redemption"
    points_per_unit: PositivePoints
    unit_value: PositiveAmount
    max_share_bp: PercentBp = FULL_BP
    min_points: Points = 0


Rule = Annotated[
    EarnPoints
    | SpendThresholdOff
    | CategoryPercentOff
    | TierDiscount
    | BirthdayGiftRule
    | TopupBonus
    | PointsRedemption,
    Field(discriminator="kind"),
]

LINE_RULES = ("category_percent_off", "tier_discount")
ORDER_RULES = ("spend_threshold_off",)


# --- campaigns and bundles -------------------------------------------------------------------


@dataclass(frozen=True)
class Targeting:
    """What an ``Audience`` looks at of a member (the directory's ``hq_tags``, ``segments``,
    ``rfm_group``, ``stage``, with the store's own tags)."""

    tags: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    rfm_group: str | None = None
    stage: str | None = None
    member_id: str | None = None  # whom a campaign's holdout draws


class Audience(_Model):
    """Members HQ picked out; every list given must match (a member in any of its values)."""

    segments: list[Name] | None = Field(None, min_length=1, max_length=100)
    tags: list[Label] | None = Field(None, min_length=1, max_length=100)
    rfm_groups: list[RfmGroup] | None = Field(None, min_length=1, max_length=9)
    stages: list[LifecycleStage] | None = Field(None, min_length=1, max_length=5)

    @model_validator(mode="after")
    def _something(self) -> Audience:
        if all(v is None for v in (self.segments, self.tags, self.rfm_groups, self.stages)):
            raise ValueError("an audience names segments, tags, rfm_groups or stages")
        return self

    def holds(self, who: Targeting) -> bool:
        return ((self.segments is None or not who.segments.isdisjoint(self.segments))
                and (self.tags is None or not who.tags.isdisjoint(self.tags))
                and (self.rfm_groups is None or who.rfm_group in self.rfm_groups)
                and (self.stages is None or who.stage in self.stages))


class Campaign(_Model):
    campaign_id: Name
    name: Label
    priority: Priority = 100
    starts_on: date | None = None
    ends_on: date | None = None
    tiers: list[Tier] | None = None
    members_only: bool = True
    audience: Audience | None = None
    # A share of the members it would reach that it holds out (``protocol.holdout``: the hub
    # draws the same members when it measures the campaign's effect).
    holdout_percent: Annotated[int, Field(strict=True, ge=0, le=50)] = 0
    rule: Rule

    @model_validator(mode="after")
    def _check(self) -> Campaign:
        if self.starts_on is not None and self.ends_on is not None and (
            self.ends_on < self.starts_on
        ):
            raise ValueError(
                f"campaign {self.campaign_id!r} ends ({self.ends_on}) before it starts "
                f"({self.starts_on})"
            )
        if self.tiers is not None and not self.tiers:
            raise ValueError(
                f"campaign {self.campaign_id!r}: tiers must not be empty; leave it out for "
                "every tier"
            )
        _no_duplicates(self.tiers, "tiers")
        return self

    @model_serializer(mode="wrap")
    def _without_audience(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("audience") is None:
            data.pop("audience", None)  # bundles signed before audiences verify as they were
        if not data.get("holdout_percent"):
            data.pop("holdout_percent", None)  # and before holdouts
        return data

    def active_on(self, day: date) -> bool:
        """Whether ``day`` lies within the campaign's dates (both ends inclusive)."""
        if self.starts_on is not None and day < self.starts_on:
            return False
        return self.ends_on is None or day <= self.ends_on

    def eligible(self, tier: str | None, who: Targeting | None = None) -> bool:
        """Whether a customer of ``tier`` (None: not a member) may benefit; with an
        ``audience``, only a member it holds (``who``)."""
        if tier is None:
            return not self.members_only and self.tiers is None and self.audience is None
        who = who or Targeting()
        if self.audience is not None and not self.audience.holds(who):
            return False
        if who.member_id is not None and held_out(self.campaign_id, who.member_id,
                                                  self.holdout_percent):
            return False  # held out: measured against, not given the offer
        return self.tiers is None or tier in self.tiers


def _canonical(value: Any) -> Any:
    """Dicts with sorted keys, all the way down, so equal models pack to equal bytes."""
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


# Versions stay within what every JSON reader holds exactly; a store only ever moves up, so a
# version near this bound would leave a scope nowhere to go (the hub refuses big jumps).
MAX_BUNDLE_VERSION = 2**53 - 1
MAX_GENERATION = 1_000_000
# A region or store id, as it stands in a campaign topic (``protocol.topics``).
ScopeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class CampaignBundle(_Model):
    """Every campaign of one scope, as HQ issues it. A newer ``version`` replaces an older one.

    ``generation`` is HQ's way out of a version it can no longer go beyond (one pushed near the
    largest by a slip of the keyboard): bundles order by ``(generation, version)``, so a bundle
    of the next generation replaces any version of the one before, and its versions start again
    at 1. A bundle of generation 0 is sent and signed without the field, as before it existed.
    """

    version: Annotated[int, Field(strict=True, ge=1, le=MAX_BUNDLE_VERSION)]
    generation: Annotated[int, Field(strict=True, ge=0, le=MAX_GENERATION)] = 0
    scope: Literal["fleet", "region", "store"]
    scope_id: ScopeId | None = None
    issued_at: AwareDatetime
    campaigns: list[Campaign] = Field(default_factory=list, max_length=1000)
    signature: str | None = None  # set by the hub's signer over ``signing_bytes()``

    @model_validator(mode="after")
    def _check(self) -> CampaignBundle:
        if self.scope == "fleet" and self.scope_id is not None:
            raise ValueError("a fleet bundle has no scope_id")
        if self.scope != "fleet" and self.scope_id is None:
            raise ValueError(f"a {self.scope} bundle needs a scope_id (which {self.scope})")
        _no_duplicates([c.campaign_id for c in self.campaigns], "campaigns (campaign_id)")
        return self

    @model_serializer(mode="wrap")
    def _without_generation_0(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("generation") == 0:
            del data["generation"]  # stores older than generations read and verify it as before
        return data

    @property
    def order(self) -> tuple[int, int]:
        """What "newer" means: ``(generation, version)``."""
        return self.generation, self.version

    def signing_bytes(self) -> bytes:
        """The canonical bytes a signature covers: msgpack of the bundle without ``signature``,
        every map's keys sorted, dates and times as ISO strings."""
        data = self.model_dump(mode="json", exclude={"signature"})
        packed: bytes = msgpack.packb(_canonical(data), use_bin_type=True)
        return packed


SCOPE_RANK = {"fleet": 0, "region": 1, "store": 2}


def active_campaigns(bundles: list[CampaignBundle]) -> list[Campaign]:
    """What a till prices with: every campaign of the bundles that reach its store (the fleet's,
    its region's, its own); a narrower scope's campaign overrides a same-id wider one. Here so
    the hub's preview prices a sample basket exactly as the till will."""
    by_id: dict[str, Campaign] = {}
    for bundle in sorted(bundles, key=lambda b: SCOPE_RANK[b.scope]):
        for c in bundle.campaigns:
            by_id[c.campaign_id] = c
    return sorted(by_id.values(), key=lambda c: c.campaign_id)


def parse_bundle(text: str, filename: str) -> CampaignBundle:
    """A bundle file as HQ writes it: TOML when ``filename`` ends in ``.toml``, else JSON.
    Raises ``ValueError`` (a ``ValidationError`` or ``tomllib.TOMLDecodeError``) when it is not
    a valid bundle."""
    if filename.endswith(".toml"):
        return CampaignBundle.model_validate(tomllib.loads(text))
    return CampaignBundle.model_validate_json(text)
