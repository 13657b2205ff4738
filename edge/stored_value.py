"""Stored value as two balances, principal (money paid in) and bonus (given by a campaign).

They are kept apart because a refund must give back exactly what was spent of each, and because
bonus is not cash: accounting treats the two differently.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from edge import outbox
from edge.context import StoreContext
from edge.errors import conflict
from protocol.events import StoredValueRefunded, StoredValueSpent, StoredValueToppedUp
from protocol.money import allocate

SpendOrder = Literal["principal_first", "bonus_first", "proportional"]


def ledger_entry(
    conn: sqlite3.Connection, member_id: str, principal: int, bonus: int, reason: str,
    ref_id: str, hlc: int,
) -> None:
    conn.execute(
        "INSERT INTO sv_ledger(member_id, principal_delta, bonus_delta, reason, ref_id, hlc)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (member_id, principal, bonus, reason, ref_id, hlc),
    )
    conn.execute(
        "UPDATE members SET sv_principal = sv_principal + ?, sv_bonus = sv_bonus + ?"
        " WHERE member_id = ?",
        (principal, bonus, member_id),
    )


def _parts(conn: sqlite3.Connection, member_id: str) -> tuple[int, int, int, int]:
    """(local principal, local bonus, principal total, bonus total) as known here: this store's
    own balance plus the other stores' shares from the hub, less what was spent of those here."""
    row = conn.execute(
        "SELECT sv_principal, sv_bonus, remote_sv_principal - remote_sv_principal_used,"
        " remote_sv_bonus - remote_sv_bonus_used FROM members WHERE member_id = ?",
        (member_id,)).fetchone()
    local_p, local_b, remote_p, remote_b = (int(v) for v in row)
    return local_p, local_b, local_p + remote_p, local_b + remote_b


def balances(conn: sqlite3.Connection, member_id: str) -> tuple[int, int]:
    """What the member may spend here: stored value is usable in every store."""
    _lp, _lb, total_p, total_b = _parts(conn, member_id)
    return max(0, total_p), max(0, total_b)


def split(amount: int, principal: int, bonus: int, order: SpendOrder) -> tuple[int, int]:
    """How ``amount`` is paid from (principal, bonus) in the stated order."""
    if amount > principal + bonus:
        raise conflict("insufficient_stored_value",
                       f"stored value {principal + bonus} is less than {amount}",
                       available=principal + bonus, requested=amount)
    if order == "principal_first":
        p = min(amount, principal)
        return p, amount - p
    if order == "bonus_first":
        b = min(amount, bonus)
        return amount - b, b
    p, b = allocate(amount, [principal, bonus])
    return p, b


def top_up(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, topup_id: str, terminal_id: str,
    principal: int, bonus: int, campaign_id: str | None, paid_by: str,
) -> None:
    ev = outbox.append(
        conn, ctx,
        StoredValueToppedUp(member_id=member_id, topup_id=topup_id, currency=ctx.currency,
                            principal=principal, bonus=bonus, campaign_id=campaign_id,
                            paid_by=paid_by),
    )
    conn.execute(
        "INSERT INTO topups(topup_id, member_id, terminal_id, principal, bonus, campaign_id,"
        " paid_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (topup_id, member_id, terminal_id, principal, bonus, campaign_id, paid_by,
         ctx.now().isoformat()),
    )
    ledger_entry(conn, member_id, principal, bonus, "topup", topup_id, ev.hlc)


def spend(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, sale_id: str, principal: int,
    bonus: int,
) -> None:
    local_p, local_b, total_p, total_b = _parts(conn, member_id)
    if principal > total_p or bonus > total_b:
        raise conflict("insufficient_stored_value", "stored value changed under this sale")
    ev = outbox.append(
        conn, ctx,
        StoredValueSpent(member_id=member_id, sale_id=sale_id, currency=ctx.currency,
                         principal=principal, bonus=bonus),
    )
    take(conn, member_id, sale_id, principal, bonus, ev.hlc, local_p, local_b)


def take(conn: sqlite3.Connection, member_id: str, ref_id: str, principal: int, bonus: int,
         hlc: int, local_p: int, local_b: int) -> None:
    """Record a spend of (``principal``, ``bonus``): this store's own balance (``local_*``)
    first; the rest was topped up elsewhere (the hub moves it). Also a lost box's spend,
    taken back after a restore (``edge.recovery``)."""
    here_p, here_b = min(principal, max(0, local_p)), min(bonus, max(0, local_b))
    conn.execute(
        "INSERT INTO sv_ledger(member_id, principal_delta, bonus_delta, reason, ref_id, hlc)"
        " VALUES (?, ?, ?, 'spent', ?, ?)", (member_id, -principal, -bonus, ref_id, hlc))
    conn.execute(
        "UPDATE members SET sv_principal = sv_principal - ?, sv_bonus = sv_bonus - ?,"
        " remote_sv_principal_used = remote_sv_principal_used + ?,"
        " remote_sv_bonus_used = remote_sv_bonus_used + ? WHERE member_id = ?",
        (here_p, here_b, principal - here_p, bonus - here_b, member_id))


def refund(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, sale_id: str, refund_id: str,
    principal: int, bonus: int,
) -> None:
    if principal == 0 and bonus == 0:
        return
    ev = outbox.append(
        conn, ctx,
        StoredValueRefunded(member_id=member_id, sale_id=sale_id, refund_id=refund_id,
                            currency=ctx.currency, principal=principal, bonus=bonus),
    )
    ledger_entry(conn, member_id, principal, bonus, "refunded", refund_id, ev.hlc)
