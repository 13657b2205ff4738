"""What the HQ API answers, as models: OpenAPI documents every answer from these."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from hub.campaigns.coupons import MAX_PERCENT_OFF
from protocol.errors import iso_date_text
from protocol.events import (
    MAX_POINTS,
    Amount,
    CouponKind,
    Email,
    Gender,
    Id,
    NonEmptyText,
)
from protocol.money import MAX_AMOUNT
from protocol.sync import MemberCoupon, StoreGrant, StoreShare


class FleetStore(BaseModel):
    store_id: str
    name: str
    region: str | None
    timezone: str | None  # null: the chain's
    epoch: int
    acked_seq: int
    last_seen_s_ago: float | None
    outbox_depth: int | None
    lag_events: int
    campaign_versions: dict[str, Any]
    software: str
    devices: list[dict[str, Any]]
    refused_at_hub: dict[str, int]
    refused_at_store: dict[str, Any]
    campaign_refusals: int


class IngestFigures(BaseModel):
    received_batches: int
    validate_workers: int
    validator_restarts: int
    validation_fallbacks: int
    commits: int
    batches_per_commit: float


class BrokerLink(BaseModel):
    port: int | None
    connected: bool


class JobStatus(BaseModel):
    runs: int
    failures: int
    last_run_ms: int | None
    last_error: str | None
    at_start: bool  # it runs once right after the hub starts (then on its schedule)


class ProjectionLag(BaseModel):
    """How far a projection of the log has read (``hub.core.projections``)."""

    name: str
    pos: int  # the log position it has applied up to
    head: int  # the log's last position
    lag_events: int  # logged events it has not read yet
    lag_s: float | None  # at most this stale: 0 at the head, None if it never reached it
    synced_ms: int | None  # when it last stood at the head


class HubStream(BaseModel):
    """One of the hub's own streams (HQ, ONLINE): how far it is written. Not a store."""

    stream: str
    epoch: int
    seq: int


class HubStatus(BaseModel):
    stores: list[FleetStore]
    hub_streams: list[HubStream]
    applied_events: int
    duplicate_events: int
    gaps: int
    refused: dict[str, int]
    ingest: IngestFigures
    projections: list[ProjectionLag]
    jobs: dict[str, JobStatus]
    broker: BrokerLink


class CouponConflict(BaseModel):
    coupon_code: str
    store_id: str
    sale_id: str
    hlc: int
    amount: int
    kept_store: str
    kept_sale: str


class CouponConflicts(BaseModel):
    conflicts: list[CouponConflict]


class MemberView(BaseModel):
    """A member as the hub knows it and the caller may see them (``hub.auth.scope``): phone,
    name, birthday and cards masked for roles below HQ admin unless revealed (``unmasked``
    lists the fields shown whole); the balance is the member's one balance chain-wide, the
    per-store shares and allowances only those of the caller's stores. The PIN's hash is the
    stores' to check a PIN with: HQ sees whether one is set and whether it is locked."""

    member_id: str
    member_code: str
    phone: str | None
    name: str
    birthday: str | None  # ISO, or "****-MM-**" masked
    tier: str
    tags: list[str]
    cards: list[str]
    card_states: list[dict[str, Any]]
    home_store: str
    merged_into: str | None
    aliases: list[str]
    shares: list[StoreShare]
    grants: list[StoreGrant]
    coupons: list[MemberCoupon]
    guide_id: str | None
    pin_set: bool
    pin_locked: bool
    birthday_gift_year: int
    points: int
    stored_value: int
    consents: list[dict[str, Any]]  # channel, purpose, granted, text_version, store_id, hlc
    email: str | None = None  # "w***@example.cn" masked
    gender: str | None = None  # female, male, other; not masked (how a guide greets them)
    unmasked: list[str]


class PushedBundle(BaseModel):
    topic: str
    version: int
    generation: int
    scope: str


class BalanceMismatch(BaseModel):
    member_id: str
    held: tuple[int, int, int]
    rebuilt: tuple[int, int, int]


class RebuildCheck(BaseModel):
    members: int
    events: int
    mismatches: list[BalanceMismatch]
    mismatch_count: int


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointsAdjustmentRequest(_Request):
    """A signed change of a member's points by HQ, with why and who."""

    delta: Annotated[int, Field(strict=True, ge=-MAX_POINTS, le=MAX_POINTS)]
    reason: NonEmptyText
    actor: NonEmptyText  # who made it (until HQ users exist, the caller names themselves)

    @model_validator(mode="after")
    def _not_zero(self) -> PointsAdjustmentRequest:
        if self.delta == 0:
            raise ValueError("delta must not be 0")
        return self


class WrittenEvent(BaseModel):
    """Where an HQ write stands in the hub's log: its stream, seq, event id and HLC."""

    stream: str
    seq: int
    event_id: str
    hlc: int


class PointsAdjustment(WrittenEvent):
    member_id: str  # the member it was applied to (a merged id's survivor)
    delta: int
    reason: str
    actor: str
    points: int  # the member's balance at the hub after it


class ProfileChangeRequest(_Request):
    """HQ's change of a member's name, birthday (a birthday once set changes only here),
    e-mail address (null: none any more) or gender (female, male, other; null: not known)."""

    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    birthday: Annotated[date, BeforeValidator(iso_date_text)] | None = None
    email: Email | None = None
    gender: Gender | None = None
    actor: NonEmptyText


class ProfileChanged(WrittenEvent):
    member_id: str
    name: str
    birthday: str | None
    email: str | None = None
    gender: str | None = None
    actor: str


class CardStateRequest(_Request):
    """``lost``: block the card at every store (挂失); ``active``: lift the loss; ``unbound``:
    free it for good."""

    state: Literal["lost", "active", "unbound"]
    reason: Annotated[str, StringConstraints(max_length=200)] = ""
    actor: NonEmptyText


class CardStateChange(BaseModel):
    """The card's state now; ``seq`` and the rest are null when it was in that state
    already (nothing was written)."""

    member_id: str
    card_uid: str
    state: str
    reason: str
    actor: str
    stream: str | None
    seq: int | None
    event_id: str | None
    hlc: int | None


class CouponIssueRequest(_Request):
    """A single-use coupon for the member, redeemable in any store, offline too."""

    kind: CouponKind
    value: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]  # minor units or basis pts
    min_spend: Amount = 0
    categories: list[Id] = Field(default_factory=list, max_length=100)
    expires_on: Annotated[date, BeforeValidator(iso_date_text)] | None = None  # ISO text
    campaign_id: Id | None = None

    @model_validator(mode="after")
    def _percent(self) -> CouponIssueRequest:
        if self.kind == "percent_off" and self.value > MAX_PERCENT_OFF:
            raise ValueError(f"percent_off value is in basis points: at most {MAX_PERCENT_OFF}")
        return self


class IssuedCoupon(WrittenEvent):
    coupon_code: str
    qr: str  # what a receipt or the member app shows; the till's scanner reads it
    member_id: str
    campaign_id: str | None
    kind: str
    value: int
    min_spend: int
    categories: list[str]
    expires_on: date | None


class StoreIn(BaseModel):
    """A store as HQ describes it (PUT sets all four)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    region: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    timezone: str | None = Field(None, max_length=64, examples=["Asia/Shanghai"])
    legal_entity: str | None = Field(None, max_length=200)


class StoreView(BaseModel):
    store_id: str
    name: str
    region: str | None
    timezone: str  # as it applies: the store's own or the chain's
    own_timezone: bool
    legal_entity: str  # as it applies: the store's own or the chain's
    seen: bool  # the hub has heard from it


class RegionView(BaseModel):
    region: str
    stores: list[str]


class UserIn(_Request):
    """A new HQ user: a role (``GET /v1/roles``) and, as the role's scope asks, its regions,
    stores or shopping guide id."""

    username: Annotated[str, StringConstraints(min_length=3, max_length=64)]
    role: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    regions: list[Annotated[str, StringConstraints(max_length=32)]] = Field(
        default_factory=list, max_length=100)
    stores: list[Annotated[str, StringConstraints(max_length=32)]] = Field(
        default_factory=list, max_length=1000)
    guide_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class UserChange(_Request):
    disabled: bool | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class UserView(BaseModel):
    user_id: str
    username: str
    display_name: str
    role: str
    regions: list[str]
    stores: list[str]
    guide_id: str | None
    disabled: bool


class RoleView(BaseModel):
    role: str
    permissions: list[str]
    scope: str
    masked: bool


class TokenIn(_Request):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    expires_in_days: Annotated[int, Field(strict=True, ge=1, le=3650)] | None = None


class IssuedToken(BaseModel):
    """The token is shown this once: only its SHA-256 is kept."""

    token_id: str
    username: str
    name: str
    token: str


class TokenView(BaseModel):
    token_id: str
    username: str
    name: str
    created_ms: int
    expires_ms: int | None
    revoked_ms: int | None


class AuditEntry(BaseModel):
    entry_id: str
    at_ms: int
    user_id: str | None
    username: str
    action: str
    subject: str | None
    fields: list[str]
    reason: str
    remote: str | None
    outcome: str


class RevealRequest(_Request):
    """Show personal fields whole, with why: written to the audit log."""

    fields: list[Literal["phone", "name", "birthday", "cards"]] = Field(min_length=1,
                                                                        max_length=4)
    reason: NonEmptyText


class MemberExport(BaseModel):
    """Everything the hub holds about a member, whole (their data request)."""

    member: dict[str, Any]
    events: list[dict[str, Any]]
    audit: list[AuditEntry]


class ErasureRequest(_Request):
    actor: NonEmptyText
    reason: NonEmptyText  # the member's request: its reference


class Erased(WrittenEvent):
    member_id: str
    actor: str
    reason: str


class SignIn(_Request):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class SignedIn(BaseModel):
    """The session cookie is set; send ``csrf_token`` back in ``X-CSRF-Token`` with every
    change."""

    user: UserView
    csrf_token: str
    expires_ms: int


class MemberFound(BaseModel):
    """A member a search found (masked below HQ admin)."""

    member_id: str
    member_code: str
    phone: str | None
    name: str
    birthday: str | None
    tier: str
    home_store: str


class CategoryDay(BaseModel):
    category: str
    sales: int
    items: int
    gross: int
    discount: int
    amount: int
    member_amount: int
    refunds: int
    refund_items: int
    refund_amount: int


class StoreDay(BaseModel):
    """A store's calendar day by category (money in minor units), from the daily rollups."""

    store_id: str
    day: str
    categories: list[CategoryDay]
    totals: dict[str, int]


class ExportRequest(_Request):
    """A bulk export of the members in the caller's scope (``store_id``: one store's)."""

    store_id: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    reason: NonEmptyText


class ExportDecision(_Request):
    reason: NonEmptyText


class BulkExport(BaseModel):
    """An export request: ``pending`` a second person's approval, ``approved``, ``rejected``
    or ``downloaded`` (once)."""

    export_id: str
    requested_by: str
    store_id: str | None
    rows: int
    reason: str
    state: Literal["pending", "approved", "rejected", "downloaded"]
    created_ms: int
    decided_by: str | None
    decided_ms: int | None
    decision_reason: str | None
    masked: bool


class RfmRunRequest(_Request):
    """An RFM run on demand; ``as_of`` defaults to yesterday on the chain's calendar."""

    as_of: Annotated[date, BeforeValidator(iso_date_text)] | None = None
    window_days: int = Field(365, ge=1, le=3660)
    f_measure: Literal["purchases", "items"] = "purchases"
    thresholds: dict[Literal["r", "f", "m"], list[int]] = Field(default_factory=dict)
    high_from: int = Field(3, ge=2, le=5)

    @model_validator(mode="after")
    def _thresholds(self) -> RfmRunRequest:
        from hub.members.rfm import check_thresholds

        check_thresholds(self.thresholds)
        return self


class RfmRun(BaseModel):
    """A kept run: its parameters, per dimension the values each score spans (``cuts``) and
    group sizes (score 0: no purchase in the window), the named groups, and the movement from
    the previous run (``movement[dim][before][after]``)."""

    run_id: str
    as_of: str
    params: dict[str, Any]
    created_ms: int
    members: int
    previous_run: str | None
    cuts: dict[str, list[dict[str, int]]]
    sizes: dict[str, dict[str, int]]
    groups: dict[str, dict[str, Any]]
    movement: dict[str, list[list[int]]]


class RfmRunListed(BaseModel):
    run_id: str
    as_of: str
    kind: str
    created_ms: int
    members: int


class RfmMember(BaseModel):
    member_id: str
    recency_days: int | None
    frequency: int | None
    monetary: int | None
    r: int
    f: int
    m: int
    group: str
    group_name: str
    # Where the member was in the run before this one (0 and no group: not in it).
    was_r: int
    was_f: int
    was_m: int
    was_group: str | None


class RfmHistoryEntry(RfmMember):
    run_id: str
    as_of: str


class RfmGroupName(_Request):
    name: NonEmptyText


# --- segments, tags, lifecycle, the member 360 card -------------------------------------------

SegmentName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
TagName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class SegmentCreate(_Request):
    """A segment: ``definition`` is a condition tree (``hub.members.conditions``). ``tag``
    makes it a rule-based tag (the tag must be in the catalogue); ``for_tills`` sends its
    membership to the stores."""

    name: SegmentName
    definition: dict[str, Any]
    for_tills: bool = False
    tag: TagName | None = None


class SegmentUpdate(_Request):
    name: SegmentName | None = None
    definition: dict[str, Any] | None = None
    for_tills: bool | None = None


class SegmentPreviewRequest(_Request):
    definition: dict[str, Any]
    sample: int = Field(20, ge=0, le=100)


class SegmentPreview(BaseModel):
    """How many members the definition holds inside the caller's scope, the first few by id,
    and how long the count took."""

    count: int
    sample: list[str]
    took_ms: int


class Segment(BaseModel):
    segment_id: str
    name: str
    definition: dict[str, Any]
    version: int
    state: str
    for_tills: bool
    tag: str | None
    relative: bool
    members: int
    evaluated_ms: int | None
    due: bool
    created_by: str
    created_ms: int
    updated_ms: int


class SegmentVersion(BaseModel):
    version: int
    definition: dict[str, Any]
    created_by: str
    created_ms: int


class SegmentEvaluation(BaseModel):
    version: int
    at_ms: int
    kind: Literal["whole", "members"]
    members: int
    added: int
    removed: int
    took_ms: int


class SegmentMember(BaseModel):
    member_id: str
    member_code: str
    since_ms: int


class TagDefinition(_Request):
    group: Annotated[str, StringConstraints(max_length=100)] = ""
    description: Annotated[str, StringConstraints(max_length=500)] = ""


class CatalogTag(BaseModel):
    tag: str
    group: str
    description: str
    created_by: str
    created_ms: int
    rule_segment: str | None
    hq_members: int


class MemberTagsRequest(_Request):
    """HQ's tags set on (``add``) or taken off (``remove``) the members named."""

    members: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=10_000)
    add: list[TagName] = Field(default_factory=list, max_length=50)
    remove: list[TagName] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _something(self) -> MemberTagsRequest:
        if not self.add and not self.remove:
            raise ValueError("name tags to add or to remove")
        if set(self.add) & set(self.remove):
            raise ValueError("a tag cannot be added and removed at once")
        return self


class MemberTag(BaseModel):
    tag: str
    source: Literal["store", "hq", "rule"]
    set_by: str | None
    set_ms: int | None


class LifecycleChange(BaseModel):
    day: str
    from_stage: str | None
    to_stage: str


class MemberLifecycle(BaseModel):
    stage: str | None
    since: str | None
    changes: list[LifecycleChange]


class Member360(BaseModel):
    """The member 360 card (``hub.reports.member360``)."""

    member: MemberView
    tier: dict[str, Any]
    points: dict[str, Any]
    stored_value: dict[str, int]
    coupons: list[dict[str, Any]]
    tags: list[MemberTag]
    segments: list[dict[str, Any]]
    rfm: list[RfmHistoryEntry]
    lifecycle: MemberLifecycle
    visits: dict[str, Any]
    favourite_categories: list[dict[str, Any]]
    favourite_products: list[dict[str, Any]]
    recent: list[dict[str, Any]]
    guide_id: str | None
    journeys: list[dict[str, Any]]  # entered (held out too), newest first
    messages: list[dict[str, Any]]  # sent, waiting or suppressed, newest first
