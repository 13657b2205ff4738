from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.money import (
    CurrencyMismatch,
    Money,
    Rounding,
    allocate,
    divide,
    format_amount,
    parse_amount,
    percent_of,
    scale,
    validate_currency,
)

FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [
        # (numerator, denominator, {rounding: result})
        (7, 2, {"down": 3, "up": 4, "half_up": 4, "half_even": 4}),
        (5, 2, {"down": 2, "up": 3, "half_up": 3, "half_even": 2}),
        (-5, 2, {"down": -2, "up": -3, "half_up": -3, "half_even": -2}),
        (-7, 2, {"down": -3, "up": -4, "half_up": -4, "half_even": -4}),
        (5, -2, {"down": -2, "up": -3, "half_up": -3, "half_even": -2}),
        (10, 3, {"down": 3, "up": 4, "half_up": 3, "half_even": 3}),
        (20, 3, {"down": 6, "up": 7, "half_up": 7, "half_even": 7}),
        (9, 3, {"down": 3, "up": 3, "half_up": 3, "half_even": 3}),
        (0, 7, {"down": 0, "up": 0, "half_up": 0, "half_even": 0}),
    ],
)
def test_divide_rounds_as_named(num: int, den: int, expected: dict[str, int]) -> None:
    got = {r.value: divide(num, den, r) for r in Rounding}
    assert got == expected


def test_divide_by_zero_is_refused() -> None:
    with pytest.raises(ZeroDivisionError):
        divide(1, 0, Rounding.DOWN)


def test_divide_is_exact_for_huge_ints() -> None:
    big = 10**40 + 1
    assert divide(big, 2, Rounding.HALF_UP) == 5 * 10**39 + 1
    assert divide(big, 2, Rounding.DOWN) == 5 * 10**39


@FAST
@given(st.integers(-(10**15), 10**15), st.integers(1, 10**6), st.sampled_from(list(Rounding)))
def test_divide_is_within_one_of_the_exact_quotient(num: int, den: int, r: Rounding) -> None:
    exact = Fraction(num, den)
    q = divide(num, den, r)
    assert abs(q - exact) < 1
    if r is Rounding.DOWN:
        assert abs(q) <= abs(exact)
    if r is Rounding.UP:
        assert abs(q) >= abs(exact)
    if r in (Rounding.HALF_UP, Rounding.HALF_EVEN):
        assert abs(q - exact) <= Fraction(1, 2)


def test_scale_and_percent_round_once_at_the_end() -> None:
    assert scale(333, 1, 3, Rounding.HALF_UP) == 111
    assert scale(1000, 2, 3, Rounding.DOWN) == 666
    assert scale(1000, 2, 3, Rounding.HALF_UP) == 667
    assert percent_of(12345, 2000, Rounding.HALF_UP) == 2469  # 2469.0
    assert percent_of(123, 2000, Rounding.HALF_UP) == 25  # 24.6
    assert percent_of(123, 2000, Rounding.DOWN) == 24
    assert percent_of(30, 1500, Rounding.HALF_UP) == 5  # 4.5
    assert percent_of(30, 1500, Rounding.HALF_EVEN) == 4


def test_allocate_is_proportional_and_exact() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]  # tie: earlier weight first
    assert allocate(60, [40_000, 25_000]) == [37, 23]
    assert allocate(10, [0, 5, 5]) == [0, 5, 5]
    assert allocate(-100, [1, 1, 1]) == [-34, -33, -33]
    assert allocate(7, [0, 0]) == [7, 0]
    assert allocate(0, []) == []


def test_allocate_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="over nothing"):
        allocate(5, [])
    with pytest.raises(ValueError, match="negative"):
        allocate(5, [1, -1])


@FAST
@given(
    st.integers(-(10**9), 10**9),
    st.lists(st.integers(0, 10**7), min_size=1, max_size=20).filter(lambda w: sum(w) > 0),
)
def test_allocate_sums_exactly_and_each_share_is_within_one(total: int, weights: list[int]) -> None:
    shares = allocate(total, weights)
    assert sum(shares) == total
    whole = sum(weights)
    for share, w in zip(shares, weights, strict=True):
        assert abs(share - Fraction(total * w, whole)) < 1
        if w == 0:
            assert share == 0


@FAST
@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**7), min_size=1, max_size=20))
def test_allocating_at_most_the_weights_never_exceeds_a_weight(
    total: int, weights: list[int]
) -> None:
    """What pricing relies on: sharing a discount <= the lines' net never overdraws a line."""
    total = min(total, sum(weights))
    if sum(weights) == 0:
        return
    for share, w in zip(allocate(total, weights), weights, strict=True):
        assert 0 <= share <= w


def test_format_and_parse() -> None:
    assert format_amount(1234, "CNY") == "12.34"
    assert format_amount(-5, "CNY") == "-0.05"
    assert format_amount(1234, "JPY") == "1234"
    assert parse_amount("12.34", "CNY") == 1234
    assert parse_amount("12.3", "CNY") == 1230
    assert parse_amount("-0.05", "CNY") == -5
    assert parse_amount(" 7 ", "CNY") == 700
    assert parse_amount("1234", "JPY") == 1234


@pytest.mark.parametrize(
    ("text", "currency"),
    [("12.345", "CNY"), ("1.5", "JPY"), ("abc", "CNY"), ("1,00", "CNY"), ("", "CNY"),
     ("1e3", "CNY"), ("+1", "CNY"), ("12.", "CNY")],
)
def test_parse_refuses_what_is_not_an_amount(text: str, currency: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text, currency)


@FAST
@given(st.integers(-(10**12), 10**12), st.sampled_from(["CNY", "JPY", "USD"]))
def test_format_parse_round_trip(amount: int, currency: str) -> None:
    assert parse_amount(format_amount(amount, currency), currency) == amount


def test_money_arithmetic_and_checks() -> None:
    a, b = Money(1000, "CNY"), Money(250, "CNY")
    assert a + b == Money(1250, "CNY")
    assert a - b == Money(750, "CNY")
    assert -a == Money(-1000, "CNY")
    assert str(a) == "10.00 CNY"
    with pytest.raises(CurrencyMismatch):
        a + Money(1, "HKD")
    with pytest.raises(TypeError):
        Money(10.5, "CNY")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(True, "CNY")
    with pytest.raises(ValueError):
        Money(1, "yuan")
    with pytest.raises(ValueError):
        validate_currency("cny")
