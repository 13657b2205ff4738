"""HQ users' passwords: argon2id (argon2-cffi's defaults, RFC 9106's second profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from protocol.errors import ServiceError

MIN_LENGTH = 10
_HASHER = PasswordHasher()


def check_policy(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= 200:
        raise ServiceError("weak_password", f"a password has {MIN_LENGTH} to 200 characters",
                           422)
    if len(set(password)) < 4:
        raise ServiceError("weak_password", "a password needs at least 4 different characters",
                           422)


def hash_password(password: str) -> str:
    check_policy(password)
    return _HASHER.hash(password)


def matches(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
