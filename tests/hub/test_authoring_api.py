"""The HQ API's authoring routes over a hub with the demo chain's history (six stores in two
regions, a user of every role): campaign bundles listed, previewed and pushed, each within the
caller's scope; journeys previewed exactly as saving them would check them, with nothing saved.
The figures a preview answers are checked against what the test computes on its own: the
stores of a region from the chain it wrote, a sample basket's total by hand and against the
bundles a till of that store would hold, a birthday journey's entrants from the birthdays."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from hub.api.app import create_app
from hub.app import Hub
from hub.auth import passwords, tokens, users
from hub.automation import examples as journey_examples
from hub.campaigns import examples as campaign_examples
from hub.config import HubConfig
from hub.core.clock import now_ms
from hub.core.db import Tx
from protocol import pricing, signing, topics
from protocol.campaigns import Campaign, CampaignBundle, active_campaigns
from protocol.pricing import BasketLine, MemberContext
from provisioning import demo_history
from provisioning.demo_history import STORES, Chain

EAST = sorted(s for s, _n, r in STORES if r == "east")


@dataclass
class Authoring:
    hub: Hub
    client: httpx.AsyncClient
    chain: Chain
    tokens: dict[str, str]

    def who(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}


@pytest.fixture
async def hq(tmp_path: Path, hub_url: str) -> AsyncIterator[Authoring]:
    """On SQLite and on PostgreSQL (where row-level security binds each caller's reads)."""
    cfg = HubConfig.model_validate({"hub": {"database": hub_url,
                                            "data_dir": str(tmp_path), "validate_workers": 0},
                                    "broker": {"embedded_port": 0}})
    async with Hub(cfg) as hub:
        chain = await demo_history.seed(hub.db, members=60, days=120)
        secret = passwords.hash_password("east editor 1")

        def people(tx: Tx) -> dict[str, str]:
            # A role the chain made itself: marketing for one region, held to its stores.
            tx.execute("INSERT INTO roles(role, permissions, scope, masked) VALUES (?, ?, ?, ?)",
                       ("region_marketing", '["campaigns.push", "reports.read"]', "regions", 1))
            users.add(tx, username="east.mkt", role="region_marketing", password_hash=secret,
                      now_ms=1, regions=["east"])
            return {u: tokens.issue(tx, u, "test", now_ms())[1]
                    for u in ("admin", "mkt", "s001", "east", "east.mkt")}

        issued = await hub.db.transaction(people)
        await hub.reload_access()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)),
                                     base_url="http://hq") as client:
            yield Authoring(hub, client, chain, issued)


def _bundle(scope: str, scope_id: str | None, version: int, *kinds: str,
            generation: int = 0) -> dict[str, Any]:
    return {"version": version, "generation": generation, "scope": scope, "scope_id": scope_id,
            "issued_at": datetime.now(ZoneInfo("Asia/Shanghai")).isoformat(),
            "campaigns": [copy.deepcopy(campaign_examples.EXAMPLES[k]) for k in kinds]}


BASKET = {"lines": [{"sku": "6900000000012", "category": "grocery", "qty": 7,
                     "unit_price": 4_990},
                    {"sku": "6905555000017", "category": "fresh", "qty": 3, "unit_price": 800}],
          "tier": "gold"}


def _quote_here(bundles: list[dict[str, Any]], day: date) -> pricing.Quote:
    """The basket priced with ``bundles`` as a till holding them prices it."""
    lines = [BasketLine(i, ln["sku"], ln["category"], ln["qty"], ln["unit_price"])
             for i, ln in enumerate(BASKET["lines"], start=1)]  # type: ignore[arg-type]
    campaigns = active_campaigns([CampaignBundle.model_validate(b) for b in bundles])
    return pricing.evaluate(lines, campaigns, MemberContext(tier="gold", birthday=None), day)


async def test_bundles_are_previewed_pushed_listed_and_held_to_the_callers_scope(
        hq: Authoring) -> None:
    c, mkt = hq.client, hq.who("mkt")
    assert (await c.get("/v1/campaigns", headers=mkt)).json() == []
    # An invalid bundle: pydantic's errors, each naming its path, in the API's 422 shape.
    bad = _bundle("region", "east", 1, "spend_threshold_off", "category_percent_off")
    bad["campaigns"][0]["rule"]["off"] = 40_000  # more than its threshold
    bad["campaigns"][1]["rule"]["percent_bp"] = "20"  # a share is a strict int
    r = await c.post("/v1/campaigns/preview", json={"bundle": bad}, headers=mkt)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
    paths = [".".join(e["loc"]) for e in r.json()["error"]["details"]["errors"]]
    assert any(p.startswith("body.bundle.campaigns.0.rule.spend_threshold_off") for p in paths)
    assert "body.bundle.campaigns.1.rule.category_percent_off.percent_bp" in paths
    # A valid one: nothing held yet, the stores of the region, every campaign added; the
    # basket (7 x 49.90 grocery, 3 x 8.00 fresh, a gold member): fresh 20 % off 24.00 is
    # 4.80, the 36,850 left reaches 满300 once: 30.00 off. 37,330 - 480 - 3,000 = 33,850.
    east = _bundle("region", "east", 1, "spend_threshold_off", "category_percent_off",
                   "earn_points")
    r = await c.post("/v1/campaigns/preview", json={"bundle": east, "basket": BASKET},
                     headers=mkt)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["stores"] == EAST and seen["refusal"] is None
    assert (seen["held_version"], seen["next_generation"], seen["next_version"]) == (None, 0, 1)
    assert seen["changes"]["added"] == ["earn-base", "fresh-20", "mj-300-30"]
    assert seen["basket"]["store_id"] == EAST[0]
    assert (seen["basket"]["subtotal"], seen["basket"]["discount_total"],
            seen["basket"]["total"]) == (37_330, 3_480, 33_850)
    assert seen["basket"]["points_earned"] > 0  # the earn rule, 1.5x for gold
    assert await hq.hub.db.read(lambda tx: tx.scalar(
        "SELECT count(*) FROM campaign_bundles")) == 0  # a preview signs and keeps nothing
    # Published, it is listed as the stores got it: decoded from the signed manifest.
    r = await c.post("/v1/campaigns", json=east, headers=mkt)
    assert r.status_code == 201 and r.json()["topic"] == topics.region_campaigns("east"), r.text
    listed = (await c.get("/v1/campaigns", headers=mkt)).json()
    assert [(b["scope"], b["scope_id"], b["version"]) for b in listed] == [
        ("region", "east", 1)]
    assert listed[0]["key_id"] == signing.key_id(hq.hub.key)
    assert [x["campaign_id"] for x in listed[0]["campaigns"]] == [
        "mj-300-30", "fresh-20", "earn-base"]
    one = (await c.get("/v1/campaigns/region/east", headers=mkt)).json()
    assert one == listed[0]
    assert (await c.get("/v1/campaigns/fleet/-", headers=mkt)).status_code == 404
    # A fleet bundle next: what the east stores' tills run is both, and a preview prices the
    # basket with both (the fleet's tier prices too), the region's replaced by the new one.
    fleet = _bundle("fleet", None, 1, "tier_discount")
    assert (await c.post("/v1/campaigns", json=fleet, headers=mkt)).status_code == 201
    assert (await c.get("/v1/campaigns/fleet/-", headers=mkt)).json()["scope_id"] is None
    v2 = _bundle("region", "east", 2, "spend_threshold_off", "category_percent_off",
                 "birthday_gift")
    v2["campaigns"][0]["rule"]["off"] = 5_000
    r = await c.post("/v1/campaigns/preview", json={"bundle": v2, "basket": {
        **BASKET, "store_id": "S002"}}, headers=mkt)
    seen = r.json()
    assert seen["changes"] == {"added": ["birthday-gift"], "removed": ["earn-base"],
                               "changed": ["mj-300-30"], "unchanged": ["fresh-20"]}
    assert (seen["held_version"], seen["next_version"], seen["refusal"]) == (1, 2, None)
    till = _quote_here([fleet, v2], date.fromisoformat(seen["basket"]["day"]))
    assert seen["basket"]["total"] == till.total < 33_850 - 2_000  # tier price, 50 off
    assert seen["basket"]["campaigns"] == [
        "birthday-gift", "fresh-20", "mj-300-30", "tier-price"]
    # The same version again: a preview says the push would be refused, the push is 409 and
    # nothing changes (the held bundle, its campaigns); the refusal is in the audit log.
    stale = {**v2, "version": 1}
    r = await c.post("/v1/campaigns/preview", json={"bundle": stale}, headers=mkt)
    assert r.json()["refusal"]["code"] == "stale_version"
    r = await c.post("/v1/campaigns", json=stale, headers=mkt)
    assert r.status_code == 409 and r.json()["error"]["code"] == "stale_version"
    assert (await c.get("/v1/campaigns/region/east", headers=mkt)).json() == one
    log = (await c.get("/v1/audit-log", headers=hq.who("admin"))).json()
    pushes = [(e["username"], e["subject"], e["outcome"]) for e in log
              if e["action"] == "bundle.push"]
    assert ("mkt", topics.region_campaigns("east"), "stale_version") in pushes
    assert ("mkt", topics.FLEET_CAMPAIGNS, "ok") in pushes
    # Unknown places: 422 naming the scope's id; a store manager may not push or preview.
    for scope, scope_id, code in (("region", "north", "unknown_region"),
                                  ("store", "S999", "unknown_store")):
        r = await c.post("/v1/campaigns/preview", json={
            "bundle": _bundle(scope, scope_id, 1)}, headers=mkt)
        assert (r.status_code, r.json()["error"]["code"]) == (422, code)
        assert r.json()["error"]["details"]["part"] == "scope_id"
    s004 = _bundle("store", "S004", 1, "topup_bonus")
    for path, body in (("/v1/campaigns", s004), ("/v1/campaigns/preview", {"bundle": s004})):
        r = await c.post(path, json=body, headers=hq.who("s001"))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    assert (await c.post("/v1/campaigns", json=s004, headers=hq.who("admin"))).status_code == 201
    # A store manager sees the bundles that reach their store, not another store's.
    mine = (await c.get("/v1/campaigns", headers=hq.who("s001"))).json()
    assert [(b["scope"], b["scope_id"]) for b in mine] == [("fleet", None), ("region", "east")]
    assert (await c.get("/v1/campaigns/store/S004", headers=hq.who("s001"))).status_code == 404
    assert (await c.get("/v1/campaigns/store/S004", headers=mkt)).status_code == 200
    # A pusher whose scope is one region targets its stores and the region, nothing else.
    em = hq.who("east.mkt")
    for bundle in (_bundle("fleet", None, 9), _bundle("region", "south", 1),
                   _bundle("store", "S004", 2)):
        r = await c.post("/v1/campaigns", json=bundle, headers=em)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "bundle_out_of_scope"), r.text
    assert (await c.post("/v1/campaigns", json=_bundle("store", "S001", 1),
                         headers=em)).status_code == 201
    r = await c.post("/v1/campaigns/preview", json={"bundle": _bundle("region", "east", 2)},
                     headers=em)
    assert r.status_code == 200 and r.json()["stores"] == EAST, r.text
    held = await hq.hub.db.read(lambda tx: tx.all(
        "SELECT scope, scope_id, version FROM campaign_bundles ORDER BY scope, scope_id"))
    assert [tuple(h) for h in held] == [("fleet", "", 1), ("region", "east", 1),
                                        ("store", "S001", 1), ("store", "S004", 1)]
    # A campaign's effect is still its own route, not a bundle's scope "mj-300-30": pushed
    # today, the campaign has no day to measure yet, and the effect route says so.
    r = await c.get("/v1/campaigns/mj-300-30/effect", headers=mkt)
    assert r.json()["error"]["code"] == "bad_window", r.text


def _birthdays_within(birthdays: list[str], today: date, days: int) -> int:
    """Members whose next birthday falls within ``days`` of ``today`` (29 February counted on
    the 28th in a common year), written out apart from the engine's own."""
    count = 0
    for text in birthdays:
        born = date.fromisoformat(text)
        for n in range(days + 1):
            day = today + timedelta(days=n)
            if (day.month, day.day) == (born.month, born.day) or (
                    (born.month, born.day) == (2, 29) and (day.month, day.day) == (2, 28)
                    and day.year % 4 != 0):
                count += 1
                break
    return count


async def test_journey_preview_checks_as_saving_does_and_saves_nothing(hq: Authoring) -> None:
    c, mkt = hq.client, hq.who("mkt")

    def saved(tx: Tx) -> tuple[int, int]:
        return (tx.scalar("SELECT count(*) FROM journeys"),
                tx.scalar("SELECT count(*) FROM journey_versions"))

    before = await hq.hub.db.read(saved)
    answers = {}
    for key, example in journey_examples.checked().items():
        r = await c.post("/v1/journeys/preview", json=example, headers=mkt)
        assert r.status_code == 200, (key, r.text)
        answers[key] = r.json()
    wake = answers["wake_up"]
    assert wake["trigger"] == {"kind": "stage", "stage": "sleeping"}
    assert [s["kind"] for s in wake["steps"]] == ["coupon", "message", "wait", "points"]
    assert (wake["channels"], wake["holdout_percent"], wake["would_enter"]) == (
        ["store"], 20, None)  # follows lifecycle changes as they come: no count ahead
    assert isinstance(answers["points_expiring"]["would_enter"], int)
    # A birthday 60 days ahead: the members the engine's first look would take, counted here.
    today = hq.hub.keeper.today()
    wide = {**journey_examples.EXAMPLES["birthday"], "trigger": {
        "kind": "birthday", "days_before": 60}}
    r = await c.post("/v1/journeys/preview", json=wide, headers=mkt)
    birthdays = await hq.hub.db.read(lambda tx: [str(b) for (b,) in tx.all(
        "SELECT birthday FROM members WHERE birthday IS NOT NULL AND merged_into IS NULL"
        " AND erased = 0")])
    assert r.json()["would_enter"] == _birthdays_within(birthdays, today, 60) > 0
    # A segment trigger tells the segment's size today.
    segment = await hq.hub.db.read(lambda tx: tx.one(
        "SELECT s.segment_id, count(m.member_id) FROM segments s LEFT JOIN segment_members m"
        " ON m.segment_id = s.segment_id GROUP BY s.segment_id"))
    r = await c.post("/v1/journeys/preview", headers=mkt, json={
        **journey_examples.EXAMPLES["wake_up"], "trigger": {"kind": "segment",
                                                            "segment_id": segment[0]}})
    assert r.json()["segment_members"] == segment[1] and r.json()["would_enter"] is None
    # Refused as saving would refuse it, naming the part; nothing is saved either way.
    unknown = copy.deepcopy(journey_examples.EXAMPLES["after_purchase"])
    unknown["actions"][1]["text"] = "{shoe_size}"
    sms = copy.deepcopy(journey_examples.EXAMPLES["after_purchase"])
    sms["actions"][1]["channel"] = "sms"
    for body, status, code, says in (
            (unknown, 422, "bad_journey", "actions[1].message.text"),
            (sms, 422, "bad_message", "'sms' is not configured"),
            ({**wide, "name": demo_history.BIRTHDAY_JOURNEY["name"]}, 409, "journey_exists",
             demo_history.BIRTHDAY_JOURNEY["name"])):
        r = await c.post("/v1/journeys/preview", json=body, headers=mkt)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        assert says in r.json()["error"]["message"]
    assert await hq.hub.db.read(saved) == before
    # A new version's preview: its own name is no clash, another trigger kind is refused.
    journey = (await c.get("/v1/journeys", headers=mkt)).json()[0]
    again = await c.post(f"/v1/journeys/{journey['journey_id']}/preview",
                         json=journey["definition"], headers=mkt)
    assert again.status_code == 200, again.text
    r = await c.post(f"/v1/journeys/{journey['journey_id']}/preview", headers=mkt,
                     json={**journey["definition"], "trigger": {"kind": "registered"}})
    assert r.json()["error"]["code"] == "trigger_changed"
    assert (await c.post("/v1/journeys/preview", json=wide,
                         headers=hq.who("s001"))).status_code == 403
    assert await hq.hub.db.read(saved) == before


def test_every_rule_kind_has_an_example_and_every_example_validates() -> None:
    kinds = campaign_examples.rule_kinds()
    assert sorted(campaign_examples.EXAMPLES) == sorted(kinds)
    for kind, example in campaign_examples.EXAMPLES.items():
        assert Campaign.model_validate(example).rule.kind == kind
    assert json.loads(json.dumps(journey_examples.checked())) == journey_examples.EXAMPLES
