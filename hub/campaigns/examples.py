"""A campaign of every rule kind, as the console's editor inserts it: a starting point HQ edits
(ids, names, amounts, dates), each one valid as it stands. Money is minor units (fen), shares
basis points. ``tests/hub/test_authoring_api.py`` holds every kind of ``protocol.campaigns.Rule``
to an example here that validates."""

from __future__ import annotations

import typing
from typing import Any

from protocol.campaigns import Rule

EXAMPLES: dict[str, dict[str, Any]] = {
    "earn_points": {
        "campaign_id": "earn-base", "name": "每消费1元积1分",
        "rule": {"kind": "earn_points", "points": 1, "per_amount": 100,
                 "tier_multipliers": {"gold": 15_000}, "expires_after_days": 365}},
    "spend_threshold_off": {
        "campaign_id": "mj-300-30", "name": "满300减30", "members_only": False,
        "rule": {"kind": "spend_threshold_off", "threshold": 30_000, "off": 3_000,
                 "repeat": True}},
    "category_percent_off": {
        "campaign_id": "fresh-20", "name": "生鲜八折",
        "rule": {"kind": "category_percent_off", "categories": ["fresh"],
                 "percent_bp": 2_000}},
    "tier_discount": {
        "campaign_id": "tier-price", "name": "会员等级价",
        "rule": {"kind": "tier_discount", "tiers": {"silver": 300, "gold": 500}}},
    "birthday_gift": {
        "campaign_id": "birthday-gift", "name": "生日礼",
        "rule": {"kind": "birthday_gift", "points": 200, "window": "month",
                 "coupon": {"kind": "amount_off", "value": 2_000, "min_spend": 10_000,
                            "valid_days": 30}}},
    "topup_bonus": {
        "campaign_id": "topup-500-50", "name": "充500送50",
        "rule": {"kind": "topup_bonus", "tiers": [{"min_topup": 50_000, "bonus": 5_000},
                                                  {"min_topup": 100_000, "bonus": 12_000}]}},
    "points_redemption": {
        "campaign_id": "points-pay", "name": "100积分抵1元",
        "rule": {"kind": "points_redemption", "points_per_unit": 100, "unit_value": 100,
                 "max_share_bp": 5_000, "min_points": 1_000}},
}


def rule_kinds() -> list[str]:
    """Every rule kind the campaign language has, in its own order."""
    union = typing.get_args(Rule)[0]
    return [str(m.model_fields["kind"].default) for m in typing.get_args(union)]
