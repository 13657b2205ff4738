"""Phone numbers as E.164: "138 0013 8000", "+86 13800138000", "008613800138000" are one member."""

from __future__ import annotations

import phonenumbers

from edge.errors import invalid


def normalise_phone(raw: str, region: str) -> str:
    text = raw.strip()
    if not text or len(text) > 32:
        raise invalid("invalid_phone", "phone number is empty or too long")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise invalid("invalid_phone", f"not a phone number: {raw!r}") from exc
    if not phonenumbers.is_valid_number(number):
        raise invalid("invalid_phone", f"not a valid phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
