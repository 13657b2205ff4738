from __future__ import annotations

import json
import tomllib
from datetime import UTC, date, datetime
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from protocol.campaigns import (
    BirthdayGiftRule,
    Campaign,
    CampaignBundle,
    CategoryPercentOff,
    EarnPoints,
    PointsRedemption,
    SpendThresholdOff,
    TierDiscount,
    TopupBonus,
)
from protocol.money import Rounding

BUNDLE_TOML = """
version = 3
scope = "region"
scope_id = "east"
issued_at = 2026-01-01T08:00:00Z

[[campaigns]]
campaign_id = "earn-base"
name = "1 point per yuan"
[campaigns.rule]
kind = "earn_points"
points = 1
per_amount = 100
excluded_categories = ["tobacco"]
category_rates = { fresh = [2, 100] }
tier_multipliers = { gold = 15000 }

[[campaigns]]
campaign_id = "mj-300-30"
name = "满300减30"
members_only = false
priority = 50
starts_on = 2026-03-01
ends_on = 2026-03-31
[campaigns.rule]
kind = "spend_threshold_off"
threshold = 30000
off = 3000
repeat = true

[[campaigns]]
campaign_id = "bday"
name = "Birthday"
tiers = ["gold", "silver"]
[campaigns.rule]
kind = "birthday_gift"
points = 0
window = "week"
coupon = { kind = "amount_off", value = 2000, min_spend = 10000, valid_days = 14 }
"""


def campaign(rule: dict[str, Any], **fields: Any) -> Campaign:
    return Campaign.model_validate({"campaign_id": "c1", "name": "C1", "rule": rule, **fields})


def bundle(**fields: Any) -> CampaignBundle:
    base: dict[str, Any] = {"version": 1, "scope": "fleet",
                            "issued_at": "2026-01-01T00:00:00+00:00", "campaigns": []}
    return CampaignBundle.model_validate({**base, **fields})


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


# --- parsing ---------------------------------------------------------------------------------


def test_bundle_from_toml() -> None:
    b = CampaignBundle.model_validate(tomllib.loads(BUNDLE_TOML))
    assert (b.version, b.scope, b.scope_id) == (3, "region", "east")
    assert b.issued_at == datetime(2026, 1, 1, 8, tzinfo=UTC)
    earn, mj, bday = b.campaigns
    assert isinstance(earn.rule, EarnPoints)
    assert earn.rule.category_rates == {"fresh": (2, 100)}
    assert earn.rule.rounding is Rounding.DOWN and earn.rule.expires_after_days == 365
    assert earn.members_only is True and earn.priority == 100 and earn.tiers is None
    assert isinstance(mj.rule, SpendThresholdOff) and mj.rule.repeat and mj.rule.categories is None
    assert (mj.starts_on, mj.ends_on, mj.members_only) == (date(2026, 3, 1), date(2026, 3, 31),
                                                           False)
    assert isinstance(bday.rule, BirthdayGiftRule)
    assert bday.rule.coupon is not None and bday.rule.coupon.valid_days == 14
    assert bday.tiers == ["gold", "silver"]


def test_bundle_json_round_trip() -> None:
    b = CampaignBundle.model_validate(tomllib.loads(BUNDLE_TOML))
    text = b.model_dump_json()
    assert CampaignBundle.model_validate_json(text) == b
    assert CampaignBundle.model_validate(json.loads(text)) == b
    assert CampaignBundle.model_validate(b.model_dump()) == b


def test_every_rule_kind_parses_with_its_defaults() -> None:
    rules: list[tuple[dict[str, Any], type]] = [
        ({"kind": "earn_points"}, EarnPoints),
        ({"kind": "spend_threshold_off", "threshold": 100, "off": 100}, SpendThresholdOff),
        ({"kind": "category_percent_off", "categories": ["a"], "percent_bp": 0},
         CategoryPercentOff),
        ({"kind": "tier_discount", "tiers": {"gold": 10_000}}, TierDiscount),
        ({"kind": "birthday_gift", "points": 5}, BirthdayGiftRule),
        ({"kind": "topup_bonus", "tiers": [{"min_topup": 1, "bonus": 0}]}, TopupBonus),
        ({"kind": "points_redemption", "points_per_unit": 1, "unit_value": 1},
         PointsRedemption),
    ]
    for rule, cls in rules:
        assert type(campaign(rule).rule) is cls
    assert campaign(rules[2][0]).rule.rounding is Rounding.HALF_UP  # type: ignore[union-attr]
    redemption = campaign(rules[6][0]).rule
    assert isinstance(redemption, PointsRedemption)
    assert (redemption.max_share_bp, redemption.min_points) == (10_000, 0)
    assert campaign(rules[4][0]).rule.window == "day"  # type: ignore[union-attr]


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "free_lunch"}, "does not match any of the expected tags"),
        ({"points": 1}, "Unable to extract tag using discriminator 'kind'"),
        ({"kind": "earn_points", "points": -1}, "greater than or equal to 0"),
        ({"kind": "earn_points", "per_amount": 0}, "greater than 0"),
        ({"kind": "earn_points", "points": 1.5}, "valid integer"),
        ({"kind": "earn_points", "points": True}, "valid integer"),
        ({"kind": "earn_points", "points": "1"}, "valid integer"),
        ({"kind": "earn_points", "category_rates": {"a": [1, 0]}}, "greater than 0"),
        ({"kind": "earn_points", "category_rates": {"a": [1]}}, "category_rates.a"),
        ({"kind": "earn_points", "tier_multipliers": {"gold": -1}}, "tier_multipliers.gold"),
        ({"kind": "earn_points", "expires_after_days": 0}, "greater than or equal to 1"),
        ({"kind": "earn_points", "rounding": "nearest"}, "rounding"),
        ({"kind": "earn_points", "category_rates": {"a": [1, 100]},
          "excluded_categories": ["a"]}, "both excluded and given a rate"),
        ({"kind": "earn_points", "bonus": 1}, "Extra inputs are not permitted"),
        ({"kind": "spend_threshold_off", "threshold": 100, "off": 101}, "must not exceed"),
        ({"kind": "spend_threshold_off", "threshold": 0, "off": 0}, "greater than 0"),
        ({"kind": "spend_threshold_off", "threshold": 100, "off": -5}, "greater than 0"),
        ({"kind": "spend_threshold_off", "threshold": 100.0, "off": 10}, "valid integer"),
        ({"kind": "spend_threshold_off", "threshold": 100, "off": 10, "categories": []},
         "must not be empty"),
        ({"kind": "category_percent_off", "categories": ["a"], "percent_bp": 10_001},
         "less than or equal to 10000"),
        ({"kind": "category_percent_off", "categories": ["a"], "percent_bp": -1},
         "greater than or equal to 0"),
        ({"kind": "category_percent_off", "categories": [], "percent_bp": 10}, "at least 1"),
        ({"kind": "category_percent_off", "categories": ["a", "a"], "percent_bp": 10},
         "twice"),
        ({"kind": "tier_discount", "tiers": {}}, "at least 1"),
        ({"kind": "tier_discount", "tiers": {"gold": 20_000}}, "less than or equal to 10000"),
        ({"kind": "birthday_gift"}, "needs points above zero, a coupon, or both"),
        ({"kind": "birthday_gift", "points": 1, "window": "year"}, "window"),
        ({"kind": "birthday_gift", "coupon": {"kind": "percent_off", "value": 10_001}},
         "basis points"),
        ({"kind": "birthday_gift", "coupon": {"kind": "cash", "value": 1}}, "coupon.kind"),
        ({"kind": "birthday_gift", "coupon": {"kind": "amount_off", "value": 0}},
         "greater than 0"),
        ({"kind": "topup_bonus", "tiers": []}, "at least 1"),
        ({"kind": "topup_bonus", "tiers": [{"min_topup": 100, "bonus": -1}]},
         "greater than or equal to 0"),
        ({"kind": "topup_bonus", "tiers": [{"min_topup": 100, "bonus": 1},
                                           {"min_topup": 100, "bonus": 2}]}, "same min_topup"),
        ({"kind": "points_redemption", "points_per_unit": 0, "unit_value": 1}, "greater than 0"),
        ({"kind": "points_redemption", "points_per_unit": 1, "unit_value": 1,
          "max_share_bp": 10_001}, "less than or equal to 10000"),
        ({"kind": "points_redemption", "points_per_unit": 1, "unit_value": 1, "min_points": -1},
         "greater than or equal to 0"),
    ],
)
def test_bad_rules_are_refused_with_a_clear_message(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        campaign(rule)
    assert message in error_text(exc)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"starts_on": "2026-03-02", "ends_on": "2026-03-01"}, "ends (2026-03-01) before it"),
        ({"tiers": []}, "tiers must not be empty"),
        ({"tiers": ["gold", "gold"]}, "twice"),
        ({"campaign_id": ""}, "campaign_id"),
        ({"campaign_id": "x" * 65}, "campaign_id"),
        ({"priority": 1.5}, "priority"),
        ({"members_only": "maybe"}, "members_only"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_campaign_fields_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        campaign({"kind": "earn_points"}, **fields)
    assert message in error_text(exc)


def test_a_one_day_campaign_is_valid() -> None:
    c = campaign({"kind": "earn_points"}, starts_on="2026-03-08", ends_on="2026-03-08")
    assert c.active_on(date(2026, 3, 8))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scope": "store"}, "needs a scope_id"),
        ({"scope": "region", "scope_id": None}, "needs a scope_id"),
        ({"scope": "fleet", "scope_id": "east"}, "a fleet bundle has no scope_id"),
        ({"scope": "planet", "scope_id": "earth"}, "scope"),
        ({"version": 0}, "greater than or equal to 1"),
        ({"version": "2"}, "valid integer"),
        ({"issued_at": "2026-01-01T00:00:00"}, "timezone"),
        ({"campaigns": [{"campaign_id": "a", "name": "A", "rule": {"kind": "earn_points"}},
                        {"campaign_id": "a", "name": "B", "rule": {"kind": "earn_points"}}]},
         "lists 'a' twice"),
        ({"signature": 5}, "signature"),
    ],
)
def test_bad_bundles_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        bundle(**fields)
    assert message in error_text(exc)


def test_models_are_frozen() -> None:
    c = campaign({"kind": "earn_points"})
    with pytest.raises(ValidationError):
        c.priority = 1  # type: ignore[misc]


# --- when and for whom -----------------------------------------------------------------------


def test_active_on_is_inclusive_at_both_ends() -> None:
    c = campaign({"kind": "earn_points"}, starts_on="2026-03-01", ends_on="2026-03-31")
    assert [c.active_on(date(2026, 3, d)) for d in (1, 15, 31)] == [True, True, True]
    assert not c.active_on(date(2026, 2, 28))
    assert not c.active_on(date(2026, 4, 1))
    open_ended = campaign({"kind": "earn_points"}, starts_on="2026-03-01")
    assert open_ended.active_on(date(2099, 1, 1)) and not open_ended.active_on(date(2026, 2, 1))
    assert campaign({"kind": "earn_points"}).active_on(date(1999, 1, 1))


def test_eligible_by_tier_and_membership() -> None:
    members = campaign({"kind": "earn_points"})
    assert members.eligible("standard") and not members.eligible(None)
    everyone = campaign({"kind": "earn_points"}, members_only=False)
    assert everyone.eligible(None) and everyone.eligible("gold")
    gold = campaign({"kind": "earn_points"}, tiers=["gold"], members_only=False)
    assert gold.eligible("gold") and not gold.eligible("silver") and not gold.eligible(None)


# --- signing bytes ---------------------------------------------------------------------------


def test_signing_bytes_are_sorted_msgpack_without_the_signature() -> None:
    b = CampaignBundle.model_validate(tomllib.loads(BUNDLE_TOML))
    raw = b.signing_bytes()
    data = msgpack.unpackb(raw, raw=False)
    assert "signature" not in data
    assert list(data) == sorted(data)
    assert list(data["campaigns"][0]) == sorted(data["campaigns"][0])
    assert list(data["campaigns"][0]["rule"]) == sorted(data["campaigns"][0]["rule"])
    assert data["issued_at"] == "2026-01-01T08:00:00Z"
    assert data["campaigns"][1]["starts_on"] == "2026-03-01"
    assert CampaignBundle.model_validate(data) == b  # the signed content is the whole bundle


def test_signing_bytes_ignore_the_signature_and_the_input_key_order() -> None:
    doc = tomllib.loads(BUNDLE_TOML)
    b = CampaignBundle.model_validate(doc)
    signed = b.model_copy(update={"signature": "c2lnbmF0dXJl"})
    assert signed.signing_bytes() == b.signing_bytes()

    def reverse_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse_keys(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse_keys(v) for v in value]
        return value

    doc["campaigns"][0]["rule"]["tier_multipliers"] = {"silver": 12_000, "gold": 15_000}
    a = CampaignBundle.model_validate(doc)
    z = CampaignBundle.model_validate(reverse_keys(doc))
    assert list(a.campaigns[0].rule.tier_multipliers) != list(  # type: ignore[union-attr]
        z.campaigns[0].rule.tier_multipliers)  # type: ignore[union-attr]
    assert a.signing_bytes() == z.signing_bytes()


def test_signing_bytes_change_with_any_content() -> None:
    doc = tomllib.loads(BUNDLE_TOML)
    base = CampaignBundle.model_validate(doc).signing_bytes()
    doc["campaigns"][1]["rule"]["off"] = 3_001
    assert CampaignBundle.model_validate(doc).signing_bytes() != base
    doc = tomllib.loads(BUNDLE_TOML)
    doc["version"] = 4
    assert CampaignBundle.model_validate(doc).signing_bytes() != base
