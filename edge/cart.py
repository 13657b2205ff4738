"""Open sales, held in memory until they are finalized.

An open basket is not money yet: nothing about it is acknowledged to anyone, so it lives in
memory and a restart drops it (the POS re-scans). Everything from finalize on is durable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edge.config import LimitsSection
from edge.errors import EdgeError, conflict, invalid, not_found
from protocol.ids import uuid7
from protocol.money import MAX_AMOUNT
from protocol.pricing import BasketLine

MAX_TEXT = 200
OPEN_SALE_TTL_S = 12 * 3600  # an abandoned basket is forgotten after half a day
# A POS retries the change it had no answer to, straight away: far fewer than this many
# changes later.
KEYS_KEPT = 256


@dataclass
class CartLine:
    line_no: int
    sku: str
    name: str
    category: str
    qty: int
    unit_price: int

    def basket_line(self) -> BasketLine:
        return BasketLine(line_no=self.line_no, sku=self.sku, category=self.category,
                          qty=self.qty, unit_price=self.unit_price)


@dataclass
class Cart:
    sale_id: str
    terminal_id: str
    opened_at: float
    member_id: str | None = None
    # Who sells it (the POS says, when it opens or pays the sale); the guide defaults to the
    # member's own shopping guide at finalize.
    cashier_id: str | None = None
    guide_id: str | None = None
    lines: dict[int, CartLine] = field(default_factory=dict)
    coupons: list[str] = field(default_factory=list)
    next_line_no: int = 1
    state: str = "open"
    # Idempotency keys of the last ``KEYS_KEPT`` changes to this sale, oldest first: a retry
    # of one of them changes nothing and is answered with the sale as it stands. Only keys, so
    # that a sale changed thousands of times holds no more than this (the review measured
    # 165 -> 984 MB for 20,000 changes while every answer was kept).
    done_keys: dict[str, None] = field(default_factory=dict)
    # The last quote and everything it was computed from (see checkout.price): finalize right
    # after a quote of the same basket reuses it instead of evaluating the campaigns again.
    priced: tuple[Any, Any] | None = None

    def basket(self) -> list[BasketLine]:
        return [line.basket_line() for line in self.lines.values()]

    def remember(self, key: str) -> None:
        self.done_keys[key] = None
        if len(self.done_keys) > KEYS_KEPT:
            del self.done_keys[next(iter(self.done_keys))]


def _check_text(name: str, value: str, limit: int = MAX_TEXT) -> str:
    value = value.strip()
    if not value or len(value) > limit:
        raise invalid("invalid_" + name, f"{name} must be 1..{limit} characters")
    return value


# A sku and a category travel as ids in the sale's event (``protocol.events.Id``): a line that
# holds a longer one could never be paid, so it is refused when it is added.
MAX_ID = 64


class CartBook:
    def __init__(self, limits: LimitsSection) -> None:
        self._limits = limits
        self._carts: dict[str, Cart] = {}

    def open(self, terminal_id: str) -> Cart:
        self._forget_stale()
        limit = self._limits.max_open_sales_per_terminal
        held = [c.sale_id for c in self._carts.values()
                if c.terminal_id == terminal_id and c.state == "open"]
        if len(held) >= limit:
            raise EdgeError(
                "too_many_open_sales",
                f"this terminal holds {limit} open sales, the most it may: finalize or void one"
                " (POST /v1/sales/{sale_id}/void) before opening another", 409,
                limit=limit, open_sales=held)
        cart = Cart(sale_id=uuid7(), terminal_id=terminal_id, opened_at=time.time())
        self._carts[cart.sale_id] = cart
        return cart

    def get(self, sale_id: str, terminal_id: str | None = None) -> Cart:
        cart = self._carts.get(sale_id)
        if cart is None:
            raise not_found("sale_not_found", "no open sale with this id", sale_id=sale_id)
        if terminal_id is not None and cart.terminal_id != terminal_id:
            raise EdgeError("sale_of_other_terminal", "this sale belongs to another terminal", 403)
        return cart

    def get_open(self, sale_id: str, terminal_id: str | None = None) -> Cart:
        cart = self.get(sale_id, terminal_id)
        if cart.state != "open":
            raise conflict("sale_closed", f"this sale is {cart.state}", sale_id=sale_id)
        return cart

    def latest_open(self, terminal_id: str) -> Cart | None:
        """The terminal's most recently opened sale that is still open (a tap or scan joins it)."""
        open_carts = [c for c in self._carts.values()
                      if c.terminal_id == terminal_id and c.state == "open"]
        return max(open_carts, key=lambda c: c.opened_at) if open_carts else None

    def drop(self, sale_id: str) -> None:
        self._carts.pop(sale_id, None)

    def open_count(self) -> int:
        return sum(1 for c in self._carts.values() if c.state == "open")

    def _forget_stale(self) -> None:
        cutoff = time.time() - OPEN_SALE_TTL_S
        for sale_id in [s for s, c in self._carts.items() if c.opened_at < cutoff]:
            del self._carts[sale_id]

    def check_qty(self, qty: int) -> int:
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise invalid("invalid_quantity", "quantity must be a whole number above zero")
        if qty > self._limits.max_qty:
            raise invalid("invalid_quantity", f"quantity above {self._limits.max_qty}")
        return qty

    def add_line(
        self, cart: Cart, *, sku: str, name: str, category: str, qty: int, unit_price: int
    ) -> CartLine:
        self.check_qty(qty)
        if isinstance(unit_price, bool) or not isinstance(unit_price, int) or unit_price < 0:
            raise invalid("invalid_price", "unit price must be whole minor units, not negative")
        if unit_price > self._limits.max_unit_price:
            raise invalid("price_out_of_range",
                          f"unit price above the limit of {self._limits.max_unit_price}")
        if len(cart.lines) >= self._limits.max_lines:
            raise conflict("too_many_lines", f"a sale holds at most {self._limits.max_lines} lines")
        line = CartLine(
            line_no=cart.next_line_no, sku=_check_text("sku", sku, MAX_ID),
            name=_check_text("name", name), category=_check_text("category", category, MAX_ID),
            qty=qty, unit_price=unit_price,
        )
        self._check_amounts(cart, extra=line)
        cart.lines[line.line_no] = line
        cart.next_line_no += 1
        return line

    def set_qty(self, cart: Cart, line_no: int, qty: int) -> None:
        line = self._line(cart, line_no)
        self.check_qty(qty)
        self._check_amounts(cart, changed=(line_no, qty))
        line.qty = qty

    @staticmethod
    def _check_amounts(cart: Cart, *, extra: CartLine | None = None,
                       changed: tuple[int, int] | None = None) -> None:
        """The basket's gross, before any discount, within what a sale's event carries
        (``protocol.money.MAX_AMOUNT``): else it could be quoted but never paid."""
        total = 0
        for ln in [*cart.lines.values(), *([extra] if extra is not None else [])]:
            qty = changed[1] if changed is not None and ln.line_no == changed[0] else ln.qty
            total += qty * ln.unit_price
        if total > MAX_AMOUNT:
            raise invalid("amount_too_large", f"the sale would come to more than {MAX_AMOUNT}"
                          " minor units, beyond what one sale can carry", limit=MAX_AMOUNT)

    def remove_line(self, cart: Cart, line_no: int) -> None:
        self._line(cart, line_no)
        del cart.lines[line_no]

    @staticmethod
    def _line(cart: Cart, line_no: int) -> CartLine:
        line = cart.lines.get(line_no)
        if line is None:
            raise not_found("line_not_found", f"sale has no line {line_no}", line_no=line_no)
        return line
