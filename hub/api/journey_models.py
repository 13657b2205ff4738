"""Request and response shapes of the journey, message and consent routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.events import ConsentChannel


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Journey(BaseModel):
    journey_id: str
    name: str
    definition: dict[str, Any]
    version: int
    state: Literal["active", "paused", "archived"]
    created_by: str
    created_ms: int
    updated_ms: int
    entries: dict[str, int]  # entries by state (held_out apart)


class JourneyVersion(BaseModel):
    version: int
    definition: dict[str, Any]
    created_by: str
    created_ms: int


class JourneyPreview(BaseModel):
    """A definition as saving it would make it; nothing was saved. ``would_enter``: members it
    would take if it looked now (date-driven and scheduled triggers, before the holdout; None
    for triggers that follow events from now on); ``segment_members``: a segment trigger's
    segment size today."""

    name: str
    trigger: dict[str, Any]
    conditions: bool
    holdout_percent: int
    steps: list[dict[str, Any]]
    channels: list[str]
    would_enter: int | None
    segment_members: int | None


class JourneyState(_In):
    state: Literal["active", "paused", "archived"]


class JourneyAction(BaseModel):
    model_config = ConfigDict(extra="allow")  # each kind's outcome: coupon code, key ...
    step: int
    kind: str
    at_ms: int


class MemberJourney(BaseModel):
    journey_id: str
    name: str
    occasion: str
    version: int
    entered_ms: int
    held_out: bool
    state: str
    actions: list[JourneyAction]


class Message(BaseModel):
    message_id: str
    key: str
    member_id: str
    channel: str
    purpose: str
    template: str
    text: str
    journey_id: str | None
    state: str
    reason: str
    attempts: int
    next_ms: int
    created_ms: int
    sent_ms: int | None
    done_ms: int | None
    provider_id: str | None
    error: str


class ResendRequest(_In):
    channel: str | None = Field(None, max_length=20)  # every dead message of it; None: all


class Resent(BaseModel):
    resent: int


class ConsentIn(_In):
    channel: ConsentChannel
    purpose: Literal["marketing"] = "marketing"
    granted: bool
    text_version: str = Field(min_length=1, max_length=64)  # the wording the member saw


class ConsentsRequest(_In):
    consents: list[ConsentIn] = Field(min_length=1, max_length=8)
    actor: str = Field(min_length=1, max_length=100)  # who at HQ took it (the hotline agent)
    where: Literal["hq", "online", "phone"] = "hq"


class ConsentsRecorded(BaseModel):
    member_id: str
    recorded: int  # consents that changed (a repeat changes nothing)


# --- a journey's effect (``hub.reports.journey_effect``) -------------------------------------


class EffectGroup(BaseModel):
    """A group's members whose window has ended (``open``: still running, not compared)."""

    members: int
    open: int
    visitors: int  # at least one purchase in the window
    visit_rate: float | None
    spend: int  # minor units, net of refunds in the window
    spend_per_member: float | None  # the average, minor units, not rounded


class EffectGroups(BaseModel):
    treated: EffectGroup
    held_out: EffectGroup  # the journey's holdout and the chain's control group together


class EffectDifference(BaseModel):
    """Treated minus held out, with its 95 % interval (null: too few members to tell)."""

    difference: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool | None  # the interval leaves 0 out
    method: str
    df: float | None = None  # Welch's degrees of freedom (spend only)


class EffectUplift(BaseModel):
    visit_rate: EffectDifference
    spend_per_member: EffectDifference
    note: str | None  # why an interval is missing or not to be trusted


class EffectRoi(BaseModel):
    """Minor units, rounded towards zero; ``roi`` = (incremental margin - costs) / costs."""

    margin_percent: int
    incremental_spend: int | None
    incremental_margin: int | None
    coupon_cost: int  # discounts the compared treated members' journey coupons gave
    messages_sent: int
    message_cost: int
    costs: int
    roi: float | None
    note: str | None


class EffectStore(BaseModel):
    store_id: str
    merged_to_ms: int | None  # wall time of the newest event merged from the store
    lag_events: int  # events the store last reported that the hub has not merged


class EffectCompleteness(BaseModel):
    stores: list[EffectStore]
    sales_facts_behind: int  # log events the sales facts have yet to read
    windows_end_ms: int | None  # the latest end of a compared window


class JourneyEffect(BaseModel):
    """What a journey did, measured against its held-out members (see
    ``hub.reports.journey_effect`` for every figure's meaning)."""

    journey_id: str
    name: str
    holdout_percent: int
    window_days: int
    now_ms: int
    entries: int
    entered: int  # members, each once as they now are
    treated: int
    held_out: int
    held_out_by_kind: dict[str, int]  # journey (its own holdout), control (the chain's)
    open: int  # members whose window has not ended yet
    messages: dict[str, int]  # the journey's messages by outbox state
    sent: int
    delivered: int
    suppressed: dict[str, int]  # by reason
    coupons_issued: int
    coupons_redeemed: int
    redemption_rate: float | None
    groups: EffectGroups
    uplift: EffectUplift
    roi: EffectRoi
    completeness: EffectCompleteness
    notes: list[str]
