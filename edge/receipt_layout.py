"""The printed receipt of a finalized sale, laid out from ``checkout.receipt_view``.

Pure: a view dict in, a ``drivers.printer.Receipt`` out; the caller renders it with the
printer's encoding and queues the bytes (``edge.print_queue``). A reprint is built the same way
with a "REPRINT" banner, so a second copy can never pass for the original. Labels are Chinese and
English because the same stores serve both; widths are left to ``Receipt`` (it counts display
cells, wrapping whatever does not fit).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from drivers.printer import PAPER_80MM, Receipt
from protocol.ids import coupon_qr
from protocol.money import format_amount

TENDER_NAMES = {
    "cash": "现金 Cash",
    "bank_card": "银行卡 Bank card",
    "stored_value": "储值 Stored value",
    "points": "积分 Points",
    "external": "其他 Other",
}
REPRINT_BANNER = "REPRINT 重印"


def build_receipt(
    view: dict[str, Any],
    *,
    store_name: str,
    currency: str,
    width: int = PAPER_80MM,
    reprint: bool = False,
) -> Receipt:
    """The receipt of ``view`` (a ``receipt_view``, or finalize's answer with change/coupons)."""

    def money(amount: int) -> str:
        return format_amount(amount, currency)

    r = Receipt(width=width)
    r.text(store_name, align="center", bold=True, size=2)
    if reprint:
        r.text(REPRINT_BANNER, align="center", bold=True)
    r.divider()
    r.row("门店 Store", str(view.get("store_id", "")))
    r.row("单号 Sale", str(view["sale_id"]))
    r.row("时间 Time", _when(view.get("finalized_at")))
    r.divider()

    for line in view["lines"]:
        r.text(str(line["name"]))
        left = f"  {line['qty']} × {money(line['unit_price'])}"
        if line.get("discount"):
            left += f"  -{money(line['discount'])}"  # shows how net follows from qty × price
        r.row(left, money(line["net"]))
    r.divider()

    r.row("小计 Subtotal", money(view["subtotal"]))
    for d in view.get("discounts") or []:
        r.row(f"  {d.get('label') or d.get('kind', '')}", f"-{money(d['amount'])}")
    if view.get("discount_total"):
        r.row("优惠 Discounts", f"-{money(view['discount_total'])}")
    r.row("合计 Total", money(view["total"]), bold=True)
    r.divider()

    for t in view.get("tenders") or []:
        name = TENDER_NAMES.get(t["kind"], str(t["kind"]))
        if t["kind"] == "points" and t.get("points"):
            name += f" ({t['points']})"
        r.row(name, money(t["amount"]))
    if view.get("change") is not None:  # only finalize's answer knows the change
        r.row("找零 Change", money(view["change"]))
    if view.get("refunded_total"):
        r.row("已退 Refunded", f"-{money(view['refunded_total'])}")

    _member_block(r, view, money)
    r.divider()
    r.text("谢谢惠顾 Thank you", align="center")
    r.feed(2)
    r.cut()
    if not reprint and any(t["kind"] == "cash" for t in view["tenders"]):
        r.drawer()  # cash was taken: open the drawer with the original receipt, never a reprint
    return r


def _member_block(r: Receipt, view: dict[str, Any], money: Callable[[int], str]) -> None:
    member = view.get("member")
    coupons = [c["coupon_code"] for c in view.get("coupons_issued") or []]
    if member:
        r.divider()
        r.row("会员 Member", str(member["member_code"]))
        r.row("等级 Tier", str(member["tier"]))
        r.row("本次积分 Points earned", str(view.get("points_earned", 0)))
        r.row("积分余额 Points balance", str(member["points_balance"]))
        r.row("储值余额 Stored value", money(member["stored_value"]))
    for code in coupons:
        r.row("赠券 Coupon", code)
    messages = view.get("messages") or []
    for message in messages:  # what HQ left for the member (a journey's in-store message)
        r.divider()
        r.text(str(message["text"]))
        if message.get("coupon_code"):
            r.row("券码 Coupon", str(message["coupon_code"]))
    gifts = [str(m["coupon_code"]) for m in messages if m.get("coupon_code")]
    # One QR only: a coupon just issued is what the customer needs next, then a coupon HQ
    # sent them, else the member card.
    if coupons:
        r.qr(coupon_qr(coupons[0]))
    elif gifts:
        r.qr(coupon_qr(gifts[0]))
    elif member:
        r.qr(str(member["qr"]))


def _when(value: Any) -> str:
    """Store-local time as the cashier reads it; the stored ISO text if it does not parse."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)
