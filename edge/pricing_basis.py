"""What a sale was priced with, kept with it, so that a partial refund can price what the
customer keeps: the store-local day, the member's tier, birthday and targeting (what campaigns
with an audience saw of them), the campaigns that gave a discount and the coupons applied
(``protocol.pricing.evaluate``'s inputs).

Only the campaigns that gave a discount are kept. A rule that gave none on the whole basket
gives none on part of it: a 满减 threshold (``spend_threshold_off``) the basket did not reach is
not reached by fewer items; a category or tier discount applies line by line, so a line kept
gets what it got (and a rule that found no line of its category finds none among fewer); a
coupon that did not apply was refused at the sale. Earning and birthday rules do not price.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from protocol import pricing
from protocol.campaigns import Campaign, Targeting
from protocol.pricing import BasketLine, CouponSpec, MemberContext, Quote


@dataclass(frozen=True)
class Basis:
    day: date
    member: MemberContext | None
    campaigns: list[Campaign]
    coupons: list[CouponSpec]


def dumps(quote: Quote, campaigns: list[Campaign], member: MemberContext | None, day: date,
          specs: list[CouponSpec]) -> str:
    used = {d.campaign_id for d in quote.discounts if d.campaign_id is not None}
    codes = {d.coupon_code for d in quote.discounts if d.coupon_code is not None}
    data: dict[str, Any] = {
        "day": day.isoformat(),
        "member": None if member is None else {
            "tier": member.tier,
            "birthday": member.birthday.isoformat() if member.birthday else None,
            "targeting": {"tags": sorted(member.targeting.tags),
                          "segments": sorted(member.targeting.segments),
                          "rfm_group": member.targeting.rfm_group,
                          "stage": member.targeting.stage,
                          "member_id": member.targeting.member_id}},
        "campaigns": [c.model_dump(mode="json") for c in campaigns if c.campaign_id in used],
        "coupons": [{**asdict(s), "categories": list(s.categories)} for s in specs
                    if s.code in codes],
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> Basis:
    data = json.loads(text)
    m = data["member"]
    t = (m or {}).get("targeting") or {}  # a sale priced before audiences has none
    member = None if m is None else MemberContext(
        tier=m["tier"], birthday=date.fromisoformat(m["birthday"]) if m["birthday"] else None,
        targeting=Targeting(tags=frozenset(t.get("tags", ())),
                            segments=frozenset(t.get("segments", ())),
                            rfm_group=t.get("rfm_group"), stage=t.get("stage"),
                            member_id=t.get("member_id")))
    return Basis(day=date.fromisoformat(data["day"]), member=member,
                 campaigns=[Campaign.model_validate(c) for c in data["campaigns"]],
                 coupons=[CouponSpec(**{**c, "categories": tuple(c["categories"])})
                          for c in data["coupons"]])


def total_of(basis: Basis, lines: list[BasketLine]) -> int:
    """What ``lines`` cost under the sale's pricing (0 for none)."""
    if not lines:
        return 0
    return pricing.evaluate(lines, basis.campaigns, basis.member, basis.day,
                            basis.coupons).total
