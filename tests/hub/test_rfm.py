"""RFM as the chain defines it (shared/HQ.md): quintiles with the tie rule, thresholds, members
without a purchase, values net of refunds, runs kept with cuts and movement, reproducible."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.service import EdgeService
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.ledger.apply import apply_batch
from hub.members import rfm
from hub.projections.catalog import projections
from protocol.hlc import HybridClock
from tests.edge.conftest import key, register, sell
from tests.hub.test_ingest import _store, batches

AS_OF = date(2026, 11, 30)


def test_quintiles_without_ties_are_twenty_percent_each() -> None:
    values = {f"m{i:03d}": i for i in range(100)}
    high = rfm._quintiles(values, higher_better=True)
    low = rfm._quintiles(values, higher_better=False)
    for score in range(1, 6):
        assert sum(1 for s in high.values() if s == score) == 20
    assert high["m099"] == 5 and high["m000"] == 1
    assert low["m000"] == 5 and low["m099"] == 1  # R: fewer days is better


def test_a_block_of_equal_values_stays_whole_in_the_lower_group() -> None:
    """60 one-time buyers and 40 distinct others: all the one-timers score F 1 (the block
    crosses the 20 % and 40 % marks), equal values never differ, the order given never
    matters."""
    values = {f"a{i:02d}": 1 for i in range(60)} | {f"b{i:02d}": 2 + i for i in range(40)}
    scored = rfm._quintiles(values, higher_better=True)
    assert {scored[f"a{i:02d}"] for i in range(60)} == {1}
    # the others: worse = 60.. 99 -> 1 + floor(5 * worse / 100) = 4 (60-79) and 5 (80-99)
    assert [scored[f"b{i:02d}"] for i in (0, 19, 20, 39)] == [4, 4, 5, 5]
    shuffled = list(values.items())
    random.Random(7).shuffle(shuffled)
    assert rfm._quintiles(dict(shuffled), higher_better=True) == scored


def test_business_thresholds_score_by_bounds() -> None:
    f = rfm._by_thresholds({"a": 1, "b": 2, "c": 4, "d": 5, "e": 12}, [2, 3, 5, 10], "f")
    assert f == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    r = rfm._by_thresholds({"a": 3, "b": 30, "c": 31, "d": 200, "e": 400}, [30, 90, 180, 270],
                           "r")
    assert r == {"a": 5, "b": 5, "c": 4, "d": 2, "e": 1}
    with pytest.raises(ValueError, match="four ascending"):
        rfm.RfmParams(as_of=AS_OF, thresholds={"f": [3, 2, 5, 10]})


class _Days:
    """The store's clock set to noon of a past day (China time), as the sales happened: the
    hub dates a sale by its event's HLC. Days only move forward (an HLC never goes back)."""

    def __init__(self, svc: EdgeService, first: date) -> None:
        self.svc, self.ms = svc, 0
        self.at(first)
        svc.context.clock = HybridClock(physical_ms=lambda: self.ms)

    def at(self, day: date) -> None:
        self.ms = int(datetime(day.year, day.month, day.day, 4, tzinfo=UTC).timestamp() * 1000)
        self.svc.context.today_override = day


async def _chain(tmp_path: Path, db: HubDatabase) -> tuple[dict[str, str], dict[str, int]]:
    """Members with known purchases: a regular, a big spender, a once-only buyer, one who
    bought only before the window, one who never bought, one whose sale was refunded."""
    svc = await _store(tmp_path, "S001", 1)
    ids: dict[str, str] = {}
    paid: dict[str, int] = {}  # in the window, net of refunds, as the receipts say
    try:
        days = _Days(svc, AS_OF - timedelta(days=401))
        for i, who in enumerate(("regular", "big", "once", "old", "never", "refunded")):
            ids[who] = (await register(svc, f"1380013800{i}", name=who))["member_id"]
        plan = [(400, "old", 50_000, 1), (200, "big", 900_000, 3), (100, "regular", 5_000, 1),
                (40, "regular", 5_000, 1), (20, "refunded", 8_000, 1),
                (10, "regular", 5_000, 1), (5, "once", 1_000, 1), (3, "refunded", 30_000, 1),
                (2, "regular", 5_000, 1)]
        for ago, who, amount, qty in plan:
            days.at(AS_OF - timedelta(days=ago))
            sold = await sell(svc, [("A", "grocery", qty, amount)], member_id=ids[who])
            if ago < 365:
                paid[who] = paid.get(who, 0) + sold["total"]
            if (ago, who) == (3, "refunded"):  # given back the same day
                back = await svc.refund(terminal_id="POS-1", idem_key=key(),
                                        sale_id=sold["sale_id"], lines=None)
                paid[who] -= back["amount"]
    finally:
        await svc.close()
    for batch in batches(str(svc.config.database.path), "S001", 50):
        await db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))
    await ProjectionRunner(db, projections("Asia/Shanghai")).catch_up()
    return ids, paid


async def test_a_run_is_kept_reproducible_and_moves_from_the_previous(
        tmp_path: Path, hub_db: HubDatabase) -> None:
    ids, paid = await _chain(tmp_path, hub_db)
    params = rfm.RfmParams(as_of=AS_OF, window_days=365)
    first = await hub_db.transaction(lambda tx: rfm.run(tx, params, 1))
    second = await hub_db.transaction(lambda tx: rfm.run(tx, params, 2))

    rows: dict[str, dict[str, tuple[Any, ...]]] = {}
    for run in (first, second):
        found = await hub_db.read(lambda tx, run=run: tx.all(
            "SELECT member_id, recency_days, frequency, monetary, r, f, m, grp FROM rfm_scores"
            " WHERE run_id = ? ORDER BY member_id", (run["run_id"],)))
        rows[run["run_id"]] = {r[0]: tuple(r[1:]) for r in found}

    def scores(run_id: str) -> dict[str, tuple[Any, ...]]:
        return rows[run_id]

    assert scores(first["run_id"]) == scores(second["run_id"])  # the same log, the same run
    mine = scores(first["run_id"])
    # (recency_days, frequency, monetary, r, f, m, group)
    assert mine[ids["regular"]][:3] == (2, 4, paid["regular"])
    assert mine[ids["big"]][:3] == (200, 1, paid["big"])
    # the refunded sale counts as a purchase, its money does not
    assert mine[ids["refunded"]][:3] == (3, 2, paid["refunded"])
    assert paid["refunded"] < 30_000
    for nobody in ("old", "never"):  # no purchase in the window: not ranked, scores 0
        assert mine[ids[nobody]] == (None, None, None, 0, 0, 0, rfm.NO_PURCHASE)
    # Four ranked members, each a quarter of the ranking: the best sits from 75 % to 100 %,
    # and by the rule takes the score of its lowest position (75 %: 4). R by days 2, 3, 5, 200.
    assert [mine[ids[w]][3] for w in ("regular", "refunded", "once", "big")] == [4, 3, 2, 1]
    assert mine[ids["big"]][5] == 4 and mine[ids["once"]][5] == 1  # M
    assert first["members"] == 6 and first["previous_run"] is None
    assert second["previous_run"] == first["run_id"]
    assert first["sizes"]["r"]["0"] == 2
    # Cuts: the values each score spans; movement: everyone stayed where they were.
    assert [(c["score"], c["min"], c["max"]) for c in first["cuts"]["r"]] == [
        (4, 2, 2), (3, 3, 3), (2, 5, 5), (1, 200, 200)]
    for dim in rfm.DIMENSIONS:
        moved = second["movement"][dim]
        assert sum(moved[i][i] for i in range(6)) == 6
    assert first["groups"]["HHH"]["name"] == "重要价值"

    # Items instead of purchases, and thresholds for F.
    by_items = rfm.RfmParams(as_of=AS_OF, f_measure="items", thresholds={"f": [2, 3, 4, 5]})
    third = await hub_db.transaction(lambda tx: rfm.run(tx, by_items, 3))
    big = await hub_db.read(lambda tx: tx.one(
        "SELECT frequency, f FROM rfm_scores WHERE run_id = ? AND member_id = ?",
        (third["run_id"], ids["big"])))
    assert tuple(big) == (3, 3)


@pytest.mark.parametrize("thresholds", [{}, {"f": [2, 3, 5, 10], "r": [30, 90, 180, 270]}])
async def test_the_database_scores_as_the_rule_says(hub_db: HubDatabase,
                                                    thresholds: dict[str, list[int]]) -> None:
    """The run is computed in SQL (RANK, thresholds as CASE); ``rfm.score`` is the rule in
    Python. On the bench's generated year of sales (many ties), both agree member for member."""
    from hub import bench_rfm

    await hub_db.transaction(lambda tx: bench_rfm._load(tx, 500))
    params = rfm.RfmParams(as_of=bench_rfm.AS_OF, window_days=200,
                           thresholds=thresholds)  # type: ignore[arg-type]
    made = await hub_db.transaction(lambda tx: rfm.run(tx, params, 1))
    expected = await hub_db.read(lambda tx: rfm.score(rfm.aggregate(tx, params), params))
    got = await hub_db.read(lambda tx: {r[0]: {
        "recency_days": r[1], "frequency": r[2], "monetary": r[3], "r": r[4], "f": r[5],
        "m": r[6], "group": r[7]} for r in tx.all(
        "SELECT member_id, recency_days, frequency, monetary, r, f, m, grp FROM rfm_scores"
        " WHERE run_id = ?", (made["run_id"],))})
    assert got == expected
    assert 0 < made["sizes"]["r"]["0"] < 500  # some bought in the window, some did not
    # The summary agrees with the scores: sizes, the values each score spans, the groups.
    field = {"r": "recency_days", "f": "frequency", "m": "monetary"}
    for dim in rfm.DIMENSIONS:
        assert made["sizes"][dim] == {str(k): sum(1 for e in expected.values() if e[dim] == k)
                                      for k in range(6)}
        assert made["cuts"][dim] == [
            {"score": k, "min": min(vals), "max": max(vals), "members": len(vals)}
            for k in range(5, 0, -1)
            if (vals := [e[field[dim]] for e in expected.values() if e[dim] == k])]
    assert {g: v["members"] for g, v in made["groups"].items()} == dict(
        Counter(e["group"] for e in expected.values()))

    # A month later: the movement per dimension and the members sent again are exactly the
    # members whose scores and groups changed.
    later = params.model_copy(update={"as_of": bench_rfm.AS_OF + timedelta(days=30)})
    moved = await hub_db.transaction(lambda tx: rfm.run(tx, later, 2))
    now = await hub_db.read(lambda tx: rfm.score(rfm.aggregate(tx, later), later))
    for dim in rfm.DIMENSIONS:
        matrix = [[0] * 6 for _ in range(6)]
        for member, e in now.items():
            matrix[expected[member][dim]][e[dim]] += 1
        assert moved["movement"][dim] == matrix
    assert moved["directory_churn"] == sum(
        1 for member, e in now.items() if e["group"] != expected[member]["group"]) > 0


async def test_the_rf_grid_is_kept_with_the_run_and_counted_for_a_run_kept_without(
        tmp_path: Path, hub_db: HubDatabase) -> None:
    await _chain(tmp_path, hub_db)
    done = await hub_db.transaction(
        lambda tx: rfm.run(tx, rfm.RfmParams(as_of=AS_OF, window_days=365), 1))
    run_id = done["run_id"]
    assert rfm.RF_GRID not in done  # the run's view: the grid has its own route

    def counted(tx: Tx) -> list[list[int]]:
        grid = [[0] * 6 for _ in range(6)]
        for r, f, n in tx.all("SELECT r, f, count(*) FROM rfm_scores WHERE run_id = ?"
                              " GROUP BY r, f", (run_id,)):
            grid[int(r)][int(f)] = int(n)
        return grid

    rows = await hub_db.read(counted)
    assert sum(map(sum, rows)) == 6 and rows[0][0] == 2  # never or only before the window
    kept = await hub_db.read(lambda tx: rfm.rf_grid(tx, run_id))
    assert kept == rows
    # The kept grid is what is read: a run's summary is not recounted on each view ...
    summary = json.loads(await hub_db.read(lambda tx: tx.scalar(
        "SELECT summary FROM rfm_runs WHERE run_id = ?", (run_id,))))
    assert summary[rfm.RF_GRID] == rows
    summary[rfm.RF_GRID][5][5] += 1
    await hub_db.transaction(lambda tx: tx.execute(
        "UPDATE rfm_runs SET summary = ? WHERE run_id = ?", (json.dumps(summary), run_id)))
    assert (await hub_db.read(lambda tx: rfm.rf_grid(tx, run_id)))[5][5] == rows[5][5] + 1
    # ... and a run kept before grids were kept is counted from its rows.
    del summary[rfm.RF_GRID]
    await hub_db.transaction(lambda tx: tx.execute(
        "UPDATE rfm_runs SET summary = ? WHERE run_id = ?", (json.dumps(summary), run_id)))
    assert await hub_db.read(lambda tx: rfm.rf_grid(tx, run_id)) == rows
