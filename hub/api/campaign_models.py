"""Response shapes of the campaign routes: a campaign's effect against its holdout
(``hub.reports.campaign_effect``; every figure's meaning is told there)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel

from hub.api.journey_models import EffectStore, EffectUplift


class CampaignBundleRef(BaseModel):
    """A bundle the hub holds that carries the campaign."""

    scope: Literal["fleet", "region", "store"]
    scope_id: str | None
    generation: int
    version: int
    issued_at: datetime


class CampaignWindow(BaseModel):
    """The store-local days measured, both ends included."""

    start: date
    end: date
    days: int


class CampaignEffectGroup(BaseModel):
    """A group of the audience and what it did in the window at the campaign's stores."""

    members: int
    visitors: int  # at least one purchase in the window
    visit_rate: float | None
    spend: int  # minor units, net of refunds in the window
    spend_per_member: float | None  # the average, minor units, not rounded
    discount: int  # minor units the campaign took off their sales (held out: should be 0)
    discounted_sales: int  # sales the campaign discounted


class CampaignEffectGroups(BaseModel):
    treated: CampaignEffectGroup
    held_out: CampaignEffectGroup  # the campaign's holdout: refused the offer at the till


class CampaignEffectRoi(BaseModel):
    """Minor units, rounded towards zero; ``roi`` = (incremental margin - costs) / costs."""

    margin_percent: int
    incremental_spend: int | None
    incremental_margin: int | None
    discount_cost: int  # what the campaign took off the treated members' sales
    costs: int
    roi: float | None
    note: str | None


class CampaignEffectCompleteness(BaseModel):
    stores: list[EffectStore]  # the campaign's stores the caller covers
    sales_facts_behind: int  # log events the sales facts have yet to read
    window_ends_on: date  # a store merged to before this day's end may miss purchases


class CampaignEffect(BaseModel):
    """What a campaign did, measured against its held-out members."""

    campaign_id: str
    name: str
    rule: str  # the rule's kind (spend_threshold_off, tier_discount, ...)
    holdout_percent: int
    pushed_in: list[CampaignBundleRef]
    chain_wide: bool
    stores: list[str]  # where its visits, spend and discounts count (for the caller)
    window: CampaignWindow
    audience: int  # members it would reach, as the hub sees them now
    groups: CampaignEffectGroups
    uplift: EffectUplift
    roi: CampaignEffectRoi
    completeness: CampaignEffectCompleteness
    note: str | None  # why the effect cannot be measured (no holdout)
    notes: list[str]
