from __future__ import annotations

import time
import uuid

import pytest

from protocol.ids import (
    COUPON_QR_PREFIX,
    MEMBER_CODE_LEN,
    MEMBER_QR_PREFIX,
    coupon_code,
    coupon_qr,
    is_coupon_code,
    is_member_code,
    luhn_digit,
    luhn_valid,
    member_code,
    member_qr,
    uuid7,
)


def test_uuid7_has_version_variant_and_time() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid.UUID(uuid7())
    after = time.time_ns() // 1_000_000
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after + 1


def test_uuid7_is_unique_and_sorts_in_creation_order() -> None:
    ids = [uuid7() for _ in range(20_000)]  # far more than one per millisecond
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids


def test_luhn_known_values() -> None:
    assert luhn_digit("7992739871") == "3"
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("7")
    assert not luhn_valid("7992739871a")


def test_member_code_shape_and_check_digit() -> None:
    code = member_code(17, 42)
    assert code.startswith("0017") and code[4:11] == "0000042"
    assert len(code) == MEMBER_CODE_LEN
    assert is_member_code(code)
    assert not is_member_code(code[:-1])
    assert not is_member_code("0" + code)


def test_member_code_catches_every_single_digit_error_and_adjacent_swap() -> None:
    code = member_code(321, 9_876_543)
    for i in range(len(code)):
        for d in "0123456789":
            if d != code[i]:
                assert not is_member_code(code[:i] + d + code[i + 1:]), (i, d)
    for i in range(len(code) - 1):
        a, b = code[i], code[i + 1]
        if a != b and {a, b} != {"0", "9"}:  # Luhn's one blind spot: 09 <-> 90
            assert not is_member_code(code[:i] + b + a + code[i + 2:]), i


@pytest.mark.parametrize(("store", "counter"), [(0, 1), (10_000, 1), (1, 0), (1, 10_000_000)])
def test_member_code_bounds(store: int, counter: int) -> None:
    with pytest.raises(ValueError):
        member_code(store, counter)


def test_coupon_codes_are_valid_unique_and_checked() -> None:
    codes = {coupon_code() for _ in range(2_000)}
    assert len(codes) == 2_000
    for code in codes:
        assert len(code) == 13 and is_coupon_code(code)
        assert not set(code) & set("ILOU")
    code = next(iter(codes))
    assert not is_coupon_code(code.lower())
    assert not is_coupon_code(code[:-1])
    assert not is_coupon_code(code + "0")
    assert not is_coupon_code("I" + code[1:])
    wrong_check = code[:-1] + ("0" if code[-1] != "0" else "1")
    assert not is_coupon_code(wrong_check)


def test_coupon_code_check_catches_most_single_substitutions() -> None:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    code = coupon_code()
    caught = total = 0
    for i in range(12):
        for ch in alphabet:
            if ch != code[i]:
                total += 1
                caught += not is_coupon_code(code[:i] + ch + code[i + 1:])
    # The weighted mod-32 check misses a substitution only when weight * difference = 0 mod 32.
    assert caught / total > 0.9


def test_qr_payloads_carry_their_prefix() -> None:
    assert member_qr("001700000425") == MEMBER_QR_PREFIX + "001700000425"
    assert coupon_qr("ABC") == COUPON_QR_PREFIX + "ABC"
    assert MEMBER_QR_PREFIX != COUPON_QR_PREFIX
