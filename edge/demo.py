"""Demo data: members as if the hub had sent them down, and a campaign bundle to price with."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from edge import outbox
from edge.context import StoreContext
from protocol.campaigns import CampaignBundle
from protocol.ids import member_code, uuid7

DEMO_TIERS = ("standard", "standard", "standard", "silver", "gold")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊洋艳勇军杰娟涛明超秀霞平刚桂"


def demo_card_uid(i: int) -> str:
    """Deterministic 4-byte UIDs so a demo or a bench can tap member ``i``'s card."""
    return f"{0x04000000 + i:08X}"


def demo_phone(i: int) -> str:
    return f"+86139{i:08d}"


def seed_members(conn: sqlite3.Connection, ctx: StoreContext, count: int, *,
                 batch: int = 10_000, on_batch: Callable[[int, int], None] | None = None) -> int:
    """Insert ``count`` members with cards, points lots and stored value, in one transaction.

    These stand for members the hub already knows, so they write no outbox rows. Deterministic
    (seeded), so a bench run and its report talk about the same data.
    """
    rng = random.Random(20261122)
    start = int(outbox.meta_get(conn, "member_counter", "0") or 0)
    hlc = ctx.clock.now()
    today = ctx.today()
    expiry = date(today.year + 1, today.month, 1).isoformat()
    for lo in range(start + 1, start + count + 1, batch):
        hi = min(lo + batch, start + count + 1)
        members_rows: list[tuple[Any, ...]] = []
        cards_rows: list[tuple[Any, ...]] = []
        lots_rows: list[tuple[Any, ...]] = []
        ledger_rows: list[tuple[Any, ...]] = []
        for i in range(lo, hi):
            mid = uuid7()
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            pts = rng.randrange(0, 5000)
            principal = rng.choice((0, 0, 10_000, 50_000))
            bday = date(rng.randrange(1950, 2005), rng.randrange(1, 13), rng.randrange(1, 29))
            members_rows.append((
                mid, member_code(ctx.config.store.store_number, i), demo_phone(i), name,
                bday.isoformat(), rng.choice(DEMO_TIERS), json.dumps([]), pts, principal,
                ctx.store_id, hlc, hlc,
            ))
            cards_rows.append((demo_card_uid(i), mid, hlc))
            if pts:
                lot = uuid7()
                lots_rows.append((lot, mid, today.isoformat(), expiry, pts, pts, "migration"))
                ledger_rows.append((mid, pts, "migration", lot, None, hlc))
        conn.executemany(
            "INSERT INTO members(member_id, member_code, phone, name, birthday, tier, tags,"
            " points_balance, sv_principal, home_store, created_hlc, updated_hlc)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", members_rows)
        conn.executemany("INSERT INTO cards(card_uid, member_id, bound_hlc) VALUES (?,?,?)",
                         cards_rows)
        conn.executemany(
            "INSERT INTO point_lots(lot_id, member_id, earned_on, expires_on, points, remaining,"
            " reason) VALUES (?,?,?,?,?,?,?)", lots_rows)
        conn.executemany(
            "INSERT INTO points_ledger(member_id, delta, reason, lot_id, ref_id, hlc)"
            " VALUES (?,?,?,?,?,?)", ledger_rows)
        if on_batch is not None:  # members inserted so far, of ``count``
            on_batch(hi - start - 1, count)
        conn.executemany(
            "INSERT INTO sv_ledger(member_id, principal_delta, bonus_delta, reason, ref_id, hlc)"
            " SELECT member_id, sv_principal, 0, 'migration', 'seed', ? FROM members"
            " WHERE member_id = ? AND sv_principal > 0",
            [(hlc, r[0]) for r in members_rows if r[8]])
    outbox.meta_set(conn, "member_counter", start + count)
    return count


def demo_bundle(region: str = "east") -> CampaignBundle:
    """Five campaigns a chain might run: earning, 满减, a category promotion, tiers, top-up."""
    return CampaignBundle.model_validate({
        "version": 1,
        "scope": "fleet",
        "scope_id": None,
        "issued_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        "campaigns": [
            {
                "campaign_id": "earn-base", "name": "1 point per yuan", "members_only": True,
                "rule": {"kind": "earn_points", "points": 1, "per_amount": 100,
                         "category_rates": {"tobacco": [0, 100]},
                         "tier_multipliers": {"silver": 12_000, "gold": 15_000},
                         "expires_after_days": 365},
            },
            {
                "campaign_id": "mj-300-30", "name": "满300减30", "members_only": False,
                "rule": {"kind": "spend_threshold_off", "threshold": 30_000, "off": 3_000,
                         "repeat": True},
            },
            {
                "campaign_id": "fresh-20", "name": "Fresh produce 20% off", "members_only": True,
                "rule": {"kind": "category_percent_off", "categories": ["fresh"],
                         "percent_bp": 2_000},
            },
            {
                "campaign_id": "tier-price", "name": "Member tier prices", "members_only": True,
                "rule": {"kind": "tier_discount", "tiers": {"silver": 300, "gold": 500},
                         "excluded_categories": ["tobacco"]},
            },
            {
                "campaign_id": "topup-500-50", "name": "Top up 500 get 50", "members_only": True,
                "rule": {"kind": "topup_bonus", "tiers": [
                    {"min_topup": 50_000, "bonus": 5_000}, {"min_topup": 100_000, "bonus": 12_000},
                ]},
            },
            {
                "campaign_id": "birthday", "name": "Birthday gift", "members_only": True,
                "rule": {"kind": "birthday_gift", "points": 200, "window": "month"},
            },
            {
                "campaign_id": "redeem", "name": "100 points = 1 yuan", "members_only": True,
                "rule": {"kind": "points_redemption", "points_per_unit": 100, "unit_value": 100,
                         "max_share_bp": 5_000},
            },
        ],
    })


def demo_products() -> list[dict[str, Any]]:
    """A small catalogue with valid EAN-13 barcodes, for scanning in the demo."""
    return [
        {"sku": "6901234567892", "name": "牛奶 1L", "category": "dairy", "unit_price": 1_250},
        {"sku": "6900000000014", "name": "大米 5kg", "category": "grocery", "unit_price": 4_990},
        {"sku": "6905555000014", "name": "苹果 500g", "category": "fresh", "unit_price": 800},
        {"sku": "6901234567908", "name": "薯片", "category": "snacks", "unit_price": 650},
        {"sku": "6908888000027", "name": "洗衣液", "category": "household", "unit_price": 3_990},
        {"sku": "6907777000032", "name": "香烟", "category": "tobacco", "unit_price": 2_500},
    ]
