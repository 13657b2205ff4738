"""Promotions for members HQ picked out (issue 16, "at the till"): the directory brings each
member's HQ tags, till segments, RFM group and lifecycle stage; a campaign's ``audience`` is
decided offline at the store from them, and the POS shows them on identification."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from edge import demo
from edge.directory import apply_entry
from edge.service import EdgeService
from protocol.campaigns import Audience, Campaign, CampaignBundle, Targeting
from protocol.sync import MemberEntry, TillSegment
from tests.edge.conftest import register, sell


def _bundle(version: int) -> CampaignBundle:
    """The demo's campaigns and 10 % off for the sleeping members of segment ``seg-win``."""
    demo_bundle = demo.demo_bundle()
    data = demo_bundle.model_dump(mode="json")
    data["version"] = version
    data["campaigns"].append({
        "campaign_id": "wake-up", "name": "欢迎回来 10% off", "priority": 50,
        "audience": {"segments": ["seg-win"], "stages": ["sleeping", "lost"]},
        "rule": {"kind": "category_percent_off", "categories": ["grocery"],
                 "percent_bp": 1_000}})
    return CampaignBundle.model_validate(data)


def _told(svc: EdgeService, member: dict[str, Any], **hq: Any) -> None:
    """The hub's directory entry for ``member`` with HQ's view ``hq``, as a page applies it."""
    conn = sqlite3.connect(svc.config.database.path)
    conn.row_factory = sqlite3.Row
    with conn:
        apply_entry(conn, svc.context, MemberEntry(
            member_id=member["member_id"], member_code=member["member_code"],
            phone=member["phone"], name="x", home_store="S001", **hq))
    conn.close()


async def test_an_audience_is_decided_offline_from_the_directory(
        service: EdgeService, client: httpx.AsyncClient) -> None:
    assert await service.apply_bundle(_bundle(2)) == "applied"
    asleep = await register(service, "13900000001")
    awake = await register(service, "13900000002")
    elsewhere = await register(service, "13900000003")
    _told(service, asleep, segments=[TillSegment(segment_id="seg-win", name="冬季唤醒")],
          stage="sleeping", rfm_group="LHH", hq_tags=["vip"])
    _told(service, awake, segments=[TillSegment(segment_id="seg-win", name="冬季唤醒")],
          stage="active")
    _told(service, elsewhere, stage="sleeping")

    totals = {}
    for who, m in (("asleep", asleep), ("awake", awake), ("elsewhere", elsewhere)):
        sold = await sell(service, [("A", "grocery", 1, 10_000)], member_id=m["member_id"])
        totals[who] = sold["total"]
    assert totals["asleep"] == totals["awake"] - 1_000  # 10 % of the grocery line
    assert totals["awake"] == totals["elsewhere"]

    # The cashier sees what HQ knows of the member on identification.
    shown = (await client.get(f"/v1/members/{asleep['member_id']}")).json()
    assert (shown["segments"], shown["stage"], shown["rfm_group"], shown["hq_tags"]) == (
        [{"segment_id": "seg-win", "name": "冬季唤醒"}], "sleeping", "LHH", ["vip"])

    # Woken up (the next directory page says so): the offer no longer applies.
    _told(service, asleep, segments=[TillSegment(segment_id="seg-win", name="冬季唤醒")],
          stage="reactivated")
    again = await sell(service, [("A", "grocery", 1, 10_000)], member_id=asleep["member_id"])
    assert again["total"] == totals["awake"]


def test_an_audience_holds_only_members_matching_every_list() -> None:
    aud = Audience(segments=["s1", "s2"], tags=["vip"], rfm_groups=["HHH"])
    assert aud.holds(Targeting(segments=frozenset({"s2"}), tags=frozenset({"vip", "x"}),
                               rfm_group="HHH"))
    assert not aud.holds(Targeting(segments=frozenset({"s2"}), tags=frozenset({"vip"}),
                                   rfm_group="HLH"))
    assert not aud.holds(Targeting(tags=frozenset({"vip"}), rfm_group="HHH"))
    with pytest.raises(ValidationError, match="an audience names"):
        Audience()
    with pytest.raises(ValidationError):
        Audience(stages=["asleep"])  # type: ignore[list-item]
    campaign = Campaign.model_validate({
        "campaign_id": "c", "name": "n", "members_only": False, "audience": {"tags": ["vip"]},
        "rule": {"kind": "spend_threshold_off", "threshold": 100, "off": 10}})
    assert not campaign.eligible(None)  # a walk-in is in no audience
    assert campaign.eligible("standard", Targeting(tags=frozenset({"vip"})))
    # A campaign without one serialises as before audiences (its bundle's signature holds).
    plain = Campaign.model_validate({"campaign_id": "c", "name": "n", "rule": {
        "kind": "spend_threshold_off", "threshold": 100, "off": 10}})
    assert "audience" not in plain.model_dump(mode="json")


async def test_a_campaign_holds_out_the_members_the_hub_draws(service: EdgeService) -> None:
    """A campaign's ``holdout_percent``: the till draws who is held out exactly as the hub
    does (``protocol.holdout``), offline; held-out members pay full price, the rest get the
    offer; a refund reprices on the same draw."""
    from protocol.holdout import held_out

    data = demo.demo_bundle().model_dump(mode="json")
    data["version"] = 3
    data["campaigns"].append({
        "campaign_id": "half-out", "name": "五折 with a holdout", "priority": 50,
        "holdout_percent": 50,
        "rule": {"kind": "category_percent_off", "categories": ["grocery"],
                 "percent_bp": 5_000}})
    assert await service.apply_bundle(CampaignBundle.model_validate(data)) == "applied"
    paid: dict[bool, set[int]] = {True: set(), False: set()}
    for i in range(20):
        m = await register(service, f"139000010{i:02d}")
        sold = await sell(service, [("A", "grocery", 1, 10_000)], member_id=m["member_id"])
        paid[held_out("half-out", m["member_id"], 50)].add(sold["total"])
    assert paid[True] and paid[False]  # 20 members: both groups drawn (p = 1 - 2**-19)
    assert max(paid[False]) < min(paid[True])  # the treated got the offer, the held out not
    # The campaign as signed before holdouts: no field, the same bytes.
    plain = Campaign.model_validate({"campaign_id": "c", "name": "n", "rule": {
        "kind": "category_percent_off", "categories": ["grocery"], "percent_bp": 100}})
    assert "holdout_percent" not in plain.model_dump(mode="json")
    with pytest.raises(ValidationError):
        Campaign.model_validate({**plain.model_dump(mode="json"), "holdout_percent": 60})
