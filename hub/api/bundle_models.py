"""Shapes of the campaign bundle routes: the bundles the hub holds, and a preview of one being
written (``hub.campaigns.held``, ``hub.campaigns.preview``). Money is minor units."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from protocol.campaigns import Amount, CampaignBundle
from protocol.errors import ErrorDetail


class HeldBundle(BaseModel):
    """A bundle as the hub holds it, decoded from the signed manifest the stores got."""

    scope: Literal["fleet", "region", "store"]
    scope_id: str | None  # None for the fleet
    generation: int
    version: int
    issued_at: datetime
    key_id: str  # the hub key that signed it
    topic: str  # where it is retained
    campaigns: list[dict[str, Any]]  # ``protocol.campaigns.Campaign``, as JSON


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SampleLine(_Request):
    sku: Text
    category: Text
    qty: Annotated[int, Field(strict=True, ge=1, le=10_000)]
    unit_price: Amount  # minor units


class SampleBasket(_Request):
    """A basket to price as a till would: at ``store_id`` (left out: the first store the
    bundle reaches), on ``day`` (left out: today by the store's calendar), for a member of
    ``tier`` (left out: a walk-in customer)."""

    lines: list[SampleLine] = Field(min_length=1, max_length=50)
    store_id: Text | None = None
    day: date | None = None
    tier: Text | None = None
    birthday: date | None = None


class BundlePreviewRequest(_Request):
    bundle: CampaignBundle
    basket: SampleBasket | None = None


class BundleChanges(BaseModel):
    """Campaign ids against the bundle held for the scope."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]


class SampleDiscount(BaseModel):
    kind: str
    label: str
    amount: int
    campaign_id: str | None


class SampleQuote(BaseModel):
    store_id: str
    day: date
    subtotal: int
    discount_total: int
    total: int
    points_earned: int
    discounts: list[SampleDiscount]
    campaigns: list[str]  # the campaigns the store's till would run with the bundle


class BundlePreview(BaseModel):
    """What publishing the bundle would do; nothing was signed or published. ``refusal``: why
    a push of it would be refused now (a stale or far-jumping version), else None."""

    scope: Literal["fleet", "region", "store"]
    scope_id: str | None
    topic: str
    held_generation: int | None  # None: nothing held for the scope yet
    held_version: int | None
    next_generation: int  # what the next bundle of the scope takes
    next_version: int
    refusal: ErrorDetail | None
    changes: BundleChanges
    stores: list[str]  # the stores it reaches
    basket: SampleQuote | None
