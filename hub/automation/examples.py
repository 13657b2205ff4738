"""The four journeys a chain asks for first, as the console's editor offers them: a birthday
gift, a coupon after a purchase, an offer to wake sleeping members, a reminder before points
expire. Each is a valid ``JourneyDefinition`` as it stands (a test holds them to it) that HQ
edits before saving: names, amounts (minor units), waits and texts.

Their messages go to the store's own receipt and display (channel ``store``), the one channel
every hub has; a chain with SMS or e-mail configured changes ``channel`` (and adds its
provider's ``template``)."""

from __future__ import annotations

from typing import Any

from hub.automation.definition import JourneyDefinition

EXAMPLES: dict[str, dict[str, Any]] = {
    # As the demo chain's: a coupon a week before the birthday, said at the till.
    "birthday": {
        "name": "生日礼券", "trigger": {"kind": "birthday", "days_before": 7},
        "holdout_percent": 10,
        "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 2_000,
                     "min_spend": 10_000, "valid_days": 30},
                    {"kind": "message", "channel": "store", "purpose": "marketing",
                     "text": "{name}，生日快乐！送您{coupon_value}元券，有效至{coupon_expires}"}]},
    "after_purchase": {
        "name": "购后回购券", "trigger": {"kind": "after_purchase", "hours": 2},
        "holdout_percent": 10,
        "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 500,
                     "min_spend": 5_000, "valid_days": 14},
                    {"kind": "message", "channel": "store", "purpose": "marketing",
                     "text": "感谢惠顾！下次满50元立减{coupon_value}元，券码{coupon_code}"}]},
    "wake_up": {
        "name": "沉睡唤醒", "trigger": {"kind": "stage", "stage": "sleeping"},
        "holdout_percent": 20,
        "actions": [{"kind": "coupon", "coupon_kind": "percent_off", "value": 1_500,
                     "min_spend": 3_000, "valid_days": 21},
                    {"kind": "message", "channel": "store", "purpose": "marketing",
                     "text": "{name}，好久不见！送您一张85折券，21天内有效"},
                    {"kind": "wait", "hours": 24 * 14},
                    {"kind": "points", "points": 100, "valid_days": 90}]},
    "points_expiring": {
        "name": "积分到期提醒", "trigger": {"kind": "points_expiring", "days": 30},
        "actions": [{"kind": "message", "channel": "store", "purpose": "transactional",
                     "text": "{name}，您有{points_expiring}积分将于{expiring_on}到期，"
                             "欢迎到店使用"}]},
}


def checked() -> dict[str, dict[str, Any]]:
    """The examples, each validated (a broken one fails here, not in HQ's browser)."""
    for example in EXAMPLES.values():
        JourneyDefinition.model_validate(example)
    return EXAMPLES
