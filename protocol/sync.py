"""Everything but events that travels between a store and the hub: acks, the member directory,
campaign manifests and store status.

Each message has a version ``v`` and is decoded with ``codec.decode`` like the event batches, so
the hub and the edge refuse the same bad input in the same way.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.campaigns import CampaignBundle, LifecycleStage, RfmGroup
from protocol.events import (
    MAX_POINTS,
    Amount,
    CardState,
    CouponKind,
    Event,
    Id,
    PinHash,
    SignedAmount,
    SignedPoints,
    StoreId,
    Text,
)
from protocol.money import MAX_AMOUNT

Seq = Annotated[int, Field(strict=True, ge=0)]
Epoch = Annotated[int, Field(strict=True, ge=1)]
Hlc = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]
# A running total of grants (points or minor units) over a member's life at one store: it only
# grows, so it may pass the bound of any single amount; 2**53 - 1 keeps it exact everywhere.
MAX_CUMULATIVE = 2**53 - 1
Cumulative = Annotated[int, Field(strict=True, ge=0, le=MAX_CUMULATIVE)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Told(_Message):
    """A downlink message that informs a store (acks, the member directory): fields a store
    does not know are ignored, so a later hub may add some and be upgraded before its stores.
    A change a store must not misread takes a new ``v`` instead. Campaign bundles and
    online replies stay strict: a rule or a grant condition a store cannot read must not be
    applied without it, and everything a store sends the hub stays strict (bad input)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Ack(_Told):
    """The hub holds every event of ``store_id``/``epoch`` up to ``seq`` (retained, cumulative).

    ``resend`` is set when the hub saw a gap: the store should resend from ``seq + 1``.
    """

    v: Literal[1] = 1
    store_id: StoreId
    epoch: Epoch
    seq: Seq
    resend: bool = False


class StoreShare(_Told):
    """One store's contribution to a member's balances: the sum of its ledger deltas."""

    store_id: StoreId
    points: SignedPoints
    sv_principal: SignedAmount
    sv_bonus: SignedAmount


class StoreGrant(_Told):
    """What the hub has granted one store to let this member spend offline, in total so far.

    Both figures are cumulative (standing allowances and online authorisations together) and
    only ever grow, so a store can take the larger of any two it has seen, whatever order they
    arrived in. What the store may still spend is this minus what it has spent itself.
    """

    store_id: StoreId
    points_granted: Cumulative
    sv_granted: Cumulative


class MemberCard(_Told):
    """One of a member's cards as the hub merged it (``protocol.events.CardState``)."""

    card_uid: Id
    state: CardState
    reason: Text = ""
    hlc: Hlc  # of the change that stands


class MemberCoupon(_Told):
    """A coupon the hub issued to the member (from its own streams: HQ, ONLINE) that no store
    has redeemed yet, as far as the hub knows: any store may take it offline. The hub
    arbitrates a coupon redeemed twice like every coupon (the later redemption is flagged)."""

    coupon_code: Id
    campaign_id: Id | None = None
    kind: CouponKind
    value: Amount  # minor units for amount_off, basis points for percent_off
    min_spend: Amount = 0
    categories: list[Id] = Field(default_factory=list, max_length=100)
    expires_on: date | None = None


class TillSegment(_Told):
    """A segment HQ marked for the tills that the member is in: promotions name its id, the POS
    shows its name."""

    segment_id: Id
    name: Text


class TillMessage(_Told):
    """A message HQ leaves for the member at every till (a journey's in-store message): the
    pole display shows its start when the member is identified, the receipt prints it whole
    with its coupon's QR; then the store reports it shown (``member.message_shown``)."""

    key: Annotated[str, Field(min_length=1, max_length=200)]
    text: Annotated[str, Field(min_length=1, max_length=500)]
    coupon_code: Id | None = None


class MemberEntry(_Told):
    """A member as the hub knows it after merging every store.

    ``shares`` lets a store show hub balance + its own local ledger without counting its own
    acknowledged events twice: it adds the other stores' shares to what its own ledger says.
    ``merged_into`` is set on an alias: the member was merged into another (same phone
    registered in two stores); its cards and code now identify that member. ``grants`` are the
    offline allowances the hub has granted stores for this member (each store uses its own).
    ``coupons`` are the member's open hub-issued coupons (``MemberCoupon``).
    """

    member_id: Id
    member_code: Id
    phone: Text | None = None
    name: Text = ""
    birthday: date | None = None
    tier: Id = "standard"
    tags: list[Text] = Field(default_factory=list, max_length=50)
    cards: list[Id] = Field(default_factory=list, max_length=50)
    home_store: StoreId
    merged_into: Id | None = None
    aliases: list[Id] = Field(default_factory=list, max_length=50)
    shares: list[StoreShare] = Field(default_factory=list, max_length=500)
    grants: list[StoreGrant] = Field(default_factory=list, max_length=500)
    coupons: list[MemberCoupon] = Field(default_factory=list, max_length=500)
    guide_id: Id | None = None  # the shopping guide who looks after the member
    # Every card the member has had, with its state and the stamp of its last change: a store
    # takes a card's state from here unless its own change is newer. ``cards`` (above) stays
    # the active ones, for stores older than this.
    card_states: list[MemberCard] = Field(default_factory=list, max_length=50)
    # The payment PIN's argon2id hash (None: no PIN), whether it is locked after wrong
    # attempts, and the stamp (HLC) of the last change to either.
    pin_hash: PinHash | None = None
    pin_locked: bool = False
    pin_hlc: Hlc = 0
    birthday_gift_year: Annotated[int, Field(strict=True, ge=0, le=9999)] = 0  # 0: never
    # Erased on the member's request: a store forgets their name, phone, birthday and cards.
    erased: bool = False
    # What HQ knows of the member that the till may use (issue 16): tags HQ set and rule
    # tags (a store's own stay in ``tags``), segments marked for the tills, the RFM group of
    # the latest run, the lifecycle stage.
    hq_tags: list[Text] = Field(default_factory=list, max_length=200)
    segments: list[TillSegment] = Field(default_factory=list, max_length=200)
    rfm_group: RfmGroup | None = None
    stage: LifecycleStage | None = None
    # Messages HQ left for the member at the tills, oldest first (issue 17).
    messages: list[TillMessage] = Field(default_factory=list, max_length=20)


class DirectoryRequest(_Message):
    """A store asks for member changes after its checkpoint (``0``: from the beginning)."""

    v: Literal[1] = 1
    store_id: StoreId
    after: Seq
    limit: Annotated[int, Field(strict=True, ge=1, le=5000)] = 1000
    request_id: Id


class DirectoryPage(_Told):
    """Changes ``(after, upto]`` of the hub's member change log, in change order.

    ``snapshot`` pages carry every live member instead of changes: a new store, or one whose
    checkpoint is older than what the hub keeps, is rebuilt from them. ``more`` says another
    page follows; the store asks again with ``after = upto``.
    """

    v: Literal[1] = 1
    request_id: Id
    after: Seq
    upto: Seq
    snapshot: bool = False
    more: bool = False
    members: list[MemberEntry] = Field(default_factory=list, max_length=5000)


class RecoveryRequest(_Message):
    """A box restored from a backup asks for what its lost predecessor did after the backup:
    ``store_id``'s events of ``epoch`` after ``after_seq``, which the hub holds and the backup
    does not (``edge.recovery``)."""

    v: Literal[1] = 1
    request_id: Id
    store_id: StoreId
    epoch: Epoch
    after_seq: Seq
    limit: Annotated[int, Field(strict=True, ge=1, le=1000)] = 200


class RecoveryPage(_Told):
    """The answer: of the events ``(after_seq, upto]``, those that move a member's points,
    stored value or coupons, in order. ``more``: ask again with ``after_seq = upto``."""

    v: Literal[1] = 1
    request_id: Id
    epoch: Epoch
    upto: Seq
    more: bool = False
    events: list[Event] = Field(default_factory=list, max_length=1000)


class DirectoryNotice(_Told):
    """Pushed on the fleet topic when the change log moves, so stores ask without polling."""

    v: Literal[1] = 1
    head: Seq


class CampaignManifest(_Message):
    """A signed campaign bundle as published (retained) for a fleet, region or store.

    The signature inside ``bundle`` covers its canonical bytes; the edge checks it with the hub
    key it was provisioned with before it uses anything in the bundle.
    """

    v: Literal[1] = 1
    key_id: Id
    bundle: CampaignBundle


class DeviceHealth(_Message):
    device_id: Text
    kind: Id
    health: Id
    detail: Text = ""


# The ``refused`` reasons a store counts when it turns a campaign bundle down: no hub key
# configured, a signature that does not verify, a bundle on another scope's topic, a version
# older than the one it runs. The hub's fleet view sums them per store.
CAMPAIGN_REFUSALS = ("no_hub_key", "bad_signature", "wrong_scope", "stale_version")


class StoreStatus(_Message):
    """What a store reports about itself (retained on its status topic)."""

    v: Literal[1] = 1
    store_id: StoreId
    epoch: Epoch
    last_seq: Seq
    acked_seq: Seq
    outbox_depth: Seq
    directory_checkpoint: Seq
    campaign_versions: dict[str, int] = Field(default_factory=dict)
    software: Text = ""
    devices: list[DeviceHealth] = Field(default_factory=list, max_length=100)
    refused: dict[str, int] = Field(default_factory=dict)  # bad input seen, by reason
    at_ms: Seq


class RpcRequest(_Message):
    """A store asks the hub something online: who a card, code or phone belongs to (before the
    directory has caught up), or to authorise spending beyond its offline allowance."""

    v: Literal[1] = 1
    request_id: Id
    store_id: StoreId
    kind: Literal["lookup", "authorize"]
    by: Literal["card_uid", "member_code", "phone"] | None = None
    value: Text | None = None
    member_id: Id | None = None
    points: Annotated[int, Field(strict=True, ge=0, le=MAX_POINTS)] = 0
    stored_value: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] = 0


class RpcReply(_Message):
    v: Literal[1] = 1
    request_id: Id
    ok: bool
    error: Id | None = None  # a stable code: member_not_found, insufficient_balance, ...
    message: Text = ""
    member: MemberEntry | None = None
    granted_points: Annotated[int, Field(strict=True, ge=0)] = 0
    granted_stored_value: Annotated[int, Field(strict=True, ge=0)] = 0
    # After an authorisation: the store's cumulative grant for the member (as in
    # ``StoreGrant``), so the store can fold it in idempotently whatever the directory said.
    # 0 from a hub that predates standing allowances.
    points_granted_total: Cumulative = 0
    sv_granted_total: Cumulative = 0
