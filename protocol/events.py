"""Every event an edge gateway records, as the hub will read it.

An event is an envelope (who, where, in what order) around a body (what happened). Bodies are a
union discriminated by ``type``; each carries a schema version ``v`` so a hub can refuse what it
does not understand instead of guessing. Points and stored value travel as signed deltas of
append-only ledgers: ``ledger_deltas`` says, for any body, what it adds to which ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from protocol.money import MAX_AMOUNT

MAX_POINTS = 1_000_000_000

Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
SignedAmount = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
Points = Annotated[int, Field(strict=True, ge=0, le=MAX_POINTS)]
PositivePoints = Annotated[int, Field(strict=True, gt=0, le=MAX_POINTS)]
SignedPoints = Annotated[int, Field(strict=True, ge=-MAX_POINTS, le=MAX_POINTS)]
Quantity = Annotated[int, Field(strict=True, gt=0, le=100_000)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(max_length=200)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
StoreId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]

CouponKind = Literal["amount_off", "percent_off"]
TenderKind = Literal["points", "stored_value", "coupon", "cash", "bank_card", "external"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Who sold it (version 2 of sales, refunds and member profiles): the cashier at the till and the
# shopping guide (导购) a sale or a member belongs to, as the POS names its staff. A store sends
# ``v`` 2 when a body carries one of them, so a hub older than this refuses it by version
# (a clear error) rather than by an unknown field; a body without them stays ``v`` 1 and a hub
# of this release takes both.
StaffId = Id
# An e-mail address as a member gives it (its shape only: one @, no space, a dot after the @;
# a pattern ``protocol.fastcodec`` compiles as pydantic reads it).
Email = Annotated[str, StringConstraints(max_length=254,
                                         pattern=r"^[^@ ]+@[^@ ]+[.][^@ ]+$")]
EMAIL_VERSION = 3  # member.profile_changed carrying an e-mail address
GENDER_VERSION = 4  # member.profile_changed carrying a gender
GENDER_REGISTERED = 3  # member.registered carrying a gender
# A member's gender as HQ keeps it (segments select on it); unknown: null.
Gender = Literal["female", "male", "other"]
WHO_SOLD_IT = 2
# A refund that took back a promotion the kept items no longer reach (``discounts_reversed``)
# is version 3 of ``refund.completed``: a hub older than this refuses it by version.
REPRICED_REFUND = 3


# --- members ---------------------------------------------------------------------------------


class MemberRegistered(_Body):
    type: Literal["member.registered"] = "member.registered"
    v: Literal[1, 2, 3] = 1
    member_id: Id
    member_code: Id
    phone: Text | None = None
    name: Text = ""
    birthday: date | None = None
    card_uid: Id | None = None
    tier: Id = "standard"
    tags: list[Text] = Field(default_factory=list, max_length=50)
    guide_id: StaffId | None = None  # v2: the shopping guide who looks after the member
    gender: Gender | None = None  # v3 (``GENDER_REGISTERED``): as the member gives it


class MemberProfileChanged(_Body):
    """Only the fields named in ``changes`` changed; each merges last-writer-wins by the HLC.
    ``terminal_id`` and ``cashier_id`` (v2) say at which till and by whom; HQ's changes come
    from its own stream with ``actor``."""

    type: Literal["member.profile_changed"] = "member.profile_changed"
    v: Literal[1, 2, 3, 4] = 1
    member_id: Id
    name: Text | None = None
    birthday: date | None = None
    phone: Text | None = None
    tags: list[Text] | None = Field(default=None, max_length=50)
    guide_id: StaffId | None = None  # v2; named in ``changed`` with null: no guide any more
    email: Email | None = None  # v3; named in ``changed`` with null: no address any more
    gender: Gender | None = None  # v4; named in ``changed`` with null: not known any more
    changed: list[Literal["name", "birthday", "phone", "tags", "guide_id", "email", "gender"]]
    terminal_id: Id | None = None  # v2
    cashier_id: StaffId | None = None  # v2
    actor: Text | None = None  # v2: who at HQ


class CardBound(_Body):
    type: Literal["member.card_bound"] = "member.card_bound"
    v: Literal[1] = 1
    member_id: Id
    card_uid: Id


# A card's life after binding. ``lost`` (挂失) blocks it at every store until the member lifts
# the loss (``active``); ``replaced`` blocks it for good, a new card taking its place
# (``replaced_by``, bound by its own ``member.card_bound``); ``unbound`` frees it: it no longer
# identifies anyone and may be bound again. Last writer wins by (HLC, stream), card by card.
CardState = Literal["active", "lost", "replaced", "unbound"]


class CardStateChanged(_Body):
    type: Literal["member.card_state"] = "member.card_state"
    v: Literal[1] = 1
    member_id: Id
    card_uid: Id
    state: CardState
    reason: Text = ""
    replaced_by: Id | None = None
    terminal_id: Id | None = None
    cashier_id: StaffId | None = None
    actor: Text | None = None  # who at HQ


# An argon2id hash in its PHC string form ($argon2id$v=19$m=...,t=...,p=...$salt$hash): the
# PIN itself never leaves the till.
PinHash = Annotated[str, StringConstraints(pattern=r"^\$argon2id\$[A-Za-z0-9$=,+/]{10,190}$")]


class PaymentPinSet(_Body):
    """A member set (or staff reset, after checking who they are) the payment PIN that guards
    their stored value and points. It lifts a lock-out. ``pin_hash`` None: PIN removed."""

    type: Literal["member.pin_set"] = "member.pin_set"
    v: Literal[1] = 1
    member_id: Id
    pin_hash: PinHash | None
    terminal_id: Id | None = None
    cashier_id: StaffId | None = None
    actor: Text | None = None  # who at HQ


class PaymentPinLocked(_Body):
    """Too many wrong PINs in a row at one till's store: balances stay locked at every store
    until a new PIN is set."""

    type: Literal["member.pin_locked"] = "member.pin_locked"
    v: Literal[1] = 1
    member_id: Id
    failures: Annotated[int, Field(strict=True, ge=1, le=1000)]
    terminal_id: Id | None = None


ConsentChannel = Literal["sms", "email", "wechat", "push"]
ConsentPurpose = Literal["marketing"]


class ConsentChanged(_Body):
    """A member gave or withdrew consent to be contacted on ``channel`` for ``purpose``, having
    been shown the consent text ``text_version``; where (till, cashier) or who at HQ. Receipts,
    expiry notices and other transactional messages need none. Last writer wins by HLC, per
    (member, channel, purpose)."""

    type: Literal["member.consent"] = "member.consent"
    v: Literal[1] = 1
    member_id: Id
    channel: ConsentChannel
    purpose: ConsentPurpose
    granted: Annotated[bool, Field(strict=True)]
    text_version: Id
    terminal_id: Id | None = None
    cashier_id: StaffId | None = None
    actor: Text | None = None


class TillMessageShown(_Body):
    """A message HQ left for the member at the tills (a journey's in-store message,
    ``protocol.sync.TillMessage``) was printed on their receipt at ``terminal_id``: delivered,
    and no other till prints it again once the directory says so."""

    type: Literal["member.message_shown"] = "member.message_shown"
    v: Literal[1] = 1
    member_id: Id
    key: NonEmptyText  # the message's key in the hub's outbox
    terminal_id: Id
    sale_id: Id | None = None


class MemberErased(_Body):
    """HQ erased the member's personal data on their request (PIPL): name, phone, birthday,
    tags and cards are gone from the hub, its log and every store; the account, its balances
    and ledgers stay as statutory records."""

    type: Literal["member.erased"] = "member.erased"
    v: Literal[1] = 1
    member_id: Id
    actor: Text
    reason: Text = ""


class BirthdayGiftGiven(_Body):
    """The member had this year's birthday gift: no store gives it again this year."""

    type: Literal["member.birthday_gift"] = "member.birthday_gift"
    v: Literal[1] = 1
    member_id: Id
    year: Annotated[int, Field(strict=True, ge=1900, le=9999)]
    sale_id: Id | None = None


# --- sales -----------------------------------------------------------------------------------


class SaleLine(_Body):
    line_no: Annotated[int, Field(strict=True, ge=1, le=10_000)]
    sku: Id
    name: Text
    category: Id
    qty: Quantity
    unit_price: Amount
    gross: Amount
    discount: Amount
    net: Amount
    points: Points  # points this line earned; a refund of the line reverses them in proportion


class SaleDiscount(_Body):
    kind: Id
    label: Text
    amount: Amount
    campaign_id: Id | None = None
    coupon_code: Id | None = None


class Tender(_Body):
    kind: TenderKind
    amount: Amount  # the cash value this tender covers
    points: Points = 0  # for kind == "points": how many points paid ``amount``
    sv_principal: Amount = 0  # for kind == "stored_value": how ``amount`` splits
    sv_bonus: Amount = 0
    coupon_code: Id | None = None
    reference: Text | None = None  # e.g. the bank card terminal's approval code


class SaleFinalized(_Body):
    type: Literal["sale.finalized"] = "sale.finalized"
    v: Literal[1, 2] = 1
    sale_id: Id
    terminal_id: Id
    member_id: Id | None = None
    cashier_id: StaffId | None = None  # v2: who rang it up
    guide_id: StaffId | None = None  # v2: the shopping guide the sale counts for
    currency: Currency
    lines: list[SaleLine] = Field(min_length=1, max_length=500)
    discounts: list[SaleDiscount] = Field(default_factory=list, max_length=100)
    tenders: list[Tender] = Field(min_length=1, max_length=20)
    subtotal: Amount
    discount_total: Amount
    total: Amount
    points_earned: Points


class RefundLine(_Body):
    line_no: Annotated[int, Field(strict=True, ge=1, le=10_000)]
    qty: Quantity
    amount: Amount
    points_reversed: Points


class RefundCompleted(_Body):
    type: Literal["refund.completed"] = "refund.completed"
    v: Literal[1, 2, 3] = 1
    refund_id: Id
    sale_id: Id
    terminal_id: Id
    member_id: Id | None = None
    cashier_id: StaffId | None = None  # v2: who gave the money back
    currency: Currency
    lines: list[RefundLine] = Field(min_length=1, max_length=500)
    amount: Amount
    tenders: list[Tender] = Field(min_length=1, max_length=20)  # what went back where
    points_reversed: Points  # earned points taken back (from the balance)
    points_shortfall: Points  # what could not be taken back: recorded as the member's debt
    points_returned: Points  # redeemed points given back to their lots
    coupon_reopened: Id | None = None
    # v3: promotions the kept items no longer reach, taken back from this refund (a 满减
    # threshold or a coupon's minimum spend missed once these lines are returned); below zero,
    # what an earlier refund took back given back. ``amount`` = the lines' amounts less it.
    discounts_reversed: SignedAmount = 0


# --- points ledger ---------------------------------------------------------------------------


class LotDraw(_Body):
    lot_id: Id
    points: PositivePoints


class PointsEarned(_Body):
    type: Literal["points.earned"] = "points.earned"
    v: Literal[1] = 1
    member_id: Id
    lot_id: Id
    points: PositivePoints
    expires_on: date | None = None
    reason: Literal["sale", "birthday", "campaign", "manual"] = "sale"
    sale_id: Id | None = None


class PointsRedeemed(_Body):
    type: Literal["points.redeemed"] = "points.redeemed"
    v: Literal[1] = 1
    member_id: Id
    points: PositivePoints
    sale_id: Id
    lots: list[LotDraw] = Field(min_length=1)


class PointsExpired(_Body):
    type: Literal["points.expired"] = "points.expired"
    v: Literal[1] = 1
    member_id: Id
    lot_id: Id
    points: PositivePoints


class PointsAdjusted(_Body):
    """A signed change that is neither earning, redeeming nor expiry.

    ``refund_reversal`` takes earned points back (``shortfall`` is what the balance could not
    cover); ``refund_return`` gives redeemed points back to the lots they came from;
    ``debt_repayment`` takes later earnings against an earlier shortfall. ``manual`` is a
    change HQ made (``note`` says why, ``actor`` who made it); stores never send ``actor``.
    """

    type: Literal["points.adjusted"] = "points.adjusted"
    v: Literal[1] = 1
    member_id: Id
    delta: SignedPoints
    reason: Literal["refund_reversal", "refund_return", "debt_repayment", "manual", "merge"]
    lots: list[LotDraw] = Field(default_factory=list)
    shortfall: Points = 0
    sale_id: Id | None = None
    refund_id: Id | None = None
    note: Text = ""
    actor: NonEmptyText | None = None


# --- stored value ledger ---------------------------------------------------------------------


class StoredValueToppedUp(_Body):
    type: Literal["sv.topped_up"] = "sv.topped_up"
    v: Literal[1] = 1
    member_id: Id
    topup_id: Id
    currency: Currency
    principal: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
    bonus: Amount
    campaign_id: Id | None = None
    paid_by: TenderKind = "cash"


class StoredValueSpent(_Body):
    type: Literal["sv.spent"] = "sv.spent"
    v: Literal[1] = 1
    member_id: Id
    sale_id: Id
    currency: Currency
    principal: Amount
    bonus: Amount


class StoredValueRefunded(_Body):
    type: Literal["sv.refunded"] = "sv.refunded"
    v: Literal[1] = 1
    member_id: Id
    sale_id: Id
    refund_id: Id
    currency: Currency
    principal: Amount
    bonus: Amount


# --- coupons ---------------------------------------------------------------------------------


class CouponIssued(_Body):
    type: Literal["coupon.issued"] = "coupon.issued"
    v: Literal[1] = 1
    coupon_code: Id
    member_id: Id | None = None
    campaign_id: Id | None = None
    kind: CouponKind
    value: Amount  # minor units for amount_off, basis points for percent_off
    min_spend: Amount = 0
    categories: list[Id] = Field(default_factory=list)
    expires_on: date | None = None


class CouponRedeemed(_Body):
    type: Literal["coupon.redeemed"] = "coupon.redeemed"
    v: Literal[1] = 1
    coupon_code: Id
    sale_id: Id
    member_id: Id | None = None
    amount: Amount


class CouponVoided(_Body):
    type: Literal["coupon.voided"] = "coupon.voided"
    v: Literal[1] = 1
    coupon_code: Id
    reason: Text


class CouponReopened(_Body):
    type: Literal["coupon.reopened"] = "coupon.reopened"
    v: Literal[1] = 1
    coupon_code: Id
    sale_id: Id
    refund_id: Id


EventBody = Annotated[
    MemberRegistered
    | MemberProfileChanged
    | CardBound
    | CardStateChanged
    | PaymentPinSet
    | PaymentPinLocked
    | BirthdayGiftGiven
    | TillMessageShown
    | MemberErased
    | ConsentChanged
    | SaleFinalized
    | RefundCompleted
    | PointsEarned
    | PointsRedeemed
    | PointsExpired
    | PointsAdjusted
    | StoredValueToppedUp
    | StoredValueSpent
    | StoredValueRefunded
    | CouponIssued
    | CouponRedeemed
    | CouponVoided
    | CouponReopened,
    Field(discriminator="type"),
]

BODY_TYPES: dict[str, type[_Body]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        MemberRegistered, MemberProfileChanged, CardBound, CardStateChanged, PaymentPinSet,
        PaymentPinLocked, BirthdayGiftGiven, TillMessageShown, MemberErased, ConsentChanged,
        SaleFinalized,
        RefundCompleted,
        PointsEarned, PointsRedeemed, PointsExpired, PointsAdjusted, StoredValueToppedUp,
        StoredValueSpent, StoredValueRefunded, CouponIssued, CouponRedeemed, CouponVoided,
        CouponReopened,
    )
}
# The schema versions this build understands, per event type.
SUPPORTED_VERSIONS: dict[str, frozenset[int]] = {
    t: frozenset(get_args(cls.model_fields["v"].annotation) or {1})
    for t, cls in BODY_TYPES.items()}


def body_version(*carried: object) -> int:
    """The version a body takes: 2 when it carries who sold it, else 1 (see ``WHO_SOLD_IT``)."""
    return WHO_SOLD_IT if any(v is not None for v in carried) else 1


def registered_version(guide_id: str | None, gender: str | None) -> int:
    """The version a ``member.registered`` takes: the lowest that carries what it holds."""
    return GENDER_REGISTERED if gender is not None else body_version(guide_id)


def profile_version(changed: Iterable[str]) -> int:
    """The version an HQ ``member.profile_changed`` takes for the fields it ``changed`` (HQ's
    always names its actor: ``WHO_SOLD_IT`` at least)."""
    fields = set(changed)
    return (GENDER_VERSION if "gender" in fields else EMAIL_VERSION if "email" in fields
            else WHO_SOLD_IT)


class Event(BaseModel):
    """One outbox row on the wire: ``(store_id, epoch, seq)`` is the hub's idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    store_id: StoreId
    epoch: Annotated[int, Field(strict=True, ge=1)]
    seq: Annotated[int, Field(strict=True, ge=1)]
    hlc: Annotated[int, Field(strict=True, ge=0)]
    body: EventBody


class EventBatch(BaseModel):
    """Consecutive outbox events of one store and epoch, as published on the uplink."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    store_id: StoreId
    epoch: Annotated[int, Field(strict=True, ge=1)]
    events: list[Event] = Field(min_length=1, max_length=5000)


def points_delta(body: _Body) -> int:
    """What ``body`` adds to its member's points balance (0 when it is not a points event)."""
    if isinstance(body, PointsEarned):
        return body.points
    if isinstance(body, PointsRedeemed | PointsExpired):
        return -body.points
    if isinstance(body, PointsAdjusted):
        return body.delta
    return 0


def stored_value_delta(body: _Body) -> tuple[int, int]:
    """What ``body`` adds to (principal, bonus) of its member's stored value."""
    if isinstance(body, StoredValueToppedUp):
        return body.principal, body.bonus
    if isinstance(body, StoredValueSpent):
        return -body.principal, -body.bonus
    if isinstance(body, StoredValueRefunded):
        return body.principal, body.bonus
    return 0, 0
