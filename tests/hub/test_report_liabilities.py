"""The liabilities reports (``hub.reports.liabilities``) on both backends, read as the API reads
them: points outstanding, their expiry and breakage; stored value outstanding by issuing store
and legal entity at quarter ends (each store's own calendar: a top-up at 23:30 on 31 March in
Shanghai is the first quarter's, one at 00:30 on 1 April is not); inter-store settlement
with a spend drawn pro rata from two stores' deposits, one spent ahead of its top-up, deposits
used both ways between two stores in a month, and the online channel's. Figures are worked
out here by hand from the planned events (and the stored value checked against the ledger's
balances); a store manager sees only their store's figures and members; bad input is refused
with its code."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from hub.auth import users
from hub.auth.scope import Scope
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.projections.catalog import projections
from hub.reports import liabilities, members
from hub.reports.period import ReportQuery
from hub.stores import registry
from hub.stores.registry import StoreRecord
from protocol.errors import ServiceError
from protocol.events import (
    EventBody,
    LotDraw,
    MemberRegistered,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    StoredValueRefunded,
    StoredValueSpent,
    StoredValueToppedUp,
)
from tests.hub.test_report_members import NOW, STORES, ZONE, Streams, ms, run, table

Q = ReportQuery(date(2026, 1, 1), date(2026, 6, 30))
CHAIN = "Chain Co"
HOMES = {"X": "S001", "Y": "S002", "Z": "S003", "V": "S003"}


def top(m: str, principal: int, bonus: int = 0) -> StoredValueToppedUp:
    return StoredValueToppedUp(member_id=m, topup_id=f"t-{m}-{principal}-{bonus}",
                               currency="CNY", principal=principal, bonus=bonus)


def spend(m: str, principal: int, bonus: int = 0) -> StoredValueSpent:
    return StoredValueSpent(member_id=m, sale_id=f"s-{m}-{principal}-{bonus}", currency="CNY",
                            principal=principal, bonus=bonus)


def earn(m: str, lot: str, points: int, expires: date | None) -> PointsEarned:
    return PointsEarned(member_id=m, lot_id=lot, points=points, expires_on=expires)


# (UTC time, store, event), in the order the hub logs them.
TIMELINE: list[tuple[str, str, EventBody]] = [
    # Points: X's lot L6 expired before the period (not part of its history).
    ("2025-12-01T02:00:00", "S001", earn("X", "L6", 100, date(2025, 12, 31))),
    ("2025-12-31T15:00:00", "S001", PointsExpired(member_id="X", lot_id="L6", points=100)),
    ("2026-01-10T02:00:00", "S001", top("X", 600, 60)),
    ("2026-01-10T02:01:00", "S001", earn("X", "L1", 500, date(2026, 12, 31))),
    ("2026-01-11T02:00:00", "S002", top("X", 300)),
    ("2026-01-15T02:00:00", "S001", earn("Y", "L3", 200, date(2026, 3, 31))),
    ("2026-02-01T02:00:00", "S002", earn("X", "L2", 300, date(2027, 1, 31))),
    # X spends 1 260 at S003, which holds none of it: S001's 600 and S002's 300 pay pro rata,
    # 300 is spent ahead (covered by X's next top-up, at S002 on 2 March); the bonus is S001's.
    ("2026-02-05T10:00:00", "S003", spend("X", 1_200, 60)),
    ("2026-02-10T02:00:00", "S002", PointsRedeemed(member_id="Y", points=50, sale_id="p1",
                                                   lots=[LotDraw(lot_id="L3", points=50)])),
    # V's deposit at S003 pays for what V buys at S002: S002 owes S003 300, S003 owes S002 100.
    ("2026-02-20T10:00:00", "S003", top("V", 100)),
    ("2026-02-21T02:00:00", "S002", spend("V", 100)),
    ("2026-03-01T10:00:00", "S003", PointsRedeemed(member_id="X", points=400, sale_id="p2",
                                                   lots=[LotDraw(lot_id="L1", points=400)])),
    ("2026-03-02T02:00:00", "S002", top("X", 500, 50)),
    ("2026-03-05T10:00:00", "S003", PointsAdjusted(member_id="X", delta=100,
                                                   reason="refund_return", sale_id="p2",
                                                   lots=[LotDraw(lot_id="L1", points=100)])),
    # 23:30 on 31 March in Shanghai, then 00:30 on 1 April.
    ("2026-03-31T15:30:00", "S001", top("Y", 100)),
    ("2026-03-31T16:30:00", "S002", top("Y", 200)),
    ("2026-03-31T17:00:00", "S001", PointsExpired(member_id="Y", lot_id="L3", points=150)),
    # Y spends 100 at S003: S001 holds 100 of Y's, S002 200: 33 and 67 (largest remainder).
    ("2026-04-10T10:00:00", "S003", spend("Y", 100)),
    ("2026-05-01T10:00:00", "S003", StoredValueRefunded(member_id="Y", sale_id="s-Y-100-0",
                                                        refund_id="r1", currency="CNY",
                                                        principal=40, bonus=0)),
    ("2026-05-01T10:01:00", "S003", earn("Z", "L4", 1_000, None)),
    ("2026-05-03T10:00:00", "S003", PointsAdjusted(member_id="Z", delta=-200,
                                                   reason="refund_reversal", sale_id="p3",
                                                   lots=[LotDraw(lot_id="L4", points=200)])),
    # Z spends at S001 before its top-up (online) is merged; then bonus only.
    ("2026-05-10T02:00:00", "S001", spend("Z", 80)),
    ("2026-05-12T02:00:00", "ONLINE", top("Z", 500, 100)),
    ("2026-06-01T02:00:00", "S001", spend("Z", 0, 20)),
    # Y spends at S002, which holds 133 of Y's: its own deposit pays, nobody owes anybody.
    ("2026-06-10T02:00:00", "S002", spend("Y", 50)),
    ("2026-06-01T02:01:00", "S002", earn("V", "L5", 50, date(2026, 6, 30))),
]


async def build(db: HubDatabase) -> None:
    entity = {"S001": "East Co", "S002": "East Co", "S003": None}
    await db.transaction(lambda tx: registry.upsert(tx, [
        StoreRecord(store_id=s, name=name, region=region, legal_entity=entity[s],
                    timezone=zone if zone != ZONE else None)
        for s, (region, zone, name) in STORES.items() if s != "ONLINE"]))
    streams = Streams(db)
    for m, home in HOMES.items():
        await streams.send(home, [(ms("2025-11-01T00:00:00"), MemberRegistered(
            member_id=m, member_code=f"C-{m}", phone=f"+861390000{ord(m)}", name=m))])
    # Consecutive events of a store go in one batch: the log's order is the timeline's.
    run_store, batch = "", list[tuple[int, EventBody]]()
    for at, store, body in [*TIMELINE, ("", "", None)]:
        if store != run_store and batch:
            await streams.send(run_store, batch)
            batch = []
        run_store = store
        if body is not None:
            batch.append((ms(at), body))

    def people(tx: Tx) -> None:
        tx.execute("UPDATE members SET tier = 'gold' WHERE member_id = 'Z'")
        for name, role, where in (("boss", "hq_admin", []), ("s3.mgr", "store_manager",
                                                              ["S003"])):
            users.add(tx, username=name, role=role, password_hash=None, now_ms=NOW,
                      stores=where)

    await db.transaction(people)
    await ProjectionRunner(db, projections(ZONE)).catch_up()


def common(**more: Any) -> dict[str, Any]:
    return {"now_ms": NOW, "chain_zone": ZONE, **more}


async def test_liabilities(hub_db: HubDatabase) -> None:
    await build(hub_db)
    await check_points(hub_db)
    await check_stored_value(hub_db)
    await check_settlement(hub_db)
    await check_refusals(hub_db)
    # No member was ever merged here: the top-up ranking reads the ids as written.
    got = await run(hub_db, "boss", lambda tx, s: members.top_up_loyalty(tx, s, Q, **common()))
    assert [(r["member_code"], r["topups"], r["topup_principal"])
            for r in table(got, "members")] == [
        ("C-X", 3, 1_400), ("C-Z", 1, 500), ("C-Y", 2, 300), ("C-V", 1, 100)]


async def check_points(db: HubDatabase) -> None:
    got = await run(db, "boss", lambda tx, s: liabilities.points(tx, s, Q, **common()))
    # Shares: what each store's events added. S001: L1, L3, L6 earned, L6 and L3's rest
    # expired; S002: L2 and L5 earned, Y's 50 redeemed; S003: X's 400 redeemed and 100
    # returned, Z's L4 earned and 200 reversed.
    by_store = {r["store_id"]: r["points_outstanding"] for r in table(got, "by_store")}
    assert by_store == {"S001": 500 + 200 + 100 - 100 - 150, "S002": 300 - 50 + 50,
                        "S003": -400 + 100 + 1_000 - 200}
    assert got["totals"]["points_outstanding"] == 1_350
    # What is left in the lots, by expiry month: L1 500 - 400 + 100; L5, expired on paper but
    # not yet by the log; L4 never expires.
    assert [(r["expires"], r["expiring_points"]) for r in table(got, "expiry")] == [
        ("2026-06", 50), ("2026-12", 200), ("2027-01", 300), ("never", 800)]
    # In the period 450 were redeemed, 100 of them given back, and 150 expired (L6's 100
    # expired before it): 150 / (350 + 150).
    assert table(got, "breakage") == [{"redeemed": 350, "expired": 150, "breakage_rate": 0.3,
                                       "breakage": 405}]
    assert got["notes"]

    # The rollups say what the ledger says.
    ledger = await db.read(lambda tx: {str(r[0]): int(r[1]) for r in tx.all(
        "SELECT store_id, sum(points) FROM shares GROUP BY store_id") if int(r[1])})
    assert ledger == by_store

    # S003's manager: S003's books (its share, X's redemption there included), the lots
    # issued at S003, and S003's history (no expiry there).
    mine = await run(db, "s3.mgr", lambda tx, s: liabilities.points(tx, s, Q, **common()))
    assert table(mine, "by_store") == [{"store_id": "S003", "store_name": "西一店",
                                        "points_outstanding": 500}]
    assert [(r["expires"], r["expiring_points"]) for r in table(mine, "expiry")] == [
        ("never", 800)]
    assert table(mine, "breakage")[0] == {"redeemed": 300, "expired": 0, "breakage_rate": 0.0,
                                          "breakage": 0}
    # Gold members only (Z): their balances and lots. S003's manager does not see X, whose
    # only link to S003 is a redemption (no purchase there).
    gold = await run(db, "boss", lambda tx, s: liabilities.points(
        tx, s, ReportQuery(Q.start, Q.end, tier="gold"), **common()))
    assert gold["totals"]["points_outstanding"] == 800
    assert [(r["expires"], r["expiring_points"]) for r in table(gold, "expiry")] == [
        ("never", 800)]
    await db.transaction(lambda tx: tx.execute(
        "UPDATE members SET tier = 'gold' WHERE member_id = 'X'"))
    gold = await run(db, "s3.mgr", lambda tx, s: liabilities.points(
        tx, s, ReportQuery(Q.start, Q.end, tier="gold"), **common()))
    assert gold["totals"]["points_outstanding"] == 800
    await db.transaction(lambda tx: tx.execute(
        "UPDATE members SET tier = 'standard' WHERE member_id = 'X'"))


async def check_stored_value(db: HubDatabase) -> None:
    got = await run(db, "boss", lambda tx, s: liabilities.stored_value(
        tx, s, Q, **common(chain_entity=CHAIN)))
    rows = {(r["as_of"], r["store_id"]): (r["legal_entity"], r["principal"], r["bonus"])
            for r in table(got, "by_store")}
    q2 = {"S001": ("East Co", 600 - 600 + 100 - 33, 0),
          "S002": ("East Co", 300 - 300 + 500 - 300 - 100 + 100 + 200 - 67 - 50, 50),
          "S003": (CHAIN, 100 - 100 + 40, 0),
          "ONLINE": (CHAIN, 500 - 80, 100 - 20)}
    assert rows == {
        ("2026-03-31", "S001"): ("East Co", 100, 0), ("2026-03-31", "S002"): ("East Co", 200, 50),
        ("2026-03-31", "S003"): (CHAIN, 0, 0), ("2026-03-31", "ONLINE"): (CHAIN, 0, 0),
        **{(when, s): v for when in ("2026-06-30", "now") for s, v in q2.items()}}
    assert {(r["as_of"], r["legal_entity"]): (r["principal"], r["bonus"])
            for r in table(got, "by_entity")} == {
        ("2026-03-31", "East Co"): (300, 50), ("2026-03-31", CHAIN): (0, 0),
        ("2026-06-30", "East Co"): (350, 50), ("2026-06-30", CHAIN): (460, 80),
        ("now", "East Co"): (350, 50), ("now", CHAIN): (460, 80)}
    # Over all stores it is the ledger's balance.
    ledger = await db.read(lambda tx: tuple(int(v) for v in tx.one(
        "SELECT sum(sv_principal), sum(sv_bonus) FROM shares")))
    assert (got["totals"]["principal"], got["totals"]["bonus"]) == ledger == (810, 130)
    assert got["totals"]["quarter_ends"] == ["2026-03-31", "2026-06-30"]

    mine = await run(db, "s3.mgr", lambda tx, s: liabilities.stored_value(
        tx, s, Q, **common(chain_entity=CHAIN)))
    assert {r["store_id"] for r in table(mine, "by_store")} == {"S003"}
    assert mine["totals"]["principal"] == 40


async def check_settlement(db: HubDatabase) -> None:
    got = await run(db, "boss", lambda tx, s: liabilities.settlement(tx, s, Q, **common()))
    stores = {(r["period"], r["store_id"]): (r["topped_up"], r["spent"], r["net_position"])
              for r in table(got, "stores")}
    assert stores == {
        ("2026-01", "S001"): (660, 0, 0), ("2026-01", "S002"): (300, 0, 0),
        ("2026-02", "S001"): (0, 0, -660), ("2026-02", "S002"): (0, 100, -300 + 100),
        ("2026-02", "S003"): (100, 1_260, 960 - 100),
        ("2026-03", "S001"): (100, 0, 0), ("2026-03", "S002"): (550, 0, -300),
        ("2026-03", "S003"): (0, 0, 300),
        ("2026-04", "S001"): (0, 0, -33), ("2026-04", "S002"): (200, 0, -67),
        ("2026-04", "S003"): (0, 100, 100),
        ("2026-05", "S001"): (0, 80, 80), ("2026-05", "ONLINE"): (600, 0, -80),
        ("2026-06", "S001"): (0, 20, 20), ("2026-06", "ONLINE"): (0, 0, -20),
        ("2026-06", "S002"): (0, 50, 0)}
    pairs = [(r["period"], r["owes"], r["owed"], r["principal"], r["bonus"], r["total"])
             for r in table(got, "pairs")]
    assert pairs == [("2026-02", "S001", "S003", 600, 60, 660),
                     ("2026-02", "S002", "S003", 200, 0, 200),
                     ("2026-03", "S002", "S003", 300, 0, 300),
                     ("2026-04", "S001", "S003", 33, 0, 33),
                     ("2026-04", "S002", "S003", 67, 0, 67),
                     ("2026-05", "ONLINE", "S001", 80, 0, 80),
                     ("2026-06", "ONLINE", "S001", 0, 20, 20)]
    # Every period's positions net to nothing across the chain.
    for label in {k[0] for k in stores}:
        assert sum(v[2] for k, v in stores.items() if k[0] == label) == 0

    mine = await run(db, "s3.mgr", lambda tx, s: liabilities.settlement(
        tx, s, Q, **common(grain="week")))
    assert {r["store_id"] for r in table(mine, "stores")} == {"S003"}
    assert sum(r["net_position"] for r in table(mine, "stores")) == 960 - 100 + 300 + 100
    # By week, V's deposit spent at S002 (week 8) no longer nets with X's (week 6).
    assert sorted((r["period"], r["owes"], r["owed"], r["total"])
                  for r in table(mine, "pairs")) == [
        ("2026-W06", "S001", "S003", 660), ("2026-W06", "S002", "S003", 300),
        ("2026-W08", "S003", "S002", 100), ("2026-W10", "S002", "S003", 300),
        ("2026-W15", "S001", "S003", 33), ("2026-W15", "S002", "S003", 67)]


async def check_refusals(db: HubDatabase) -> None:
    async def refused(username: str, fn: Callable[[Tx, Scope], Any]) -> ServiceError:
        with pytest.raises(ServiceError) as caught:
            await run(db, username, fn)
        return caught.value

    err = await refused("boss", lambda tx, s: liabilities.stored_value(
        tx, s, ReportQuery(Q.start, Q.end, tier="gold"), **common(chain_entity=CHAIN)))
    assert (err.code, err.status, err.details.get("part")) == ("filter_not_supported", 422,
                                                                "tier")
    err = await refused("boss", lambda tx, s: liabilities.points(
        tx, s, ReportQuery(Q.start, Q.end, category="x"), **common()))
    assert err.code == "filter_not_supported"
    err = await refused("boss", lambda tx, s: liabilities.settlement(
        tx, s, Q, **common(grain="quarter")))
    assert (err.code, err.status) == ("unknown_grain", 422)
    err = await refused("s3.mgr", lambda tx, s: liabilities.settlement(
        tx, s, ReportQuery(Q.start, Q.end, store_id="S001"), **common()))
    assert (err.code, err.status) == ("filter_out_of_scope", 403)
    err = await refused("boss", lambda tx, s: liabilities.points(
        tx, s, ReportQuery(Q.start, Q.end, store_id="S999"), **common()))
    assert (err.code, err.status) == ("unknown_store", 404)
