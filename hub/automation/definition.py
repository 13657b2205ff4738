"""What a journey is: a trigger, optional conditions on the member, a holdout share and a list
of actions with waits between them — a pydantic model, validated whole before anything is saved.

    {"name": "生日礼",
     "trigger": {"kind": "birthday", "days_before": 7},
     "conditions": {"field": "tier", "in": ["gold"]},
     "holdout_percent": 10,
     "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 2000, "valid_days": 30},
                 {"kind": "message", "channel": "sms", "template": "SMS_1",
                  "text": "{name}，生日快乐！送您{coupon_value}元券，码{coupon_code}。回T退订"},
                 {"kind": "wait", "hours": 24},
                 {"kind": "tag", "add": ["生日关怀"]}]}

Triggers (each names its **occasion**, the third part of the once-key with journey and
member): a birthday in N days (the member's next birthday, by the calendar of their home store;
one occasion a year), N hours after a purchase (the sale), registration, a stored-value top-up
(the top-up), entering a lifecycle stage (the change), entering a segment (the entry), a tier
going up or down (the change), points expiring within N days (the expiry date), and a one-off
to a segment at a set time (a care plan: one occasion).

Messages name their placeholders (``PLACEHOLDERS``); an unknown one is refused when the journey
is saved, not when a member would have got a broken text.
"""

from __future__ import annotations

import string
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.campaigns.coupons import MAX_PERCENT_OFF
from hub.members.conditions import Condition
from protocol.events import MAX_POINTS, CouponKind

MAX_ACTIONS = 20
MAX_COUPON_VALUE = 100_000_000  # minor units: a million in the chain's currency
# What a message's text may say about the member and what the journey gave them.
PLACEHOLDERS = frozenset({"name", "member_code", "coupon_code", "coupon_qr", "coupon_value",
                          "coupon_expires", "points", "points_expiring", "expiring_on",
                          "birthday", "stage", "tier", "from_tier", "sale_total",
                          "points_earned", "topup_amount", "topup_bonus"})
# What every message may say about the member.
MEMBER_GIVES = frozenset({"name", "member_code", "birthday", "stage", "tier"})
# What each trigger tells a message about the occasion (besides the member's own fields).
TRIGGER_GIVES = {"tier": {"from_tier"}, "points_expiring": {"points_expiring", "expiring_on"},
                 "after_purchase": {"sale_total", "points_earned"},
                 "topped_up": {"topup_amount", "topup_bonus"}}
Stage = Literal["new", "active", "sleeping", "lost", "reactivated"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Birthday(_Strict):
    kind: Literal["birthday"]
    days_before: int = Field(ge=0, le=60)


class AfterPurchase(_Strict):
    kind: Literal["after_purchase"]
    hours: int = Field(ge=0, le=24 * 90)


class Registered(_Strict):
    kind: Literal["registered"]


class ToppedUp(_Strict):
    kind: Literal["topped_up"]


class StageEntered(_Strict):
    kind: Literal["stage"]
    stage: Stage


class SegmentEntered(_Strict):
    kind: Literal["segment"]
    segment_id: str = Field(min_length=1, max_length=64)


class TierChanged(_Strict):
    """A member's tier went ``up`` or ``down`` (or either: ``any``), into ``tier`` if named."""

    kind: Literal["tier"]
    direction: Literal["up", "down", "any"] = "up"
    tier: str | None = Field(None, min_length=1, max_length=64)


class PointsExpiring(_Strict):
    kind: Literal["points_expiring"]
    days: int = Field(ge=1, le=365)


class Scheduled(_Strict):
    """A one-off to a segment's members as they are at ``at`` (a care plan)."""

    kind: Literal["scheduled"]
    segment_id: str = Field(min_length=1, max_length=64)
    at: datetime

    @field_validator("at")
    @classmethod
    def _aware(cls, at: datetime) -> datetime:
        if at.tzinfo is None:
            raise ValueError("at needs a time zone offset, e.g. 2027-01-01T10:00:00+08:00")
        return at


Trigger = Annotated[Birthday | AfterPurchase | Registered | ToppedUp | StageEntered
                    | SegmentEntered | TierChanged | PointsExpiring | Scheduled,
                    Field(discriminator="kind")]
# Triggers that follow a source in order (a cursor) rather than a daily look at everyone.
FOLLOWED = {"after_purchase": "events", "registered": "events", "topped_up": "events",
            "stage": "lifecycle", "segment": "segment", "tier": "tier"}


class IssueCoupon(_Strict):
    kind: Literal["coupon"]
    coupon_kind: CouponKind
    value: int = Field(ge=1)
    min_spend: int = Field(0, ge=0, le=MAX_COUPON_VALUE)
    categories: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=50)
    valid_days: int | None = Field(None, ge=1, le=3660)

    @model_validator(mode="after")
    def _value_fits(self) -> IssueCoupon:
        if self.coupon_kind == "percent_off" and self.value > MAX_PERCENT_OFF:
            raise ValueError("a percent_off coupon's value is basis points: at most 10000")
        if self.coupon_kind == "amount_off" and self.value > MAX_COUPON_VALUE:
            raise ValueError(f"an amount_off coupon is at most {MAX_COUPON_VALUE} minor units")
        if self.coupon_kind == "amount_off" and 0 < self.min_spend < self.value:
            raise ValueError("min_spend below the coupon's value would pay the member to buy")
        return self


class GrantPoints(_Strict):
    kind: Literal["points"]
    points: int = Field(ge=1, le=MAX_POINTS)
    valid_days: int | None = Field(None, ge=1, le=3660)


class SetTags(_Strict):
    kind: Literal["tag"]
    add: list[str] = Field(default_factory=list, max_length=20)
    remove: list[str] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _something(self) -> SetTags:
        if not self.add and not self.remove:
            raise ValueError("a tag action adds or removes at least one tag")
        return self


class SendMessage(_Strict):
    kind: Literal["message"]
    channel: Literal["sms", "email", "webhook", "store"]
    purpose: Literal["marketing", "transactional"] = "marketing"
    template: str = Field("", max_length=200)  # the provider's template (SMS code, subject)
    text: str = Field(min_length=1, max_length=2000)

    @field_validator("text", "template")
    @classmethod
    def _known_placeholders(cls, text: str) -> str:
        unknown = sorted(n or "{}" for n in _placeholders(text) if n not in PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholder {unknown[0]!r} (known: "
                             f"{', '.join(sorted(PLACEHOLDERS))})")
        return text


def _placeholders(text: str) -> set[str]:
    try:
        return {f for _lit, f, _spec, _conv in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise ValueError(f"the text cannot be filled: {exc}") from None


class Wait(_Strict):
    kind: Literal["wait"]
    hours: int = Field(ge=1, le=24 * 365)


Action = Annotated[IssueCoupon | GrantPoints | SetTags | SendMessage | Wait,
                   Field(discriminator="kind")]


class JourneyDefinition(_Strict):
    name: str = Field(min_length=1, max_length=100)
    trigger: Trigger
    conditions: Any = None  # a segment condition tree (``hub.members.conditions``)
    holdout_percent: int = Field(0, ge=0, le=50)
    actions: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)

    @model_validator(mode="after")
    def _acts(self) -> JourneyDefinition:
        if all(a.kind == "wait" for a in self.actions):
            raise ValueError("a journey needs an action besides waiting")
        if self.conditions is not None:
            Condition.parse(self.conditions)  # its errors name the part
        # A placeholder the journey cannot fill by the time the message leaves.
        given = set(MEMBER_GIVES) | TRIGGER_GIVES.get(self.trigger.kind, set())
        for i, action in enumerate(self.actions):
            if isinstance(action, SendMessage):
                missing = sorted(_placeholders(action.text) - given)
                if missing:
                    raise ValueError(f"actions[{i}]: {{{missing[0]}}} has no value here (a coupon"
                                     " or points action before it gives coupon_* or points;"
                                     " each trigger gives its own: README)")
            elif isinstance(action, IssueCoupon):
                given |= {"coupon_code", "coupon_qr", "coupon_value", "coupon_expires"}
            elif isinstance(action, GrantPoints):
                given.add("points")
        return self

    def condition(self) -> Condition | None:
        return None if self.conditions is None else Condition.parse(self.conditions)
