"""Members' payment PINs: set at a till, stored as an argon2id hash, verified offline at any
store (the hash travels in the member directory), locked after too many wrong PINs in a row.

Hashing and verifying cost tens of milliseconds by design, so they run outside the write
transaction (``hash_pin``, ``matches`` on a worker thread); what is written (the hash, a
failure, a lock) is quick. The PIN itself is never stored, logged or sent: only its hash leaves
the till, in ``member.pin_set``.
"""

from __future__ import annotations

import re
import sqlite3
from itertools import pairwise

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge import member_changes, members, outbox
from edge.config import PaymentPinSection
from edge.context import StoreContext
from edge.errors import EdgeError, conflict, invalid
from protocol.events import PaymentPinLocked, PaymentPinSet

PIN_LENGTH = 6
_DIGITS = re.compile(rf"^[0-9]{{{PIN_LENGTH}}}$")


def check_format(pin: str) -> None:
    """Six digits, and not one anyone would guess first: all one digit or a run up or down."""
    if not _DIGITS.match(pin):
        raise invalid("invalid_pin", f"a payment PIN is {PIN_LENGTH} digits")
    steps = {int(b) - int(a) for a, b in pairwise(pin)}
    if len(steps) == 1 and steps.pop() in (-1, 0, 1):
        raise invalid("weak_pin", "a PIN of one digit repeated or a run of digits is too easy"
                      " to guess; choose another")


def _hasher(cfg: PaymentPinSection) -> PasswordHasher:
    return PasswordHasher(time_cost=cfg.hash_time_cost, memory_cost=cfg.hash_memory_kib,
                          parallelism=1)


def hash_pin(cfg: PaymentPinSection, pin: str) -> str:
    check_format(pin)
    return _hasher(cfg).hash(pin)


def matches(pin_hash: str, pin: str) -> bool:
    """Whether ``pin`` is the one hashed; the cost settings come from the hash itself."""
    try:
        return PasswordHasher().verify(pin_hash, pin)
    except VerifyMismatchError:
        return False
    except (InvalidHashError, VerificationError):
        return False  # a hash this build cannot read never lets anyone pay


def state(conn: sqlite3.Connection, member_id: str) -> tuple[str | None, bool]:
    """(the PIN's hash or None, whether it is locked) of the member ``member_id`` is now."""
    m = members.get_member(conn, members.resolve(conn, member_id))
    return m["pin_hash"], bool(m["pin_locked"])


def set_pin(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, pin_hash: str, *,
            reset: bool, terminal_id: str, cashier_id: str | None) -> None:
    """Store a new PIN's hash (the caller checked the old PIN, or staff checked who the member
    is: ``reset``), lifting any lock."""
    member_id = members.resolve(conn, member_id)
    m = members.get_member(conn, member_id)
    event = outbox.append(conn, ctx, PaymentPinSet(
        member_id=member_id, pin_hash=pin_hash, terminal_id=terminal_id, cashier_id=cashier_id))
    conn.execute("UPDATE members SET pin_hash = ?, pin_locked = 0, pin_failures = 0,"
                 " pin_hlc = ? WHERE member_id = ?", (pin_hash, event.hlc, member_id))
    what = "reset" if reset else ("changed" if m["pin_hash"] is not None else "set")
    member_changes.record(conn, ctx, member_id, "pin", {"pin": what,
                                                        "was_locked": bool(m["pin_locked"])},
                          terminal_id=terminal_id, cashier_id=cashier_id)


def record_failure(conn: sqlite3.Connection, ctx: StoreContext, member_id: str,
                   cfg: PaymentPinSection, terminal_id: str) -> int:
    """Count a wrong PIN; returns the attempts left (0: locked now, at every store once the
    hub has the ``member.pin_locked`` event)."""
    member_id = members.resolve(conn, member_id)
    m = members.get_member(conn, member_id)
    failures = int(m["pin_failures"]) + 1
    if failures < cfg.max_failures:
        conn.execute("UPDATE members SET pin_failures = ? WHERE member_id = ?",
                     (failures, member_id))
        return cfg.max_failures - failures
    event = outbox.append(conn, ctx, PaymentPinLocked(member_id=member_id, failures=failures,
                                                      terminal_id=terminal_id))
    conn.execute("UPDATE members SET pin_failures = ?, pin_locked = 1, pin_hlc = ?"
                 " WHERE member_id = ?", (failures, event.hlc, member_id))
    member_changes.record(conn, ctx, member_id, "pin", {"pin": "locked", "failures": failures},
                          terminal_id=terminal_id, cashier_id=None)
    return 0


def record_success(conn: sqlite3.Connection, member_id: str) -> None:
    conn.execute("UPDATE members SET pin_failures = 0 WHERE member_id = ? AND pin_failures > 0",
                 (members.resolve(conn, member_id),))


def locked_error() -> EdgeError:
    return conflict("pin_locked", "too many wrong PINs: paying with balances is locked until"
                    " the member sets a new PIN at the service desk")


def require(conn: sqlite3.Connection, member: sqlite3.Row, balance_paid: int, *,
            pin_ok: bool | None, cfg: PaymentPinSection) -> None:
    """Inside the sale's write transaction: may ``balance_paid`` (stored value and points'
    value) be paid by ``member`` (the row the sale was priced with)? ``pin_ok``: the PIN given
    was verified (True), or none was given (None)."""
    if balance_paid <= 0:
        return
    if member["merged_into"] is None:  # the row at hand is the member: no query on checkout
        pin_hash, locked = member["pin_hash"], bool(member["pin_locked"])
    else:  # an id merged since the till identified it: the PIN is the survivor's
        pin_hash, locked = state(conn, member["member_id"])
    if locked:
        raise locked_error()
    if pin_hash is not None:
        if not pin_ok:
            raise conflict("pin_required", "the member's payment PIN is needed to pay with"
                           " balances", pin_set=True)
        return
    if cfg.required_above is not None and balance_paid > cfg.required_above:
        raise conflict("pin_not_set", f"paying more than {cfg.required_above} with balances"
                       " needs a payment PIN: the member sets one first",
                       pin_set=False, required_above=cfg.required_above)
