"""The hub's online answers to a store: who a card, code or phone is, and whether a member may
spend more than the store's offline allowance.

Authorisation is an escrow: what the hub granted a store and that store has not yet been seen
spending is held back from everyone else, so two stores cannot both be authorised to spend the
same points or stored value. The books and the rule (``free``) are ``hub.ledger.allowances``',
shared with the standing allowances the hub grants by itself.
"""

from __future__ import annotations

from hub.core.db import Tx
from hub.ledger import allowances
from hub.members import directory
from hub.members.identity import canonical
from protocol.sync import RpcReply, RpcRequest


def lookup(tx: Tx, req: RpcRequest) -> RpcReply:
    member_id: str | None = None
    if req.by == "card_uid":
        member_id = tx.scalar("SELECT member_id FROM cards WHERE card_uid = ?"
                              " AND state <> 'unbound'", (req.value,))
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
    """Grant ``req.store_id`` more escrow for the member, out of what is free: the same books
    and rule as the standing allowances (``hub.ledger.allowances``). The reply carries the store's
    cumulative grant, which the store folds in whatever order the directory brings it."""
    if req.member_id is None:
        return RpcReply(request_id=req.request_id, ok=False, error="invalid",
                        message="authorize needs a member_id")
    member_id = canonical(tx, req.member_id)
    books = allowances.load(tx, [member_id])[member_id]
    points, sv = books.points, books.stored_value
    if req.points > points.free() or req.stored_value > sv.free():
        return RpcReply(
            request_id=req.request_id, ok=False, error="insufficient_balance",
            message=f"the hub can authorise at most {max(0, points.free())} points and"
                    f" {max(0, sv.free())} stored value for this member now")
    allowances.add_grants(tx, [(member_id, req.store_id,
                                points.hold_more(req.store_id, req.points),
                                sv.hold_more(req.store_id, req.stored_value))])
    # Every store's directory entry carries the grants: the new figure reaches this store
    # even if this reply is lost.
    allowances.mark_changed(tx, [member_id])
    # The member's entry as it now stands goes with the reply: a merge the store has not heard
    # of yet moved escrow into these totals, and the store folds the merged id's allowance in
    # (``edge.directory.apply_authorization``) before it takes them.
    return RpcReply(request_id=req.request_id, ok=True, granted_points=req.points,
                    granted_stored_value=req.stored_value,
                    points_granted_total=points.granted.get(req.store_id, 0),
                    sv_granted_total=sv.granted.get(req.store_id, 0),
                    member=directory.entry(tx, member_id))
