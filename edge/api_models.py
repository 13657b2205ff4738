"""Request bodies of the POS API. Strict: money is whole minor units, never a float or string."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from protocol.money import MAX_AMOUNT

StrictAmount = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
Qty = Annotated[int, Field(strict=True)]
ShortText = Annotated[str, StringConstraints(max_length=200)]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterMember(_Req):
    phone: ShortText | None = None
    name: ShortText = ""
    birthday: date | None = None
    card_uid: ShortText | None = None
    tags: list[ShortText] = Field(default_factory=list, max_length=50)


class ProfileChange(_Req):
    name: ShortText | None = None
    birthday: date | None = None
    phone: ShortText | None = None
    tags: list[ShortText] | None = Field(default=None, max_length=50)


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
    sku: ShortText
    name: ShortText
    category: ShortText
    qty: Qty = 1
    unit_price: StrictAmount


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


class RefundLineIn(_Req):
    line_no: Annotated[int, Field(strict=True, ge=1)]
    qty: Qty


class RefundIn(_Req):
    sale_id: ShortText
    lines: list[RefundLineIn] | None = Field(
        default=None, max_length=500, description="Omit to refund everything still refundable"
    )


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
