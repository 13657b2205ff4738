"""Money as integer minor units with an explicit currency, and the one place rounding happens.

Every amount in membergate is an ``int`` of minor units (cents, 分). Floats never touch money:
a rate is a ratio of two integers and the rounding mode is always named by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# A sane upper bound for a single amount (100 million major units): beyond it an input is a typo
# or an attack, never a purchase. Checked at the edges (API, codec), not in arithmetic.
MAX_AMOUNT = 10_000_000_000

_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Minor-unit exponent per ISO 4217 for the currencies a chain is likely to run in.
_EXPONENT = {"CNY": 2, "HKD": 2, "TWD": 2, "MOP": 2, "USD": 2, "EUR": 2, "GBP": 2, "SGD": 2,
             "JPY": 0, "KRW": 0}


class Rounding(StrEnum):
    """How a fractional result becomes a whole number of minor units or points."""

    DOWN = "down"  # toward zero: the default for points (a customer never earns a fraction)
    UP = "up"  # away from zero
    HALF_UP = "half_up"  # 0.5 away from zero: the usual shop rounding of a discount
    HALF_EVEN = "half_even"  # banker's rounding


class CurrencyMismatch(ValueError):
    pass


def exponent(currency: str) -> int:
    return _EXPONENT.get(currency, 2)


def validate_currency(currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise ValueError(f"currency must be a three-letter ISO 4217 code, got {currency!r}")
    return currency


def divide(numerator: int, denominator: int, rounding: Rounding) -> int:
    """``numerator / denominator`` as an integer, rounded as asked. Exact for any size of int."""
    if denominator == 0:
        raise ZeroDivisionError("division by zero in a money or points rule")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    negative = numerator < 0
    q, r = divmod(abs(numerator), denominator)
    if r and _away_from_zero(q, r, denominator, rounding):
        q += 1
    return -q if negative else q


def _away_from_zero(q: int, r: int, denominator: int, rounding: Rounding) -> bool:
    """Whether a remainder ``r`` (> 0) rounds the magnitude ``q`` up by one."""
    twice = 2 * r
    return {
        Rounding.DOWN: False,
        Rounding.UP: True,
        Rounding.HALF_UP: twice >= denominator,
        Rounding.HALF_EVEN: twice > denominator or (twice == denominator and q % 2 == 1),
    }[rounding]


def scale(amount: int, numerator: int, denominator: int, rounding: Rounding) -> int:
    """``amount * numerator / denominator`` rounded once, at the end."""
    return divide(amount * numerator, denominator, rounding)


def percent_of(amount: int, basis_points: int, rounding: Rounding) -> int:
    """A share of ``amount`` given in basis points (1% = 100 bp), rounded as asked."""
    return scale(amount, basis_points, 10_000, rounding)


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` over ``weights`` in proportion, summing exactly to ``total``.

    Largest remainder; ties go to the earlier weight, so the split is deterministic. With all
    weights zero the total goes to the first entry (nothing to be proportional to).
    """
    if not weights:
        if total:
            raise ValueError("cannot allocate a non-zero amount over nothing")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("allocation weights must not be negative")
    whole = sum(weights)
    if whole == 0:
        return [total] + [0] * (len(weights) - 1)
    sign = -1 if total < 0 else 1
    t = abs(total)
    floors = [t * w // whole for w in weights]
    rema = [t * w % whole for w in weights]
    left = t - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-rema[i], i))
    for i in order[:left]:
        floors[i] += 1
    return [sign * f for f in floors]


def format_amount(amount: int, currency: str) -> str:
    """``1234, "CNY"`` → ``"12.34"``; exact, no floats."""
    exp = exponent(currency)
    if exp == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


def parse_amount(text: str, currency: str) -> int:
    """``"12.34", "CNY"`` → ``1234``. Refuses more decimals than the currency has."""
    exp = exponent(currency)
    m = re.fullmatch(r"(-?)(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise ValueError(f"not an amount: {text!r}")
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if len(frac) > exp:
        raise ValueError(f"{text!r} has more decimals than {currency} allows ({exp})")
    value: int = int(whole) * 10**exp + (int(frac.ljust(exp, "0")) if exp else 0)
    return -value if sign else value


@dataclass(frozen=True, slots=True)
class Money:
    """An amount with its currency, for boundaries where the currency must travel with it."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError("Money.amount must be an int of minor units")
        validate_currency(self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency} do not mix")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __str__(self) -> str:
        return f"{format_amount(self.amount, self.currency)} {self.currency}"
