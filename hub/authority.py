"""The hub's online answers to a store: who a card, code or phone is, and whether a member may
spend more than the store's offline allowance.

Authorisation is an escrow: what the hub granted a store and that store has not yet been seen
spending is held back from everyone else, so two stores cannot both be authorised to spend the
same points or stored value.
"""

from __future__ import annotations

from hub import directory
from hub.db import Tx
from hub.ingest import canonical
from protocol.sync import RpcReply, RpcRequest


def lookup(tx: Tx, req: RpcRequest) -> RpcReply:
    member_id: str | None = None
    if req.by == "card_uid":
        member_id = tx.scalar("SELECT member_id FROM cards WHERE card_uid = ?", (req.value,))
    elif req.by == "member_code":
        member_id = tx.scalar("SELECT member_id FROM members WHERE member_code = ?", (req.value,))
    elif req.by == "phone":
        member_id = tx.scalar("SELECT member_id FROM members WHERE phone = ?"
                              " AND merged_into IS NULL", (req.value,))
    entry = directory.entry(tx, canonical(tx, member_id)) if member_id else None
    if entry is None:
        return RpcReply(request_id=req.request_id, ok=False, error="member_not_found",
                        message="the hub knows no member by this identifier")
    return RpcReply(request_id=req.request_id, ok=True, member=entry)


def authorize(tx: Tx, req: RpcRequest) -> RpcReply:
    if req.member_id is None:
        return RpcReply(request_id=req.request_id, ok=False, error="invalid",
                        message="authorize needs a member_id")
    member_id = canonical(tx, req.member_id)
    points, principal, bonus = tx.one(
        "SELECT coalesce(sum(points), 0), coalesce(sum(sv_principal), 0),"
        " coalesce(sum(sv_bonus), 0) FROM shares WHERE member_id = ?", (member_id,))
    held_points, held_sv = tx.one(
        "SELECT coalesce(sum(CASE WHEN points_granted > points_spent"
        " THEN points_granted - points_spent ELSE 0 END), 0),"
        " coalesce(sum(CASE WHEN sv_granted > sv_spent THEN sv_granted - sv_spent ELSE 0 END), 0)"
        " FROM grants WHERE member_id = ?", (member_id,))
    free_points = int(points) - int(held_points)
    free_sv = int(principal) + int(bonus) - int(held_sv)
    if req.points > free_points or req.stored_value > free_sv:
        return RpcReply(
            request_id=req.request_id, ok=False, error="insufficient_balance",
            message=f"the hub can authorise at most {max(0, free_points)} points and"
                    f" {max(0, free_sv)} stored value for this member now")
    tx.execute(
        "INSERT INTO grants(member_id, store_id, points_granted, sv_granted) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(member_id, store_id) DO UPDATE SET"
        " points_granted = grants.points_granted + excluded.points_granted,"
        " sv_granted = grants.sv_granted + excluded.sv_granted",
        (member_id, req.store_id, req.points, req.stored_value))
    return RpcReply(request_id=req.request_id, ok=True, granted_points=req.points,
                    granted_stored_value=req.stored_value)
