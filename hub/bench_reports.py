"""What a consolidated report costs (the issue's ``report_store_p95_ms``, ``report_chain_p95_ms``,
``report_vs_floor``): every report of ``hub.reports.catalog`` at a million members and a year of
sales at 50 stores, run as the API runs it (a reader, ``Access`` with the caller's ``Scope``; on
PostgreSQL row-level security too) for a store manager (one store), a region manager (a region of
ten stores) and an HQ admin (the chain); each against its floor: ONE bare SQL statement that
computes the report's main figure from the same rollup, for the same period and stores, read in
the same run (alternated with the report, so a noisy moment weighs on both).

The database is filled straight into the projection tables the reports read (``fill``), by the
database itself (``INSERT ... SELECT`` over small helper tables, a recursive series or
``generate_series``), not through the log: a year of a chain's events would take hours to merge
here, and the reports never read the log. The rows are synthetic but shaped like a chain's: 50
stores of different sizes in 5 regions; sales by weekday, season and hour; a catalogue of 360
skus whose sales fall off as a power law (a few sell every day, the tail now and then); cashiers
and shopping guides per store; members registered over three years at their home store (a
quarter in the last year, at a checkout), two in three buying in the year, a few very often, most
at their home store; stored value for one member in twelve; coupons for three in ten; one RFM
run. ``PARAMS`` below says what is and is not there.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hub.auth import roles, users
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.bench_scope import throwaway_postgres
from hub.core.db import HubDatabase, Tx
from hub.core.schema import (
    COUPONS_FOR_STORE,
    PURCHASE_DAYS_FROM_MEMBER_DAYS,
    migrate,
    store_members_rows,
)
from hub.members.rfm import RF_GRID, RfmParams
from hub.projections.catalog import projections
from hub.reports import catalog
from hub.reports.period import ReportQuery

ZONE = "Asia/Shanghai"  # the chain's calendar (HubConfig's default); stores keep it
TODAY = date(2026, 11, 18)  # mid-month: a year's products and staff read month and day rows
NOW_MS = int(datetime(2026, 11, 18, 20, 0, tzinfo=ZoneInfo(ZONE)).timestamp() * 1000)
RFM_AS_OF = date(2026, 10, 31)  # last month's run
REGIONS = 5
SALES_PER_STORE_DAY = 300  # an average store on an average day
REGISTERED_OVER_DAYS = 3 * 365  # members registered over the three years before the year
CASHIERS, GUIDES = 8, 6  # per store
SKUS, ZIPF = 360, 1.2  # ~200 skus sold a store-day, the top one ~200 units
CATEGORIES = (  # (name, share of the amount ‰, share of sales with a line in it ‰)
    ("alcohol", 50, 60), ("baby", 40, 40), ("bakery", 50, 150), ("dairy", 110, 300),
    ("drinks", 100, 300), ("fresh", 180, 450), ("frozen", 60, 120), ("grocery", 150, 350),
    ("household", 80, 150), ("personal_care", 70, 120), ("snacks", 90, 280),
    ("stationery", 20, 30))
HOURS = dict(zip(range(8, 22), (30, 45, 60, 80, 95, 85, 60, 55, 60, 75, 100, 105, 85, 65),
                 strict=True))  # ‰ of a day's sales
WEEKDAYS = (90, 88, 92, 95, 108, 125, 122)  # % of an average day, Monday first
MONTHS = (118, 112, 95, 92, 96, 98, 100, 102, 97, 100, 98, 110)  # % (Spring Festival, year end)
PROMOTIONS, COUPON_CAMPAIGNS = 6, 4
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊洋艳勇军杰娟涛明超秀霞平刚桂"
PRIME = 2_147_483_647  # the pseudo-random numbers' modulus (2^31 - 1: its square fits BIGINT)
SLOTS = 1024  # the helper series' length (SQLite): purchases, promotions, staff per row

# What the fill holds and what it leaves out, in the result's params.
PARAMS = {
    "today": TODAY.isoformat(), "chain_zone": ZONE,
    "history": "store_days, store_hours, daily_rollups, member_refund_days, points_days: the"
               " year and the year before (year-on-year figures read it); every other table"
               " the year; members registered over the three years before the year and in it",
    "sales_facts": "only the sale and discount rows of the sales carrying a promotion or a"
                   " coupon (about one sale in nine): a live hub's sales_facts also holds every"
                   " line and tender of every sale (sales_facts_rows_live_estimate); the"
                   " campaigns report reads the period's discount rows by a partial index"
                   " (hub schema 22), which holds only these, but joins each sale's own row"
                   " for its total, a B-tree that would be about five times larger live",
    "not_filled": "tier discounts as campaign rows, segments, member merges beyond 0.1 % of"
                  " members (kept as aliases), rollup revisions",
    "statistics": "PostgreSQL: VACUUM ANALYZE after the fill (what autovacuum keeps); SQLite:"
                  " none (the hub never runs ANALYZE)",
    "floor": "one bare SQL statement per report and scope: the report's main figure from the"
             " rollup it reads, for the same period and stores, read as the hub's own reads"
             " (on PostgreSQL HQ's role with the scope 'all', where each policy holds at its"
             " first test), in the same run, alternated with the report",
}
# Per report: the period (days ending today) and grain a page asks for. The console's default
# period, except the sales reports a manager reads over a year.
PERIODS: dict[str, tuple[int, str]] = {
    "dashboard": (30, "day"), "sales_trend": (365, "month"), "categories": (365, "day"),
    "profile": (365, "day"), "products": (365, "day"), "staff": (365, "day"),
    "member_structure": (30, "day"), "member_activity": (365, "month"), "funnel": (365, "day"),
    "top_up_loyalty": (365, "day"), "points": (365, "day"), "stored_value": (365, "day"),
    "settlement": (90, "month"), "campaigns": (30, "day")}
GOALS = {"report_store_p95_ms": 100.0, "report_chain_p95_ms": 1000.0, "report_vs_floor": 0.5}
RUNS, MIN_RUNS, BUDGET_S = 20, 5, 6.0  # per report and scope: up to 20 runs, 6 s, at least 5
LEVELS = ("store", "region", "chain")
USERS = {"store": ("bench.shop", "store_manager"), "region": ("bench.area", "region_manager"),
         "chain": ("bench.hq", "hq_admin")}


def _say(text: str) -> None:
    print(f"bench reports: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Plan:
    """The fill's sizes and its SQL spellings for one dialect."""

    pg: bool
    members: int
    stores: int
    days: int  # the year (the sales history most tables hold)
    seed: int

    @property
    def regions(self) -> int:
        return min(REGIONS, self.stores)

    @property
    def span(self) -> int:
        """Days in the helper calendar ``b_days``: registrations from three years before the
        year, to today (its last day, index ``span - 1``)."""
        return REGISTERED_OVER_DAYS + self.days

    @property
    def year(self) -> int:
        """``b_days`` index of the year's first day."""
        return REGISTERED_OVER_DAYS

    # -- spellings ------------------------------------------------------------------------------

    def mod(self, a: str, b: str | int) -> str:
        # (PostgreSQL: mod(), not %: psycopg takes % for a placeholder)
        return f"mod({a}, {b})" if self.pg else f"(({a}) % ({b}))"

    def rnd(self, x: str, n: str | int, salt: int) -> str:
        """SQL: a pseudo-random integer in [0, n) from the integer expression ``x`` (below
        2^31), one stream per ``salt``: a quadratic of ``x`` modulo a prime, so neighbouring
        ``x`` (consecutive members, days) do not step through [0, n) in the lockstep a linear
        hash would; its square stays within BIGINT."""
        y = f"(CAST({x} AS BIGINT) + {salt * 7919 + self.seed * 104_729})"
        return self.mod(self.mod(f"{y} * ({y} + 40503)", PRIME), n)

    def least(self, a: str, b: str | int) -> str:
        return f"least({a}, {b})" if self.pg else f"min({a}, {b})"

    def greatest(self, a: str, b: str | int) -> str:
        return f"greatest({a}, {b})" if self.pg else f"max({a}, {b})"

    def pad(self, expr: str, width: int) -> str:
        if self.pg:
            return f"lpad(CAST({expr} AS TEXT), {width}, '0')"
        return f"printf('%0{width}d', {expr})"

    def slots(self, count: str, alias: str = "k") -> tuple[str, str]:
        """(join, condition): ``alias.i`` from 0 to ``count`` - 1 for each row so far."""
        if self.pg:
            return (f"CROSS JOIN LATERAL generate_series(0, CAST({count} AS BIGINT) - 1)"
                    f" AS {alias}(i)", "1 = 1")
        return f"CROSS JOIN b_nums {alias}", f"{alias}.i < {count}"

    @property
    def int_key(self) -> str:
        return "BIGINT PRIMARY KEY" if self.pg else "INTEGER PRIMARY KEY"


def _store(n: int) -> str:
    return f"S{n:03d}"


MANAGED_STORE = _store(1)  # the store manager's store (and the first of the region's)


def _region(plan: _Plan, n: int) -> str:
    return f"R{(n - 1) % plan.regions + 1}"


def _midnight_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(ZONE)).timestamp() * 1000)


# --- the fill --------------------------------------------------------------------------------


def _setup(tx: Tx, plan: _Plan) -> int:
    """The schema, the stores (each heard from now, its log merged to now: every report is
    complete), and the helper tables the rows are made from: ``b_days`` (the calendar with each
    day's weight), ``b_stores`` (size), ``b_hours``, ``b_cats``, ``b_skus`` (price and expected
    daily units, a power law), ``b_nums``."""
    migrate(tx)
    rng = random.Random(plan.seed)
    weights = {n: rng.randrange(60, 161) for n in range(1, plan.stores + 1)}
    tx.executemany(
        "INSERT INTO stores(store_id, name, region, last_seen_ms, epoch) VALUES (?, ?, ?, ?, 1)",
        [(_store(n), f"Store {n:03d}", _region(plan, n), NOW_MS) for n in weights])
    tx.executemany("INSERT INTO store_streams(store_id, epoch, acked_seq) VALUES (?, 1, 1)",
                   [(_store(n),) for n in weights])
    tx.executemany("INSERT INTO events(store_id, epoch, seq, event_id, hlc, type, member_id,"
                   " payload) VALUES (?, 1, 1, ?, ?, 'sale.finalized', NULL, ?)",
                   [(_store(n), f"bench-{n}", NOW_MS << 16, b"\x80") for n in weights])
    # The read models are filled straight, not projected from these rows (which hold no
    # event): every projection is at the head of the log, as a hub's would be, so a hub run
    # over the fill (``hub.bench_pages``) has nothing to project.
    head = tx.scalar("SELECT max(pos) FROM events", default=0)
    tx.executemany("INSERT INTO projection_checkpoints(name, pos, synced_ms) VALUES (?, ?, ?)",
                   [(p.name, head, NOW_MS) for p in projections(ZONE)])
    key = plan.int_key
    tx.execute(f"CREATE TEMP TABLE b_nums (i {key})")
    tx.executemany("INSERT INTO b_nums(i) VALUES (?)", [(i,) for i in range(SLOTS)])
    tx.execute(f"CREATE TEMP TABLE b_stores (n {key}, store_id TEXT NOT NULL,"
               " region TEXT NOT NULL, w BIGINT NOT NULL)")
    tx.executemany("INSERT INTO b_stores VALUES (?, ?, ?, ?)",
                   [(n, _store(n), _region(plan, n), w) for n, w in weights.items()])
    tx.execute(f"CREATE TEMP TABLE b_days (i {key}, day TEXT NOT NULL, w BIGINT NOT NULL,"
               " ms BIGINT NOT NULL)")
    first = TODAY - timedelta(days=plan.span - 1)
    rows = []
    for i in range(plan.span):
        day = first + timedelta(days=i)
        # Weekday and season, a chain growing ~8 % a year, and the day's own luck.
        w = (WEEKDAYS[day.weekday()] * MONTHS[day.month - 1] / 100
             * (1 + 0.08 * (i - plan.span) / 365) * rng.uniform(0.9, 1.1))
        rows.append((i, day.isoformat(), max(1, round(w)), _midnight_ms(day)))
    tx.executemany("INSERT INTO b_days VALUES (?, ?, ?, ?)", rows)
    tx.execute(f"CREATE TEMP TABLE b_hours (h {key}, w BIGINT NOT NULL)")
    tx.executemany("INSERT INTO b_hours VALUES (?, ?)", list(HOURS.items()))
    tx.execute(f"CREATE TEMP TABLE b_cats (c {key}, category TEXT NOT NULL, wa BIGINT NOT NULL,"
               " ws BIGINT NOT NULL)")
    tx.executemany("INSERT INTO b_cats VALUES (?, ?, ?, ?)",
                   [(c, *row) for c, row in enumerate(CATEGORIES)])
    # The catalogue in code order (so a store-day's rows come in key order); popularity ranks
    # dealt at random over it; prices by category. ``lam``: expected units a day (x 1000) at an
    # average store on an average day.
    items = SALES_PER_STORE_DAY * 3
    harmonic = sum(1 / r ** ZIPF for r in range(1, SKUS + 1))
    ranks = list(range(1, SKUS + 1))
    rng.shuffle(ranks)
    codes = sorted({f"69{rng.randrange(10**10, 10**11)}" for _ in range(SKUS * 2)})[:SKUS]
    tx.execute(f"CREATE TEMP TABLE b_skus (r {key}, sku TEXT NOT NULL, category TEXT NOT NULL,"
               " price BIGINT NOT NULL, lam BIGINT NOT NULL)")
    tx.executemany("INSERT INTO b_skus VALUES (?, ?, ?, ?, ?)", [
        (r, code, rng.choices([c[0] for c in CATEGORIES], [c[1] for c in CATEGORIES])[0],
         round(math.exp(rng.uniform(math.log(150), math.log(8000)))),
         round(1000 * items / rank ** ZIPF / harmonic))
        for r, (code, rank) in enumerate(zip(codes, ranks, strict=True))])
    ids = [f"PROMO-{p:02d}" for p in range(1, PROMOTIONS + 1)] + [
        f"CPN-{c:02d}" for c in range(1, COUPON_CAMPAIGNS + 1)]
    tx.executemany("INSERT INTO campaign_first_pushed(campaign_id, issued_ms) VALUES (?, ?)",
                   [(c, _midnight_ms(first)) for c in ids])
    return plan.stores


def _store_sales(tx: Tx, plan: _Plan) -> int:
    """``store_hours`` (sales by store, day and hour: size x day x hour, rounded at random),
    ``store_days`` their sums, over two years."""
    p = plan
    x = f"((s.n * {p.span} + d.i) * 32 + h.h)"
    done = tx.execute(f"""
        INSERT INTO store_hours(store_id, day, hour, sales, items, gross, discount, amount,
            member_sales, member_amount, refunds, refund_items, refund_amount, member_refunds,
            member_refund_amount)
        SELECT store_id, day, hour, sales, items, amount + amount / 25, amount / 25, amount,
            msales, msales * basket * 11 / 10, refunds, refunds * 2, refunds * basket / 2,
            mrefunds, mrefunds * basket / 2
        FROM (SELECT store_id, day, hour, sales, items, basket, sales * basket AS amount, msales,
                refunds, (refunds * 55 + {p.rnd('k', 100, 6)}) / 100 AS mrefunds
              FROM (SELECT store_id, day, hour, k, sales, basket,
                      sales * 3 + {p.rnd('k', 'sales + 1', 3)} AS items,
                      (sales * 55 + {p.rnd('k', 100, 4)}) / 100 AS msales,
                      (sales + {p.rnd('k', 100, 5)}) / 100 AS refunds
                    FROM (SELECT s.store_id, d.day, h.h AS hour, {x} AS k,
                            (CAST({SALES_PER_STORE_DAY} AS BIGINT) * s.w * d.w * h.w / 10000
                             + {p.rnd(x, 1000, 1)}) / 1000 AS sales,
                            5000 + {p.rnd(x, 4000, 2)} AS basket
                          FROM b_stores s CROSS JOIN b_days d CROSS JOIN b_hours h
                          WHERE d.i >= {p.year - p.days}) a) b) c
        WHERE sales > 0 OR refunds > 0""").rowcount
    tx.execute("""
        INSERT INTO store_days SELECT store_id, day, sum(sales), sum(items), sum(gross),
            sum(discount), sum(amount), sum(member_sales), sum(member_amount), sum(refunds),
            sum(refund_items), sum(refund_amount), sum(member_refunds), sum(member_refund_amount)
        FROM store_hours GROUP BY store_id, day""")
    return int(done)


def _each_store_day(also: str = "") -> str:
    """SQL from FROM on: every ``store_days`` row (``sd``) with its store's and day's helper
    rows (``s``, ``d``), crossed with the ``also`` tables, in key order (SQLite keeps a CROSS
    JOIN's order)."""
    return (f"b_stores s CROSS JOIN b_days d CROSS JOIN store_days sd{also}"
            " WHERE sd.store_id = s.store_id AND sd.day = d.day")


def _categories(tx: Tx, plan: _Plan) -> int:
    """``daily_rollups`` and ``member_refund_days``: each store-day split over the categories
    by their shares, each share off by up to 10 % either way."""
    p = plan
    x = f"((s.n * {p.span} + d.i) * 16 + c.c)"
    split = f"""SELECT sd.*, s.region, c.category, c.ws, c.wa * (90 + {p.rnd(x, 21, 8)}) AS wa,
                {x} AS k FROM {_each_store_day(' CROSS JOIN b_cats c')}
                AND d.i >= {p.year - p.days}"""
    done = tx.execute(f"""
        INSERT INTO daily_rollups(store_id, day, category, region, sales, items, gross, discount,
            amount, member_amount, refunds, refund_items, refund_amount)
        SELECT store_id, day, category, region, csales, items * wa / 100000,
            gross * wa / 100000, discount * wa / 100000, amount * wa / 100000,
            member_amount * wa / 100000, crefunds, refund_items * wa / 100000,
            refund_amount * wa / 100000
        FROM (SELECT t.*, (sales * ws + {p.rnd('k', 1000, 9)}) / 1000 AS csales,
                (refunds * ws + {p.rnd('k', 1000, 10)}) / 1000 AS crefunds FROM ({split}) t) u
        WHERE csales > 0 OR crefunds > 0""").rowcount
    tx.execute(f"""
        INSERT INTO member_refund_days(store_id, day, category, refund_items, refund_amount)
        SELECT store_id, day, category, member_refunds * 2 * wa / 100000,
            member_refund_amount * wa / 100000 FROM ({split}) t
        WHERE member_refund_amount * wa / 100000 > 0""")
    return int(done)


def _skus(tx: Tx, plan: _Plan) -> int:
    """``sku_days`` over the year: a sku sells its expected units at a store on a day (its
    popularity x the store's size x the day's weight), rounded at random, so the tail sells on
    some days only; ~1 in 120 rows has a unit returned. Then its month, chain-day and
    chain-month sums."""
    p = plan
    x = f"((s.n * {p.span} + d.i) * 512 + k.r)"
    done = tx.execute(f"""
        INSERT INTO sku_days(store_id, day, sku, category, qty, amount, refund_qty,
            refund_amount)
        SELECT store_id, day, sku, category, qty, qty * price, back, back * price
        FROM (SELECT s.store_id, d.day, k.sku, k.category, k.price,
                (k.lam * s.w * d.w / 10000 + {p.rnd(x, 1000, 11)}) / 1000 AS qty,
                CASE WHEN {p.rnd(x, 1000, 12)} < 8 THEN 1 ELSE 0 END AS back
              FROM b_stores s CROSS JOIN b_days d CROSS JOIN b_skus k
              WHERE d.i >= {p.year}) t
        WHERE qty > 0""").rowcount
    tx.execute("""
        INSERT INTO sku_months SELECT store_id, substr(day, 1, 7), sku, category, sum(qty),
            sum(amount), sum(refund_qty), sum(refund_amount)
        FROM sku_days GROUP BY store_id, substr(day, 1, 7), sku, category""")
    tx.execute("""
        INSERT INTO sku_chain_days SELECT day, sku, category, sum(qty), sum(amount),
            sum(refund_qty), sum(refund_amount) FROM sku_days GROUP BY day, sku, category""")
    tx.execute("""
        INSERT INTO sku_chain_months SELECT month, sku, category, sum(qty), sum(amount),
            sum(refund_qty), sum(refund_amount) FROM sku_months GROUP BY month, sku, category""")
    return int(done)


def _staff(tx: Tx, plan: _Plan) -> int:
    """``staff_days`` over the year: on a store's day, each of its 8 cashiers and 6 guides
    works with a chance of 7 in 10; a cashier rings up ~1/5.6 of the sales, a guide is named
    on ~1/14 of them (3 in 10 sales name one). Then their months."""
    p = plan
    x = f"((s.n * {p.span} + d.i) * 16 + k.i)"
    cashier = f"k.i < {CASHIERS}"
    parts = ("sales", "amount", "member_sales", "member_amount", "refunds", "refund_amount",
             "member_refunds", "member_refund_amount")
    shares = ", ".join(f"({c} * share + {p.rnd('kx', 1000, 20 + i)}) / 1000" for i, c
                       in enumerate(parts))
    done = tx.execute(f"""
        INSERT INTO staff_days(store_id, day, role, staff_id, {', '.join(parts)})
        SELECT store_id, day, role, staff_id, {shares}
        FROM (SELECT sd.*, {x} AS kx,
                CASE WHEN {cashier} THEN 'cashier' ELSE 'guide' END AS role,
                CASE WHEN {cashier} THEN 'C' || {p.pad('k.i + 1', 2)}
                     ELSE 'G' || {p.pad(f'k.i - {CASHIERS - 1}', 2)} END AS staff_id,
                CASE WHEN {cashier} THEN 180 ELSE 71 END AS share
              FROM {_each_store_day(' CROSS JOIN b_nums k')}
              AND d.i >= {p.year} AND k.i < {CASHIERS + GUIDES}
              AND {p.rnd(x, 1000, 19)} < 700) t""").rowcount
    tx.execute(f"""
        INSERT INTO staff_months SELECT store_id, substr(day, 1, 7), role, staff_id,
            {', '.join(f'sum({c})' for c in parts)}
        FROM staff_days GROUP BY store_id, substr(day, 1, 7), role, staff_id""")
    return int(done)


def _members(tx: Tx, plan: _Plan) -> int:
    """Each member's plan (``b_mem``), then ``members``. A quarter registered in the year
    (at a checkout: their first purchase that day), the rest over the three years before, two
    in three of them buying in the year; purchases 1 + 1170 / (u + 30) for u uniform in 0..999
    (half buy once to thrice, a few up to 40 times; ~4.5 a buyer, as many as ``store_days``'
    member sales), spread over their part of the year, each at their home store or, one in
    seven, at another of its region; 3 in 10 have a guide."""
    p = plan
    if p.pg:
        head, source = "", f"generate_series(0, {p.members - 1}) AS g(i)"
    else:
        head = ("WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g"
                f" WHERE i < {p.members - 1})")
        source = "g"
    tx.execute(f"""CREATE TEMP TABLE b_mem (i {p.int_key}, member_id TEXT NOT NULL,
        home BIGINT NOT NULL, reg BIGINT NOT NULL, start BIGINT NOT NULL, n BIGINT NOT NULL,
        gap BIGINT NOT NULL, spend BIGINT NOT NULL, sv BIGINT NOT NULL)""")
    tx.execute(f"""{head} INSERT INTO b_mem
        SELECT i, 'm' || {p.pad('i', 7)}, home, reg, start, n,
            CASE WHEN n > 0 THEN ({p.span} - start) / n ELSE 1 END, spend, sv
        FROM (SELECT i, home, reg, start, spend, sv,
                CASE WHEN active = 1 THEN {p.least('n0', f'{p.span} - start')} ELSE 0 END AS n
              FROM (SELECT i, home, reg, {p.greatest('reg', p.year)} AS start, active, n0,
                      spend, sv
                    FROM (SELECT i, 1 + {p.rnd('i', p.stores, 30)} AS home,
                            CASE WHEN {p.rnd('i', 1000, 31)} < 250
                                 THEN {p.year} + {p.rnd('i', p.days, 32)}
                                 ELSE {p.rnd('i', p.year, 33)} END AS reg,
                            CASE WHEN {p.rnd('i', 1000, 31)} < 250
                                   OR {p.rnd('i', 1000, 34)} < 650 THEN 1 ELSE 0 END AS active,
                            1 + 1170 / ({p.rnd('i', 1000, 35)} + 30) AS n0,
                            3000 + {p.rnd('i', 12000, 36)} AS spend,
                            CASE WHEN {p.rnd('i', 1000, 37)} < 80 THEN 1 ELSE 0 END AS sv
                          FROM {source}) a) b) c""")
    surname = f"substr('{SURNAMES}', CAST(1 + {p.rnd('m.i', len(SURNAMES), 38)} AS INTEGER), 1)"
    given = f"substr('{GIVEN}', CAST(1 + {p.rnd('m.i', len(GIVEN), 39)} AS INTEGER), 1)"
    done = tx.execute(f"""
        INSERT INTO members(member_id, member_code, phone, name, birthday, tier, home_store,
            registered_hlc, change_no, guide_id)
        SELECT m.member_id, 'c' || {p.pad('m.i', 7)}, '+86139' || {p.pad('m.i', 8)},
            {surname} || {given},
            ({p.rnd('m.i', 56, 40)} + 1950) || '-' || {p.pad(f"1 + {p.rnd('m.i', 12, 41)}", 2)}
                || '-' || {p.pad(f"1 + {p.rnd('m.i', 28, 42)}", 2)},
            CASE WHEN {p.rnd('m.i', 1000, 43)} < 80 THEN 'gold'
                 WHEN {p.rnd('m.i', 1000, 43)} < 280 THEN 'silver' ELSE 'standard' END,
            s.store_id, (d.ms + 32400000 + {p.rnd('m.i', 43200000, 44)}) * 65536, m.i + 1,
            CASE WHEN {p.rnd('m.i', 1000, 45)} < 300
                 THEN 'G' || {p.pad(f"1 + {p.rnd('m.i', GUIDES, 46)}", 2)} END
        FROM b_mem m JOIN b_stores s ON s.n = m.home JOIN b_days d ON d.i = m.reg""").rowcount
    # One member in a thousand also has an old id merged into them (a second card, a phone
    # registered twice): reports that read ids stores wrote then look the aliases up.
    tx.execute(f"""
        INSERT INTO members(member_id, member_code, home_store, registered_hlc, change_no,
            merged_into)
        SELECT 'a' || {p.pad('i', 7)}, 'd' || {p.pad('i', 7)}, m.home_store, m.registered_hlc,
            {p.members + 1} + i, m.member_id
        FROM b_mem b JOIN members m ON m.member_id = b.member_id
        WHERE {p.mod('b.i', 1000)} = 7""")
    return int(done)


def _purchase_day(plan: _Plan, k: str) -> str:
    """SQL: the ``b_days`` index of member ``m``'s purchase ``k`` (0-based): one in each
    stretch of ``m.gap`` days from ``m.start``, the first of a member registered in the year
    on the day they registered."""
    return (f"m.start + {k} * m.gap + CASE WHEN {k} = 0 AND m.reg >= {plan.year} THEN 0"
            f" ELSE {plan.rnd(f'm.i * 64 + {k}', 'm.gap', 50)} END")


def _purchases(tx: Tx, plan: _Plan) -> int:
    """``member_store_days`` (each purchase on its day and store; one in 50 fully refunded:
    not kept, nothing spent), ``member_days``, ``sale_refunds``, ``member_activity`` (first
    purchase when registering; older members' earlier ones counted), ``member_stores``."""
    p = plan
    join, cond = p.slots("m.n")
    per = max(1, p.stores // p.regions - 1)  # the other stores of a region
    x = "m.i * 64 + k.i"  # a member's purchase: at most 40 (``_members``)
    hop = f"{p.regions} * (1 + {p.rnd(x, per, 51)})"  # to a store of the same region
    other = f"{p.mod(f'm.home - 1 + {hop}', p.stores)} + 1"
    done = tx.execute(f"""
        INSERT INTO member_store_days(member_id, day, store_id, purchases, kept, spend)
        SELECT t.member_id, d.day, s.store_id, 1, kept, CASE WHEN kept = 1 THEN spend ELSE 0 END
        FROM (SELECT m.member_id, {_purchase_day(p, 'k.i')} AS di,
                CASE WHEN {p.rnd(x, 100, 52)} < 85 THEN m.home ELSE {other} END AS sn,
                CASE WHEN {p.rnd(x, 1000, 53)} < 20 THEN 0 ELSE 1 END AS kept,
                m.spend + {p.rnd(x, 'm.spend', 54)} AS spend
              FROM b_mem m {join} WHERE {cond}) t
        JOIN b_days d ON d.i = t.di JOIN b_stores s ON s.n = t.sn""").rowcount
    tx.execute("INSERT INTO member_days(member_id, day, purchases, spend, items)"
               " SELECT member_id, day, purchases, spend, 1 + spend / 2500"
               " FROM member_store_days")
    tx.execute("INSERT INTO sale_refunds(sale_id, store_id, refunded)"
               " SELECT 'v' || member_id || day, store_id, 4000 FROM member_store_days"
               " WHERE kept = 0")
    last = (f"CASE WHEN m.n > 0 THEN {_purchase_day(p, 'm.n - 1')}"
            f" ELSE m.reg + {p.rnd('m.i', f'{p.year} - m.reg', 55)} END")
    tx.execute(f"""
        INSERT INTO member_activity(member_id, first_hlc, first_store, first_date, last_hlc,
            last_store, last_date, purchases, refunds, spend, items)
        SELECT t.member_id, t.registered_hlc, t.home_store, f.day, (l.ms + 54000000) * 65536,
            t.home_store, l.day, t.purchases, 0, t.purchases * t.spend * 3 / 2, t.purchases * 3
        FROM (SELECT m.member_id, m.reg, x.registered_hlc, x.home_store, m.spend, {last} AS li,
                m.n + CASE WHEN m.reg < {p.year} THEN 1 + {p.rnd('m.i', 12, 56)} ELSE 0 END
                    AS purchases
              FROM b_mem m JOIN members x ON x.member_id = m.member_id) t
        JOIN b_days f ON f.i = t.reg JOIN b_days l ON l.i = t.li""")
    tx.execute(PURCHASE_DAYS_FROM_MEMBER_DAYS[tx.dialect])  # as schema 26 fills them
    tx.execute("""
        INSERT INTO member_stores(member_id, store_id, purchases, spend, last_hlc, last_date)
        SELECT member_id, store_id, count(*), sum(spend), NULL, max(day) FROM member_store_days
        GROUP BY member_id, store_id""")
    tx.execute("""
        INSERT INTO member_stores(member_id, store_id, purchases, spend, last_hlc, last_date)
        SELECT m.member_id, s.store_id, 1, m.spend, NULL, d.day
        FROM b_mem m JOIN b_stores s ON s.n = m.home JOIN b_days d ON d.i = m.reg
        WHERE NOT EXISTS (SELECT 1 FROM member_stores x WHERE x.member_id = m.member_id
                          AND x.store_id = s.store_id)""")
    return int(done)


def _lifecycle_and_rfm(tx: Tx, plan: _Plan) -> int:
    """Stages from the last purchase (new: registered in the last 30 days; active: bought in
    the last 90, one in 20 of them back from sleeping; sleeping to 180; lost), last month's
    RFM run: fixed cuts over the window's recency, purchases and spend; then each store's
    members with them (``store_members``)."""
    p = plan

    def ago(n: int) -> str:
        return (TODAY - timedelta(days=n)).isoformat()

    tx.execute(f"""
        INSERT INTO member_lifecycle(member_id, stage, since)
        SELECT member_id, CASE WHEN first_date >= '{ago(30)}' THEN 'new'
            WHEN last_date >= '{ago(90)}' THEN CASE WHEN {p.mod('spend', 20)} = 0
                 THEN 'reactivated' ELSE 'active' END
            WHEN last_date >= '{ago(180)}' THEN 'sleeping' ELSE 'lost' END, last_date
        FROM member_activity""")
    as_of_ms = _midnight_ms(RFM_AS_OF + timedelta(days=1))
    window = f"last_hlc / 65536 >= {as_of_ms - 365 * 86_400_000}"
    run_id = f"bench-rfm-{RFM_AS_OF.isoformat()}"

    def score(column: str, cuts: tuple[int, int, int, int], low_is_good: bool = False) -> str:
        """5 for the best fifth of the cuts down to 1; 0 with no purchase in the window."""
        op, order = ("<=", cuts) if low_is_good else (">=", tuple(reversed(cuts)))
        whens = " ".join(f"WHEN {column} {op} {c} THEN {5 - i}" for i, c in enumerate(order))
        return f"CASE WHEN rd IS NULL THEN 0 {whens} ELSE 1 END"

    r = score("rd", (30, 60, 120, 240), low_is_good=True)
    f = score("fv", (2, 3, 5, 9))
    m = score("mv", (8000, 20000, 45000, 90000))
    grp = " || ".join(f"CASE WHEN {d} >= 3 THEN 'H' ELSE 'L' END" for d in ("r", "f", "m"))
    done = tx.execute(f"""
        INSERT INTO rfm_scores(run_id, member_id, recency_days, frequency, monetary, r, f, m,
            grp)
        SELECT ?, member_id, rd, CASE WHEN rd IS NULL THEN NULL ELSE fv END,
            CASE WHEN rd IS NULL THEN NULL ELSE mv END, r, f, m,
            CASE WHEN r = 0 THEN 'none' ELSE {grp} END
        FROM (SELECT member_id, rd, fv, mv, {r} AS r, {f} AS f, {m} AS m
              FROM (SELECT member_id, purchases AS fv, spend AS mv,
                      CASE WHEN {window} THEN {p.greatest(
                          f'({as_of_ms} - last_hlc / 65536) / 86400000', 0)} END AS rd
                    FROM member_activity) a) b""", (run_id,)).rowcount
    sizes = {d: {str(s): 0 for s in range(6)} for d in ("r", "f", "m")}
    for d in sizes:
        for s, n in tx.all(f"SELECT {d}, count(*) FROM rfm_scores WHERE run_id = ?"
                           f" GROUP BY {d}", (run_id,)):
            sizes[d][str(int(s))] = int(n)
    groups = {str(g): int(n) for g, n in tx.all(
        "SELECT grp, count(*) FROM rfm_scores WHERE run_id = ? GROUP BY grp", (run_id,))}
    grid = [[0] * 6 for _ in range(6)]  # kept with a run as ``hub.members.rfm`` keeps it
    for r, f, n in tx.all("SELECT r, f, count(*) FROM rfm_scores WHERE run_id = ?"
                          " GROUP BY r, f", (run_id,)):
        grid[int(r)][int(f)] = int(n)
    summary = {"cuts": {}, "sizes": sizes, "groups": groups, "movement": {},
               "directory_churn": 0, RF_GRID: grid}
    tx.execute("INSERT INTO rfm_runs(run_id, as_of, params, created_ms, members, previous_run,"
               " summary) VALUES (?, ?, ?, ?, ?, NULL, ?)",
               (run_id, RFM_AS_OF.isoformat(), RfmParams(as_of=RFM_AS_OF).model_dump_json(),
                as_of_ms, int(done), json.dumps(summary, sort_keys=True)))
    tx.execute(store_members_rows())  # as schema 28 fills them
    return int(done)


def _stored_value(tx: Tx, plan: _Plan) -> int:
    """One member in 12 tops up 1-4 times in their part of the year, 500-2,000 CNY at their
    home store (5 % bonus), and holds some of it; each store's days: those top-ups, spending at
    about the chain's rate of top-ups by the store's size and the day's weight, and what 1-2
    neighbouring stores' deposits paid for there (``sv_flows``)."""
    p = plan
    join, cond = p.slots("m.t")
    x = "m.i * 8 + k.i"
    stretch = f"(({p.span} - m.start) / m.t)"
    done = tx.execute(f"""
        INSERT INTO sv_topups(store_id, day, member_id, topups, principal, bonus)
        SELECT s.store_id, d.day, t.member_id, 1, t.principal, t.principal / 20
        FROM (SELECT m.member_id, m.home,
                m.start + k.i * {stretch} + {p.rnd(x, stretch, 60)} AS di,
                (1 + {p.rnd(x, 4, 61)}) * 50000 AS principal
              FROM (SELECT i, member_id, home, start,
                      {p.least(f"1 + {p.rnd('i', 4, 62)}", f'{p.span} - start')} AS t
                    FROM b_mem WHERE sv = 1) m {join} WHERE {cond}) t
        JOIN b_stores s ON s.n = t.home JOIN b_days d ON d.i = t.di""").rowcount
    tx.execute(f"""
        INSERT INTO sv_holdings(member_id, store_id, principal, bonus)
        SELECT m.member_id, s.store_id, principal, principal / 20
        FROM (SELECT member_id, home, 2000 + {p.rnd('i', 200000, 63)} AS principal FROM b_mem
              WHERE sv = 1) m JOIN b_stores s ON s.n = m.home""")
    # A store's spending a day at the chain's average rate of top-ups (a tenth stays held).
    rate = max(1, round(0.08 * p.members * 2.5 * 125_000 * 0.9 / (p.stores * p.days)))
    x = f"(s.n * {p.span} + d.i)"
    tx.execute(f"""
        INSERT INTO sv_days(store_id, day, region, topups, topped_up_principal,
            topped_up_bonus, spent_principal, spent_bonus, refunded_principal, refunded_bonus,
            held_principal, held_bonus)
        SELECT store_id, day, region, n, tp, tb, sp, sp / 20, rp, rp / 20, tp - sp + rp,
            tb - sp / 20 + rp / 20
        FROM (SELECT s.store_id, d.day, s.region, coalesce(t.n, 0) AS n,
                coalesce(t.tp, 0) AS tp, coalesce(t.tb, 0) AS tb,
                CAST({rate} AS BIGINT) * s.w * d.w * (80 + {p.rnd(x, 40, 64)}) / 1000000 AS sp,
                CASE WHEN {p.rnd(x, 100, 65)} < 3 THEN 20000 ELSE 0 END AS rp
              FROM b_stores s CROSS JOIN b_days d
              LEFT JOIN (SELECT store_id, day, count(*) AS n, sum(principal) AS tp,
                           sum(bonus) AS tb FROM sv_topups GROUP BY store_id, day) t
                ON t.store_id = s.store_id AND t.day = d.day
              WHERE d.i >= {p.year}) v""")
    x = f"((s.n * {p.span} + d.i) * 4 + k.i)"
    tx.execute(f"""
        INSERT INTO sv_flows(store_id, day, from_store, principal, bonus)
        SELECT s.store_id, d.day, f.store_id, 1000 + {p.rnd(x, 20000, 66)},
            (1000 + {p.rnd(x, 20000, 66)}) / 20
        FROM b_stores s CROSS JOIN b_days d CROSS JOIN b_nums k
        JOIN b_stores f ON f.n = {p.mod('s.n + k.i', p.stores)} + 1
        WHERE d.i >= {p.year} AND k.i < {min(2, p.stores - 1)} AND {p.rnd(x, 100, 67)} < 60""")
    return int(done)


def _points(tx: Tx, plan: _Plan) -> int:
    """``points_days`` over two years: a point a yuan members paid, 20-40 % of it redeemed,
    refunds taking theirs back, a month's expiry on its first day; ``points_expiry``: what is
    left by expiry month over the next two years, and points that never expire."""
    p = plan
    x = f"(s.n * {p.span} + d.i)"
    done = tx.execute(f"""
        INSERT INTO points_days(store_id, day, region, earned, redeemed, returned, expired,
            adjusted)
        SELECT store_id, day, region, earned, earned * (20 + {p.rnd('k', 21, 70)}) / 100,
            earned / 200, CASE WHEN substr(day, 9, 2) = '01' THEN earned * 3 ELSE 0 END,
            -(member_refund_amount / 100)
        FROM (SELECT sd.*, s.region, sd.member_amount / 100 AS earned, {x} AS k
              FROM {_each_store_day()} AND d.i >= {p.year - p.days}) t""").rowcount
    months = [(TODAY.replace(day=1) + timedelta(days=31 * j)).strftime("%Y-%m")
              for j in range(24)]
    weights = dict(tx.all("SELECT store_id, w FROM b_stores"))
    tx.executemany("INSERT INTO points_expiry(store_id, month, points) VALUES (?, ?, ?)",
                   [(s, month, int(w) * 300 * (24 - j)) for s, w in weights.items()
                    for j, month in enumerate([*months, "never"][:25])])
    return int(done)


def _campaigns(tx: Tx, plan: _Plan) -> int:
    """Coupons for 3 in 10 members (one in five issued by HQ), a third redeemed within two
    weeks at the member's home store, 3 in 1,000 of those again at the next store (a
    conflict); and the sales facts the campaigns report reads: a sale and its discount row for
    every coupon redeemed and for the tenth of each store-day's sales carrying a promotion."""
    p = plan
    tx.execute(f"""CREATE TEMP TABLE b_coupons (i {p.int_key}, code TEXT NOT NULL,
        member_id TEXT NOT NULL, home BIGINT NOT NULL, hq BIGINT NOT NULL,
        issue BIGINT NOT NULL, redeem BIGINT NOT NULL, campaign TEXT NOT NULL,
        value BIGINT NOT NULL)""")
    tx.execute(f"""
        INSERT INTO b_coupons SELECT i, 'K' || {p.pad('i', 7)}, member_id, home, hq, issue,
            CASE WHEN red = 1 THEN {p.least(f"issue + 1 + {p.rnd('i', 14, 71)}", p.span - 1)}
                 ELSE -1 END,
            'CPN-' || {p.pad(f"1 + {p.rnd('i', COUPON_CAMPAIGNS, 72)}", 2)},
            (1 + {p.rnd('i', 5, 73)}) * 1000
        FROM (SELECT i, member_id, home,
                CASE WHEN {p.rnd('i', 100, 74)} < 20 THEN 1 ELSE 0 END AS hq,
                start + {p.rnd('i', f'{p.span} - start', 75)} AS issue,
                CASE WHEN {p.rnd('i', 1000, 76)} < 350 THEN 1 ELSE 0 END AS red
              FROM b_mem WHERE {p.rnd('i', 1000, 77)} < 300) t""")
    last = (TODAY + timedelta(days=30)).isoformat()
    done = tx.execute(f"""
        INSERT INTO coupons(coupon_code, store_id, member_id, campaign_id, kind, value,
            min_spend, categories, expires_on, state, hlc)
        SELECT c.code, CASE WHEN c.hq = 1 THEN 'HQ' ELSE s.store_id END, c.member_id,
            c.campaign, 'amount', c.value, c.value * 5, '[]', coalesce(e.day, '{last}'),
            CASE WHEN c.redeem >= 0 THEN 'redeemed' ELSE 'issued' END,
            (d.ms + 36000000) * 65536
        FROM b_coupons c JOIN b_stores s ON s.n = c.home JOIN b_days d ON d.i = c.issue
        LEFT JOIN b_days e ON e.i = c.issue + 30""").rowcount
    tx.execute(COUPONS_FOR_STORE)  # as schema 27 fills it
    redeemed = "b_coupons c JOIN b_stores s ON s.n = c.home JOIN b_days d ON d.i = c.redeem"
    tx.execute(f"""
        INSERT INTO coupon_redemptions(coupon_code, store_id, sale_id, hlc, amount)
        SELECT c.code, s.store_id, 'r' || c.code, (d.ms + 50400000) * 65536, c.value
        FROM {redeemed} WHERE c.redeem >= 0""")
    tx.execute(f"""
        INSERT INTO coupon_conflicts(coupon_code, store_id, sale_id, hlc, amount, kept_store,
            kept_sale)
        SELECT c.code, f.store_id, 'q' || c.code, (d.ms + 61200000) * 65536, c.value,
            s.store_id, 'r' || c.code
        FROM {redeemed} JOIN b_stores f ON f.n = {p.mod('c.home', p.stores)} + 1
        WHERE c.redeem >= 0 AND {p.rnd('c.i', 1000, 78)} < 3""")
    columns = ("doc_id, kind, n, sale_id, pos, store_id, region, terminal_id, cashier_id,"
               " guide_id, member_id, hlc, local_date, local_hour, sku, category, code, ref,"
               " qty, gross, discount, amount, points")
    # A sale's own row and its discount's (j = 0, 1), as hub.projections.sales writes them.
    both = ("CROSS JOIN (SELECT 0 AS j UNION ALL SELECT 1 AS j) r")
    row = ("doc_id, CASE WHEN r.j = 0 THEN 'sale' ELSE 'discount' END, r.j, doc_id, pos,"
           " store_id, region, 'POS-1', cashier, NULL, member_id, hlc, day, hour, NULL, NULL,"
           " CASE WHEN r.j = 0 THEN 'CNY' ELSE code END, CASE WHEN r.j = 0 THEN NULL"
           " ELSE ref END, CASE WHEN r.j = 0 THEN 3 ELSE 0 END,"
           " CASE WHEN r.j = 0 THEN total + off ELSE 0 END,"
           " CASE WHEN r.j = 0 THEN off ELSE 0 END, CASE WHEN r.j = 0 THEN total ELSE off END,"
           " CASE WHEN r.j = 0 THEN total / 100 ELSE 0 END")
    tx.execute(f"""
        INSERT INTO sales_facts({columns}) SELECT {row}
        FROM (SELECT 'r' || c.code AS doc_id, {1 << 40} + c.i AS pos, s.store_id, s.region,
                'C01' AS cashier, c.member_id, (d.ms + 50400000) * 65536 AS hlc, d.day,
                14 AS hour, 'coupon' AS code, c.code AS ref, c.value * 5 AS total,
                c.value AS off
              FROM {redeemed} WHERE c.redeem >= 0) t {both}""")
    join, cond = p.slots(p.least("sd.sales / 10", SLOTS - 1))
    x = f"((s.n * {p.span} + d.i) * {SLOTS} + k.i)"
    tx.execute(f"""
        INSERT INTO sales_facts({columns}) SELECT {row}
        FROM (SELECT doc_id, pos, store_id, region, cashier, member_id,
                (ms + hour * 3600000 + 1000 * {p.rnd('pos', 3600, 80)}) * 65536 AS hlc, day,
                hour, 'promotion' AS code, ref, total, off
              FROM (SELECT 'p' || s.store_id || d.day || {p.pad('k.i', 4)} AS doc_id,
                      {x} AS pos, s.store_id, s.region, d.ms, d.day,
                      'C' || {p.pad(f"1 + {p.rnd(x, CASHIERS, 81)}", 2)} AS cashier,
                      CASE WHEN {p.rnd(x, 100, 82)} < 55
                           THEN 'm' || {p.pad(p.rnd(x, p.members, 83), 7)} END AS member_id,
                      9 + {p.rnd(x, 13, 84)} AS hour,
                      'PROMO-' || {p.pad(f"1 + {p.rnd(x, PROMOTIONS, 85)}", 2)} AS ref,
                      4000 + {p.rnd(x, 12000, 86)} AS total, 300 + {p.rnd(x, 1200, 87)} AS off
                    FROM b_stores s CROSS JOIN b_days d CROSS JOIN store_days sd {join}
                    WHERE sd.store_id = s.store_id AND sd.day = d.day AND d.i >= {p.year}
                      AND {cond}) u) t {both}""")
    return int(done)


def _users(tx: Tx, plan: _Plan) -> int:
    """The three callers: HQ, the manager of S001's region and of S001."""
    for level, (username, role) in USERS.items():
        users.add(tx, username=username, role=role, password_hash=None, now_ms=NOW_MS,
                  stores=[MANAGED_STORE] if level == "store" else None,
                  regions=[_region(plan, 1)] if level == "region" else None)
    for table in ("b_coupons", "b_mem", "b_skus", "b_cats", "b_hours", "b_days", "b_stores",
                  "b_nums"):
        tx.execute(f"DROP TABLE {table}")
    return len(USERS)


STEPS: tuple[tuple[str, Callable[[Tx, _Plan], int]], ...] = (
    ("stores and helper tables", _setup), ("store_hours and store_days", _store_sales),
    ("daily_rollups and member_refund_days", _categories), ("sku_days and sums", _skus),
    ("staff_days and staff_months", _staff), ("members", _members),
    ("member_store_days, member_days, member_activity, member_stores", _purchases),
    ("member_lifecycle, rfm_scores and store_members", _lifecycle_and_rfm),
    ("sv_topups, sv_holdings, sv_days, sv_flows", _stored_value),
    ("points_days and points_expiry", _points),
    ("coupons, redemptions, campaign sales facts", _campaigns), ("users", _users))
TABLES = ("store_hours", "store_days", "daily_rollups", "member_refund_days", "sku_days",
          "sku_months", "sku_chain_days", "sku_chain_months", "staff_days", "staff_months",
          "members", "member_store_days", "member_days", "member_activity", "member_stores",
          "sale_refunds", "member_lifecycle", "rfm_scores", "store_members", "sv_topups",
          "sv_holdings", "sv_days", "sv_flows", "points_days", "points_expiry", "coupons",
          "coupon_redemptions", "coupon_conflicts", "sales_facts")


def _bound(step: Callable[[Tx, _Plan], int], plan: _Plan) -> Callable[[Tx], int]:
    return lambda tx: step(tx, plan)


def fill(db: HubDatabase, members: int, stores: int = 50, days: int = 365,
         seed: int = 1) -> dict[str, int]:
    """Fill an empty hub database (open with ``open_sync``) with ``stores`` stores, ``members``
    members and ``days`` days of sales (module text), a transaction a step, progress on
    stderr; returns the rows of each table filled."""
    if not (1 <= stores <= 100 and 1 <= days <= 366 and 1 <= members <= 10_000_000):
        # The pseudo-random numbers' inputs stay below 2^31 (``_Plan.rnd``) within these.
        raise ValueError("the fill takes 1-100 stores, 1-366 days and 1-10,000,000 members")
    plan = _Plan(db.dialect == "postgres", members, stores, days, seed)
    for name, step in STEPS:
        t = time.perf_counter()
        rows = db.run_sync(_bound(step, plan))
        _say(f"{name}: {rows:,} rows, {time.perf_counter() - t:.1f} s")
    first = (TODAY - timedelta(days=days - 1)).isoformat()
    return db.run_sync(lambda tx: {
        **{t: int(tx.scalar(f"SELECT count(*) FROM {t}")) for t in TABLES},
        "sales_in_the_year": int(tx.scalar("SELECT sum(sales) FROM store_days WHERE day >= ?",
                                           (first,), default=0))})


# --- the floors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Floor:
    """What a floor statement gets: the dialect, the period, and the stores (None: the chain,
    no store condition at all)."""

    pg: bool
    start: date
    end: date
    stores: list[str] | None

    def where(self, column: str) -> tuple[str, tuple[Any, ...]]:
        if self.stores is None:
            return "1 = 1", ()
        return f"{column} IN ({', '.join('?' * len(self.stores))})", tuple(self.stores)

    @property
    def span(self) -> tuple[str, str]:
        return self.start.isoformat(), self.end.isoformat()


Statement = tuple[str, tuple[Any, ...]]


def _store_days(f: _Floor) -> Statement:
    where, params = f.where("d.store_id")
    return ("SELECT d.day, sum(d.amount) - sum(d.refund_amount), sum(d.sales) FROM store_days d"
            f" WHERE {where} AND d.day >= ? AND d.day <= ? GROUP BY d.day", (*params, *f.span))


def _categories_floor(f: _Floor) -> Statement:
    where, params = f.where("r.store_id")
    return ("SELECT r.category, sum(r.amount) - sum(r.refund_amount),"
            " sum(r.items) - sum(r.refund_items) FROM daily_rollups r"
            f" WHERE {where} AND r.day >= ? AND r.day <= ? GROUP BY r.category",
            (*params, *f.span))


def _profile_floor(f: _Floor) -> Statement:
    where, params = f.where("h.store_id")
    return ("SELECT h.hour, sum(h.sales), sum(h.amount) - sum(h.refund_amount)"
            f" FROM store_hours h WHERE {where} AND h.day >= ? AND h.day <= ? GROUP BY h.hour",
            (*params, *f.span))


def _month_parts(f: _Floor, months: str, days: str, where: str, params: tuple[Any, ...],
                 columns: str) -> Statement:
    """``columns`` of a rollup kept a month and a day, over the period: its whole months'
    rows, and the days of the months it covers in part (a plain split of the period)."""
    first = f.start if f.start.day == 1 else (f.start.replace(day=1) + timedelta(days=32)
                                              ).replace(day=1)
    after = (f.end + timedelta(days=1)).replace(day=1) if (
        f.end + timedelta(days=1)).day == 1 else f.end.replace(day=1)
    parts: list[str] = []
    values: list[Any] = []
    if first < after:  # whole months [first, after)
        parts.append(f"SELECT {columns} FROM {months} k WHERE {where} AND k.month >= ?"
                     " AND k.month < ?")
        values += [*params, first.strftime("%Y-%m"), after.strftime("%Y-%m")]
        ranges = [(f.start, first - timedelta(days=1)), (after, f.end)]
    else:
        ranges = [(f.start, f.end)]
    for lo, hi in ranges:
        if lo <= hi:
            parts.append(f"SELECT {columns} FROM {days} k WHERE {where} AND k.day >= ?"
                         " AND k.day <= ?")
            values += [*params, lo.isoformat(), hi.isoformat()]
    return " UNION ALL ".join(parts), tuple(values)


def _products_floor(f: _Floor) -> Statement:
    prefix = "sku_chain" if f.stores is None else "sku"
    where, params = f.where("k.store_id")
    rows, values = _month_parts(f, f"{prefix}_months", f"{prefix}_days", where, params,
                                "k.sku, k.amount - k.refund_amount AS net")
    return (f"SELECT sku, sum(net) FROM ({rows}) u GROUP BY sku ORDER BY 2 DESC LIMIT 20",
            values)


def _staff_floor(f: _Floor) -> Statement:
    where, params = f.where("k.store_id")
    rows, values = _month_parts(f, "staff_months", "staff_days", where, params,
                                "k.store_id, k.role, k.staff_id,"
                                " k.amount - k.refund_amount AS net")
    return (f"SELECT store_id, role, staff_id, sum(net) FROM ({rows}) u"
            " GROUP BY store_id, role, staff_id", values)


def _structure_floor(f: _Floor) -> Statement:
    if f.stores is None:
        return ("SELECT m.tier, count(*) FROM members m WHERE m.merged_into IS NULL"
                " GROUP BY m.tier", ())
    marks = ", ".join("?" * len(f.stores))
    # The stores' members from their rows (registered or bought there), each once.
    return (f"SELECT s.tier, count(DISTINCT s.member_id) FROM store_members s WHERE s.store_id"
            f" IN ({marks}) GROUP BY s.tier", tuple(f.stores))


def _activity_floor(f: _Floor) -> Statement:
    where, params = f.where("d.store_id")
    return ("SELECT count(DISTINCT d.member_id) FROM member_store_days d"
            f" WHERE {where} AND d.day >= ? AND d.day <= ? AND d.purchases > 0",
            (*params, *f.span))


def _funnel_floor(f: _Floor) -> Statement:
    where, params = f.where("m.home_store")
    zone = ZoneInfo(ZONE)
    offset_s = int((datetime.combine(f.end, datetime.min.time(), zone).utcoffset()
                    or timedelta()).total_seconds())
    wall_s = f"m.registered_hlc / 65536000 + {offset_s}"
    month = (f"to_char(to_timestamp({wall_s}) AT TIME ZONE 'UTC', 'YYYY-MM')" if f.pg
             else f"strftime('%Y-%m', {wall_s}, 'unixepoch')")
    week = 7 * 86_400_000 * 65536
    lo = _midnight_ms(f.start) << 16
    hi = _midnight_ms(f.end + timedelta(days=1)) << 16
    return (f"SELECT {month}, count(*), sum(CASE WHEN a.first_hlc < m.registered_hlc + {week}"
            " THEN 1 ELSE 0 END) FROM members m"
            " LEFT JOIN member_activity a ON a.member_id = m.member_id"
            f" WHERE m.merged_into IS NULL AND {where} AND m.registered_hlc >= ?"
            " AND m.registered_hlc < ? GROUP BY 1", (*params, lo, hi))


def _loyalty_floor(f: _Floor) -> Statement:
    where, params = f.where("t.store_id")
    return ("SELECT t.member_id, sum(t.principal) FROM sv_topups t"
            f" WHERE {where} AND t.day >= ? AND t.day <= ? GROUP BY t.member_id"
            " ORDER BY 2 DESC LIMIT 20", (*params, *f.span))


def _points_floor(f: _Floor) -> Statement:
    where, params = f.where("p.store_id")
    return ("SELECT p.store_id, sum(p.earned - p.redeemed + p.returned - p.expired"
            f" + p.adjusted) FROM points_days p WHERE {where} GROUP BY p.store_id", params)


def _stored_value_floor(f: _Floor) -> Statement:
    where, params = f.where("d.store_id")
    return ("SELECT d.store_id, sum(d.held_principal), sum(d.held_bonus) FROM sv_days d"
            f" WHERE {where} GROUP BY d.store_id", params)


def _settlement_floor(f: _Floor) -> Statement:
    where, params = f.where("d.store_id")
    return ("SELECT d.store_id, sum(d.topped_up_principal + d.topped_up_bonus),"
            " sum(d.spent_principal + d.spent_bonus) FROM sv_days d"
            f" WHERE {where} AND d.day >= ? AND d.day <= ? GROUP BY d.store_id",
            (*params, *f.span))


def _campaigns_floor(f: _Floor) -> Statement:
    where, params = f.where("f.store_id")
    # A coupon's discount names the coupon: its campaign is the coupon's.
    return ("SELECT coalesce(c.campaign_id, f.ref), count(*), sum(f.amount) FROM sales_facts f"
            " LEFT JOIN coupons c ON f.code = 'coupon' AND c.coupon_code = f.ref"
            " WHERE f.kind = 'discount' AND f.ref IS NOT NULL AND f.local_date >= ?"
            f" AND f.local_date <= ? AND {where} GROUP BY 1", (*f.span, *params))


# Each report's main figure and the rollup it comes from (the statements above say how).
FLOORS: dict[str, tuple[str, Callable[[_Floor], Statement]]] = {
    "dashboard": ("net and sales per day, store_days", _store_days),
    "sales_trend": ("net and sales per day, store_days", _store_days),
    "categories": ("net and items kept per category, daily_rollups", _categories_floor),
    "profile": ("sales and net per hour, store_hours", _profile_floor),
    "products": ("top 20 skus by net, sku_(chain_)months for whole months and"
                 " sku_(chain_)days for the rest", _products_floor),
    "staff": ("net per store, role and staff member, staff_months for whole months and"
              " staff_days for the rest", _staff_floor),
    "member_structure": ("live members per tier (the store's: registered or bought there),"
                         " members (the chain's) or store_members",
                         _structure_floor),
    "member_activity": ("active members, member_store_days", _activity_floor),
    "funnel": ("members registered per month and those buying within 7 days, members and"
               " member_activity", _funnel_floor),
    "top_up_loyalty": ("top 20 members by principal topped up, sv_topups", _loyalty_floor),
    "points": ("points outstanding per store, points_days", _points_floor),
    "stored_value": ("stored value held per store, sv_days", _stored_value_floor),
    "settlement": ("topped up and spent per store, sv_days", _settlement_floor),
    "campaigns": ("discounts and their amount per campaign (a coupon's, its campaign's),"
                  " sales_facts and coupons", _campaigns_floor),
}


# --- the measurement -------------------------------------------------------------------------


def p95(samples: Sequence[float]) -> float:
    """Nearest rank, as every report and page figure takes it."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _scope(tx: Tx, username: str) -> Scope:
    user = users.get(tx, username)
    return Scope(Principal(user, roles.load(tx)[user.role], None))


def _with_figures(report: dict[str, Any]) -> int:
    """Rows of a report's tables with a figure other than zero after their label (a sales
    trend lists every period even with nothing sold: those rows do not count)."""
    return sum(1 for t in report["tables"] for row in t["rows"]
               if any(isinstance(v, int | float) and not isinstance(v, bool) and v != 0
                      for v in row[1:]))


async def _paired(db: HubDatabase, access: Access, kind: catalog.Kind, q: ReportQuery,
                  ctx: catalog.Context, floor: Statement, runs: int, budget_s: float
                  ) -> dict[str, Any]:
    """p95 of the report (as the API reads it) and of its floor (as the hub's own read), each
    run once untimed first, then alternately (which goes first alternating) up to ``runs``
    times or ``budget_s``, at least ``MIN_RUNS``."""
    def report(tx: Tx, scope: Scope) -> dict[str, Any]:
        return kind.run(tx, scope, q, ctx)

    def bare(tx: Tx) -> list[Any]:
        return tx.all(*floor)

    shown = await access.read(report)
    floor_rows = len(await db.read(bare))
    took: tuple[list[float], list[float]] = ([], [])
    started = time.perf_counter()
    for i in range(runs):
        if i >= MIN_RUNS and time.perf_counter() - started > budget_s:
            break
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            if side == 0:
                await access.read(report)
            else:
                await db.read(bare)
            took[side].append(time.perf_counter() - t)
    report_p95, floor_p95 = p95(took[0]) * 1000, p95(took[1]) * 1000
    return {"p95_ms": round(report_p95, 2), "floor_p95_ms": round(floor_p95, 2),
            "vs_floor": round(floor_p95 / report_p95, 3), "runs": len(took[0]),
            "rows": _with_figures(shown), "floor_rows": floor_rows}


async def _measure_all(url: str, days: int, runs: int, budget_s: float,
                       only: Sequence[str] | None = None) -> dict[str, Any]:
    async with HubDatabase(url) as db:
        scopes = {level: await db.read(functools.partial(_scope, username=username))
                  for level, (username, _role) in USERS.items()}
        region = await db.read(lambda tx: [str(r[0]) for r in tx.all(
            "SELECT store_id FROM stores WHERE region = ? ORDER BY store_id", ("R1",))])
        stores: dict[str, list[str] | None] = {"store": [MANAGED_STORE], "region": region,
                                               "chain": None}
        out: dict[str, Any] = {}
        for slug, kind in catalog.KINDS.items():
            if only is not None and slug not in only:
                continue
            length, grain = PERIODS[slug]
            q = ReportQuery(TODAY - timedelta(days=min(length, days) - 1), TODAY)
            ctx = catalog.Context(now_ms=NOW_MS, chain_zone=ZONE, chain_entity="", grain=grain)
            figures: dict[str, Any] = {"period_days": q.days, "grain": grain,
                                       "floor": FLOORS[slug][0]}
            for level in LEVELS:
                floor = FLOORS[slug][1](_Floor(db.dialect == "postgres", q.start, q.end,
                                               stores[level]))
                figures[level] = await _paired(db, Access(db, scopes[level], None), kind, q,
                                               ctx, floor, runs, budget_s)
                _say(f"{slug} {level}: {figures[level]['p95_ms']} ms, floor"
                     f" {figures[level]['floor_p95_ms']} ms")
            figures["vs_floor"] = min(figures[level]["vs_floor"] for level in LEVELS)
            out[slug] = figures
        return out


def _summary(reports: dict[str, Any]) -> dict[str, Any]:
    """The worst report's figures, and every figure that misses its goal."""
    def worst(level: str) -> str:
        return max(reports, key=lambda k: reports[k][level]["p95_ms"])

    ratio_kind, ratio_level = min(((k, level) for k in reports for level in LEVELS),
                                  key=lambda kl: reports[kl[0]][kl[1]]["vs_floor"])
    misses = []
    for slug, figures in reports.items():
        for level, goal in (("store", GOALS["report_store_p95_ms"]),
                            ("chain", GOALS["report_chain_p95_ms"])):
            if figures[level]["p95_ms"] > goal:
                misses.append(f"{slug} {level}: {figures[level]['p95_ms']} ms > {goal:g} ms")
        for level in LEVELS:
            if figures[level]["vs_floor"] < GOALS["report_vs_floor"]:
                misses.append(f"{slug} {level}: vs floor {figures[level]['vs_floor']}"
                              f" < {GOALS['report_vs_floor']}")
    return {"report_store_p95_ms": reports[worst("store")]["store"]["p95_ms"],
            "report_region_p95_ms": reports[worst("region")]["region"]["p95_ms"],
            "report_chain_p95_ms": reports[worst("chain")]["chain"]["p95_ms"],
            "report_vs_floor": reports[ratio_kind][ratio_level]["vs_floor"],
            "report_worst": {"store": worst("store"), "region": worst("region"),
                             "chain": worst("chain"),
                             "vs_floor": f"{ratio_kind} {ratio_level}"},
            "report_misses": misses}


def vacuum_analyze(url: str) -> float:
    """What autovacuum keeps on a live PostgreSQL database, after the fill: statistics, and the
    visibility map that lets the covering indexes answer alone. Returns the database's MiB."""
    import psycopg

    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    _say(f"VACUUM ANALYZE: {time.perf_counter() - t:.1f} s")
    return float(size[0] if size else 0) / 2**20


def _measure(url: str, members: int, stores: int, days: int, seed: int, runs: int,
             budget_s: float, only: Sequence[str] | None = None) -> dict[str, Any]:
    db = HubDatabase(url).open_sync()
    try:
        t = time.perf_counter()
        rows = fill(db, members, stores, days, seed)
        fill_s = time.perf_counter() - t
    finally:
        db.close_sync()
    if url.startswith(("postgres://", "postgresql://")):
        size_mb = vacuum_analyze(url)
    else:
        path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
        size_mb = sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal")
                      if Path(f"{path}{s}").exists()) / 2**20
    t = time.perf_counter()
    reports = asyncio.run(_measure_all(url, days, runs, budget_s, only))
    return {**_summary(reports), "reports": reports, "report_members": members,
            "report_fill_s": round(fill_s, 1), "report_timing_s": round(time.perf_counter() - t,
                                                                        1),
            "report_db_mb": round(size_mb, 1),
            "report_params": {**PARAMS, "stores": stores, "regions": min(REGIONS, stores),
                              "days": days, "seed": seed, "goals": GOALS,
                              "runs": f"up to {runs} per report and scope (at least"
                                      f" {min(runs, MIN_RUNS)}, then until {budget_s:g} s),"
                                      " after one untimed; p95 nearest rank",
                              "periods": {k: f"{min(n, days)} days to {TODAY}, {g}"
                                          for k, (n, g) in PERIODS.items()},
                              "scopes": {"store": f"store_manager of {MANAGED_STORE}",
                                         "region": "region_manager of R1",
                                         "chain": "hq_admin"},
                              "rows": rows,
                              # A sale's own row, ~3 lines and a tender (module text).
                              "sales_facts_rows_live_estimate": 5 * rows["sales_in_the_year"]}}


def measure_reports(sqlite_url: str, members: int = 1_000_000, *, stores: int = 50,
                    days: int = 365, seed: int = 1, runs: int = RUNS,
                    budget_s: float = BUDGET_S, only: Sequence[str] | None = None
                    ) -> dict[str, Any]:
    """The figures on SQLite, in the (new) database at ``sqlite_url``; ``only``: time just
    these reports (``catalog.KINDS`` slugs), the rest filled but not read."""
    return _measure(sqlite_url, members, stores, days, seed, runs, budget_s, only)


def measure_reports_postgres(admin_url: str, members: int = 1_000_000, *, stores: int = 50,
                             days: int = 365, seed: int = 1, runs: int = RUNS,
                             budget_s: float = BUDGET_S, only: Sequence[str] | None = None
                             ) -> dict[str, Any]:
    """The same on PostgreSQL, in a throwaway database ``mg_reports_<random>``, dropped after;
    every key ends in ``_postgres``."""
    with throwaway_postgres(admin_url, "mg_reports") as url:
        figures = _measure(url, members, stores, days, seed, runs, budget_s, only)
    return {f"{k}_postgres": v for k, v in figures.items()}


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a manual run
    """``python -m hub.bench_reports sqlite:///path MEMBERS``: the figures as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    url, members = args[0], int(args[1]) if len(args) > 1 else 1_000_000
    measure = measure_reports_postgres if url.startswith("postgres") else measure_reports
    print(json.dumps(measure(url, members), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
