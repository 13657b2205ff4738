"""Identifiers that a store can mint offline and that stay unique across the whole chain.

Internal ids are UUIDv7 (RFC 9562): time-ordered, so they index well, and random enough that two
stores never collide without asking the hub. Member codes are what a person reads and a card or
QR carries: the store's number, a per-store counter and a Luhn check digit, so a mistyped or
misread code is caught before it reaches the database.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A UUIDv7 string; monotonic within this process even when the clock stands still."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter >= 1 << 12:  # 12-bit counter exhausted: borrow the next millisecond
                ms += 1
                _counter = 0
        else:
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        _last_ms = ms
        rand_a = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def luhn_digit(digits: str) -> str:
    """The Luhn check digit that makes ``digits + result`` valid."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(code: str) -> bool:
    return code.isdigit() and len(code) >= 2 and luhn_digit(code[:-1]) == code[-1]


MEMBER_CODE_LEN = 12  # 4 store digits + 7 counter digits + 1 check digit


def member_code(store_number: int, counter: int) -> str:
    """``store_number`` 1..9999 (given at provisioning), ``counter`` 1..9,999,999 per store."""
    if not 0 < store_number < 10_000:
        raise ValueError("store number must be 1..9999")
    if not 0 < counter < 10_000_000:
        raise ValueError("member counter exhausted for this store")
    body = f"{store_number:04d}{counter:07d}"
    return body + luhn_digit(body)


def is_member_code(code: str) -> bool:
    return len(code) == MEMBER_CODE_LEN and luhn_valid(code)


# QR payloads printed on receipts and shown in the member app. A prefix tells a member QR from a
# coupon QR from a product barcode, so one scanner can feed all three.
MEMBER_QR_PREFIX = "MGM:"
COUPON_QR_PREFIX = "MGC:"
_COUPON_CODE = re.compile(r"^[0-9A-HJ-NP-Z]{10,16}$")  # Crockford-style: no I, O


def member_qr(code: str) -> str:
    return MEMBER_QR_PREFIX + code


def coupon_qr(code: str) -> str:
    return COUPON_QR_PREFIX + code


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def coupon_code() -> str:
    """12 characters of Crockford base32 (60 random bits) plus a mod-32 check character."""
    n = int.from_bytes(os.urandom(8), "big") >> 4
    chars = []
    for _ in range(12):
        n, r = divmod(n, 32)
        chars.append(_CROCKFORD[r])
    body = "".join(chars)
    return body + _CROCKFORD[sum(_CROCKFORD.index(c) * (i + 1) for i, c in enumerate(body)) % 32]


def is_coupon_code(code: str) -> bool:
    if not _COUPON_CODE.match(code) or len(code) != 13:
        return False
    body, check = code[:-1], code[-1]
    try:
        expected = _CROCKFORD[sum(_CROCKFORD.index(c) * (i + 1) for i, c in enumerate(body)) % 32]
    except ValueError:
        return False
    return check == expected
