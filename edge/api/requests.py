"""Request bodies of the POS API, and the answers of its list routes. Strict: money is whole
minor units, never a float or string."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from protocol.errors import iso_date_text
from protocol.events import Gender
from protocol.money import MAX_AMOUNT

StrictAmount = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
Qty = Annotated[int, Field(strict=True)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
# A cashier's or shopping guide's id as the POS names its staff (the event's ``StaffId``).
StaffId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# A sku or category: an id in the sale's event (``protocol.events.Id``).
IdText = Annotated[str, StringConstraints(max_length=64)]  # empty: the cart says invalid_sku
# A date as ISO text ("1990-05-17"), never a number of seconds.
IsoDate = Annotated[date, BeforeValidator(iso_date_text)]
LineNo = Annotated[int, Field(strict=True, ge=1, le=10_000)]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentIn(_Req):
    """Consent to be contacted on ``channel`` for ``purpose``, with the version of the consent
    text the member was shown (or withdrawn: ``granted`` false)."""

    channel: Literal["sms", "email", "wechat", "push"]
    purpose: Literal["marketing"] = "marketing"
    granted: bool
    text_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class RegisterMember(_Req):
    phone: ShortText | None = None
    name: ShortText = ""
    birthday: IsoDate | None = None
    card_uid: ShortText | None = None
    tags: list[ShortText] = Field(default_factory=list, max_length=50)
    guide_id: StaffId | None = None  # the shopping guide who looks after the member
    gender: Gender | None = None  # kept by HQ (segments); the till does not keep it
    consents: list[ConsentIn] = Field(default_factory=list, max_length=8)
    cashier_id: StaffId | None = None  # who registered them: recorded with the consents


class ConsentsIn(_Req):
    consents: list[ConsentIn] = Field(min_length=1, max_length=8)
    cashier_id: StaffId | None = None


class ProfileChange(_Req):
    name: ShortText | None = None
    birthday: IsoDate | None = None
    phone: ShortText | None = None
    tags: list[ShortText] | None = Field(default=None, max_length=50)
    guide_id: StaffId | None = None  # null: no guide any more
    # Who made the change at the till: recorded with it (GET /v1/members/{id}/changes).
    cashier_id: StaffId | None = None


# A payment PIN as typed on the PIN pad: six digits.
Pin = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]


class CardStateIn(_Req):
    """``lost``: report the card lost (挂失), ``active``: the member found it (解挂),
    ``unbound``: free it from the member for good (解绑)."""

    state: Literal["lost", "active", "unbound"]
    reason: ShortText = ""
    cashier_id: StaffId | None = None


class CardReplacementIn(_Req):
    """Replace a lost or worn card (补卡): the old one is blocked for good."""

    new_card_uid: ShortText
    reason: ShortText = ""
    cashier_id: StaffId | None = None


class PaymentPinIn(_Req):
    """Set the member's payment PIN. Changing one needs ``current_pin``; ``reset`` (a member
    who forgot it, or is locked out) needs the ``cashier_id`` of the staff who checked who the
    member is, and is recorded as such."""

    pin: Pin
    current_pin: Pin | None = None
    reset: bool = False
    cashier_id: StaffId | None = None


class OpenSale(_Req):
    """Who sells it, when the POS knows at the start (both optional; finalize may say too)."""

    cashier_id: StaffId | None = None
    guide_id: StaffId | None = None  # unset: the member's own guide, at finalize


class BindCard(_Req):
    card_uid: ShortText


class TopUp(_Req):
    amount: StrictAmount
    paid_by: Literal["cash", "bank_card", "external"] = "cash"


class Identify(_Req):
    """Exactly one way of identifying the member."""

    card_uid: ShortText | None = None
    member_code: ShortText | None = None
    phone: ShortText | None = None
    qr: ShortText | None = None


class AddLine(_Req):
    """A sku in the catalogue needs only ``sku`` (and ``qty``); what is given is used instead
    of the catalogue's (a price override, an item the catalogue does not hold)."""

    sku: IdText
    name: ShortText | None = None
    category: IdText | None = None
    qty: Qty = 1
    unit_price: StrictAmount | None = None


class ChangeLine(_Req):
    qty: Qty


class ApplyCoupon(_Req):
    code: ShortText


class TenderIn(_Req):
    kind: Literal["points", "stored_value", "cash", "bank_card", "external"]
    amount: StrictAmount = 0
    points: Annotated[int, Field(strict=True, ge=0, le=1_000_000_000)] = 0
    sv_order: Literal["principal_first", "bonus_first", "proportional"] | None = None
    reference: ShortText | None = None


class Finalize(_Req):
    tenders: list[TenderIn] = Field(min_length=1, max_length=20)
    cashier_id: StaffId | None = None  # replaces the one named at open, if given
    guide_id: StaffId | None = None
    # The member's payment PIN, when paying with stored value or points asks for it
    # (409 pin_required); never stored, logged or sent on.
    pin: Pin | None = None


class RefundLineIn(_Req):
    line_no: LineNo
    qty: Qty


class RefundIn(_Req):
    sale_id: ShortText
    lines: list[RefundLineIn] | None = Field(
        default=None, min_length=1, max_length=500,
        description="Omit to refund everything still refundable")
    cashier_id: StaffId | None = None  # who gives the money back


class SimulatedScan(_Req):
    code: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class SimulatedTap(_Req):
    card_uid: Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{8,20}$")]
    member_number: ShortText | None = None


class ScanIn(_Req):
    code: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ProductIn(_Req):
    sku: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    unit_price: StrictAmount


class ProductsIn(_Req):
    products: list[ProductIn] = Field(min_length=1, max_length=10_000)


# --- answers ---------------------------------------------------------------------------------

Day = date  # for fields named ``date``, which hide the type inside their class


class Product(BaseModel):
    sku: str
    name: str
    category: str
    unit_price: int


class ProductsPage(BaseModel):
    products: list[Product]
    total: int = Field(description="products matching the filters, on every page")
    next_offset: int | None = Field(description="offset of the next page; null: the last page")


class PointsEntry(BaseModel):
    entry_id: int
    date: Day = Field(description="the store-local date of the entry")
    at: str = Field(description="store-local time, ISO 8601 with the store's offset")
    delta: int = Field(description="points added (positive) or taken (negative)")
    reason: str = Field(description="earned, redeemed, expired, refund_return, refund_reversal,"
                                    " debt_repayment, ...")
    sale_id: str | None
    refund_id: str | None
    lot_expires_on: Day | None = Field(description="when the points earned by it expire")


class PointsBalance(BaseModel):
    points: int = Field(description="the balance this store shows: its own ledger plus the other"
                                    " stores' shares as the hub last reported them")
    points_here: int = Field(description="earned and kept at this store")
    points_debt: int


class PointsHistory(BaseModel):
    member_id: str
    store_id: str
    balance: PointsBalance
    entries: list[PointsEntry] = Field(description="this store's ledger, newest first")
    next_before: int | None = Field(description="``before`` for the next page; null: no more")


class DayEntry(BaseModel):
    kind: Literal["sale", "refund"]
    id: str = Field(description="the sale id, or the refund id")
    sale_id: str
    terminal_id: str
    member_id: str | None
    amount: int = Field(description="the sale's total, or the amount refunded")
    at: str = Field(description="store-local time, ISO 8601 with the store's offset")


class DayTotals(BaseModel):
    sales: int
    sales_amount: int
    refunds: int
    refunds_amount: int
    net_amount: int


class DayReceipts(BaseModel):
    date: Day
    store_id: str
    currency: str
    entries: list[DayEntry] = Field(description="oldest first")
    next_offset: int | None
    totals: DayTotals = Field(description="the whole day, whatever the page")
