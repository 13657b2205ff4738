"""Coupons the hub issued, as a store takes them from the member directory: found and validated
by the till offline, single-use, retired when the hub no longer lists them unless this store
used them itself."""

from __future__ import annotations

import pytest

from edge import directory
from edge.errors import EdgeError
from edge.service import EdgeService
from protocol.ids import coupon_code, coupon_qr
from protocol.sync import MemberCoupon, MemberEntry
from tests.edge.conftest import register, sell


def entry(member: dict[str, str], *codes: str) -> MemberEntry:
    return MemberEntry(member_id=member["member_id"], member_code=member["member_code"],
                       home_store="S001", phone=member["phone"],
                       coupons=[MemberCoupon(coupon_code=c, kind="amount_off", value=1_000,
                                             min_spend=2_000) for c in codes])


async def apply(svc: EdgeService, e: MemberEntry) -> None:
    await svc._write(lambda conn, ctx: directory.apply_entry(conn, ctx, e))


async def test_hub_coupons_are_redeemed_offline_once_and_retired_when_used_elsewhere(
        service: EdgeService) -> None:
    svc = service
    m = await register(svc, "13800138001")
    here, elsewhere, refunded = coupon_code(), coupon_code(), coupon_code()
    await apply(svc, entry(m, here, elsewhere, refunded))
    view = await svc.member(m["member_id"])
    assert sorted(c["coupon_code"] for c in view["coupons"]) == sorted([here, elsewhere,
                                                                        refunded])
    sale = await sell(svc, [("A", "grocery", 1, 5_000)], member_id=m["member_id"],
                      coupons=[coupon_qr(here)])
    assert sale["total"] == 4_000
    with pytest.raises(EdgeError, match="already been used"):  # single-use here too
        await sell(svc, [("A", "grocery", 1, 5_000)], member_id=m["member_id"], coupons=[here])
    with pytest.raises(EdgeError, match="another member"):
        other = await register(svc, "13800138002")
        await sell(svc, [("A", "grocery", 1, 5_000)], member_id=other["member_id"],
                   coupons=[elsewhere])
    used = await sell(svc, [("A", "grocery", 1, 5_000)], member_id=m["member_id"],
                      coupons=[refunded])
    await svc.refund(terminal_id="POS-1", idem_key="refund-1", sale_id=used["sale_id"],
                     lines=None)
    # The hub heard of a redemption elsewhere (``elsewhere``) and of this store's own (``here``),
    # not yet of the refund: ``refunded`` is open here again, and stays so.
    await apply(svc, entry(m))
    with pytest.raises(EdgeError, match="already been used"):
        await sell(svc, [("A", "grocery", 1, 5_000)], member_id=m["member_id"],
                   coupons=[elsewhere])
    view = await svc.member(m["member_id"])
    assert [c["coupon_code"] for c in view["coupons"]] == [refunded]
    # A later entry listing it again does not reopen one this store has redeemed.
    await apply(svc, entry(m, here))
    with pytest.raises(EdgeError, match="already been used"):
        await sell(svc, [("A", "grocery", 1, 5_000)], member_id=m["member_id"], coupons=[here])
