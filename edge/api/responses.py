"""What the POS API answers, as models: OpenAPI documents every answer from these.

Answers that describe a member, a sale, a receipt or a refund may grow new fields in later
releases (``extra="allow"``): a POS reads the fields it knows and ignores the others.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    """An answer that may carry fields a later release adds."""

    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    ok: bool
    store_id: str


class Outbox(BaseModel):
    depth: int
    oldest_seq: int | None
    newest_seq: int | None


class HubLinkState(_Open):
    broker: str | None
    connected: bool
    since: str | None
    acked_seq: int
    last_ack_at: str | None


class StoreStatus(_Open):
    store_id: str
    epoch: int
    members: int
    outbox: Outbox
    last_seq: int
    campaigns: list[str]
    campaign_versions: dict[str, int]
    hub: HubLinkState
    live: dict[str, int] | None  # open sales and event subscribers of the serving process


class Device(BaseModel):
    device_id: str
    kind: str
    health: str
    detail: str


class Devices(BaseModel):
    devices: list[Device]


class Done(BaseModel):
    ok: bool


class PrintJob(BaseModel):
    job_id: str


class Upserted(BaseModel):
    upserted: int


class StoredValueBalance(_Open):
    principal: int
    bonus: int
    total: int
    currency: str


class ExpiringLot(BaseModel):
    lot_id: str
    points: int
    expires_on: str


class MemberCoupon(_Open):
    coupon_code: str
    kind: str
    value: int
    min_spend: int
    expires_on: str | None
    categories: list[str]


class Member(_Open):
    """A member as this store shows them: its own ledgers plus the other stores' shares."""

    member_id: str
    member_code: str
    phone: str | None
    name: str
    birthday: str | None
    tier: str
    tags: list[str]
    cards: list[str]
    points: int
    points_here: int
    points_debt: int
    stored_value: StoredValueBalance
    points_expiring: list[ExpiringLot]
    coupons: list[MemberCoupon]
    home_store: str
    guide_id: str | None = None
    visits: int
    spend_total: int
    card_states: list[CardStateView]
    payment_pin: PaymentPinView
    birthday_gift_year: int | None
    consents: list[ConsentView]
    # HQ's view, from the member directory: what the cashier sees on identification and
    # promotions may target (tags HQ or a rule set, segments marked for the tills, the latest
    # RFM group, the lifecycle stage).
    hq_tags: list[str] = []
    segments: list[TillSegmentView] = []
    rfm_group: str | None = None
    stage: str | None = None
    messages: list[dict[str, Any]] = []  # HQ's messages to show and print: key, text, coupon


class TillSegmentView(BaseModel):
    segment_id: str
    name: str


class ConsentView(BaseModel):
    channel: str
    purpose: str
    granted: bool
    text_version: str
    at: str


class CardStateView(BaseModel):
    card_uid: str
    state: Literal["active", "lost", "replaced", "unbound"]
    reason: str


class PaymentPinView(BaseModel):
    set: bool
    locked: bool


class PaymentPinSetOut(BaseModel):
    member_id: str
    payment_pin: PaymentPinView


class MemberChange(BaseModel):
    change_id: int
    at: str
    terminal_id: str | None
    cashier_id: str | None
    what: Literal["profile", "card", "pin", "consent"]
    detail: dict[str, Any]


class MemberChanges(BaseModel):
    """Changes made to a member at this store's tills, newest first."""

    member_id: str
    changes: list[MemberChange]
    next_before: int | None


class TopUpBalance(BaseModel):
    principal: int
    bonus: int
    total: int


class TopUp(_Open):
    topup_id: str
    member_id: str
    principal: int
    bonus: int
    campaign_id: str | None
    currency: str
    balance: TopUpBalance


class Discount(_Open):
    kind: str
    label: str
    amount: int
    campaign_id: str | None = None
    coupon_code: str | None = None


class QuoteLine(_Open):
    line_no: int
    sku: str
    name: str
    qty: int
    unit_price: int
    gross: int
    discount: int
    net: int
    points: int


class CouponCheck(BaseModel):
    coupon_code: str
    valid: bool
    reason: str | None


class SaleView(_Open):
    """An open (or just voided) sale as priced now: lines, promotions, what the member can pay
    with (``points`` and ``stored_value`` are null without a member)."""

    sale_id: str
    currency: str
    member_id: str | None
    lines: list[QuoteLine]
    discounts: list[Discount]
    subtotal: int
    discount_total: int
    total: int
    points_to_earn: int
    coupons: list[CouponCheck]
    birthday_gifts: list[dict[str, Any]]
    points: dict[str, Any] | None
    stored_value: dict[str, Any] | None
    state: str
    terminal_id: str


class Voided(_Open):
    sale_id: str
    state: str


class ScanResult(_Open):
    """What a scanned code did: ``action`` says which (a product added, a member identified,
    a coupon applied), with the sale as it now stands."""

    action: str
    sale: SaleView | None = None


class ReceiptLine(_Open):
    line_no: int
    sku: str
    name: str
    category: str
    qty: int
    unit_price: int
    gross: int
    discount: int
    net: int
    points: int
    refunded_qty: int
    refunded_amount: int


class ReceiptTender(_Open):
    tender_no: int
    kind: str
    amount: int
    points: int
    sv_principal: int
    sv_bonus: int
    reference: str | None
    refunded_amount: int


class ReceiptMember(_Open):
    member_id: str
    member_code: str
    qr: str
    tier: str
    points_balance: int
    points_debt: int
    stored_value: int


class Receipt(_Open):
    """A finalized sale; the answer to finalize adds ``change`` and ``coupons_issued``."""

    sale_id: str
    store_id: str
    terminal_id: str
    cashier_id: str | None = None
    guide_id: str | None = None
    finalized_at: str
    currency: str
    lines: list[ReceiptLine]
    discounts: list[Discount]
    tenders: list[ReceiptTender]
    subtotal: int
    discount_total: int
    total: int
    refunded_total: int
    points_earned: int
    member: ReceiptMember | None
    change: int | None = None
    coupons_issued: list[dict[str, Any]] | None = None
    messages: list[dict[str, Any]] = []  # HQ's messages printed on it: text, coupon_code


class RefundLine(_Open):
    line_no: int
    qty: int
    amount: int
    points_reversed: int


class RefundTender(_Open):
    kind: str
    amount: int
    points: int
    sv_principal: int
    sv_bonus: int
    coupon_code: str | None
    reference: str | None


class Refund(_Open):
    refund_id: str
    sale_id: str
    terminal_id: str
    cashier_id: str | None = None
    member_id: str | None
    currency: str
    lines: list[RefundLine]
    amount: int
    tenders: list[RefundTender]
    points_reversed: int
    points_shortfall: int
    points_returned: int
    coupon_reopened: str | None
