"""``membergate-hub bench`` at toy sizes: every figure is there and positive (no timing asserts)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import msgpack
import pytest

from hub.bench import failed, make_workload, measure_writes_replayed
from hub.bench_reports import LEVELS, measure_reports
from hub.cli import main
from hub.reports.catalog import KINDS
from protocol.codec import decode_batch
from tests.support.mosquitto import MOSQUITTO

PROJECTION_FIGURES = ("projection_catchup_events_per_s", "projection_raw_insert_events_per_s",
                      "projection_catchup_vs_raw", "projection_fact_rows",
                      "projection_all_rows_insert_events_per_s", "projection_rows_held",
                      "projection_catchup_vs_all_rows")
FIGURES = (
    "merge_events_per_s", "decode_events_per_s", "batches_per_commit",
    "raw_insert_rows_per_s", "merge_vs_raw", "merge_events_per_s_postgres", "drain_events_per_s",
    "drain_transport_floor_events_per_s", "writes_replayed_events_per_s",
    "rows_written_per_event", "merge_vs_writes_replayed", "merge_under_reads_events_per_s",
    "reports_during_merge", "merge_under_reads_vs_quiet", *PROJECTION_FIGURES,
)


def test_the_workload_is_what_stores_send() -> None:
    work = make_workload(3, 1_000, batch_events=100)
    assert work.events == 1_000 and len(work.payloads) == 12  # 334 + 333 + 333, by 100
    seen: dict[str, int] = {}
    for payload in work.payloads:
        batch = decode_batch(payload)  # valid as the hub reads it
        expected = seen.get(batch.store_id, 0) + 1
        assert batch.events[0].seq == expected  # each store's batches consecutive, in order
        seen[batch.store_id] = batch.events[-1].seq
        assert msgpack.unpackb(payload)["store_id"] == batch.store_id
    assert seen == {"S001": 334, "S002": 333, "S003": 333}
    assert set(work.by_type) == {"member.registered", "sale.finalized", "points.earned",
                                 "sv.spent"}
    # Stores are interleaved the way a hub sees a fleet: first batch of each, then the second.
    assert [decode_batch(p).store_id for p in work.payloads[:3]] == ["S001", "S002", "S003"]


def test_bench_prints_one_json_object_with_every_figure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"{MOSQUITTO} not installed")
    rc = main(["bench", "--json", "--stores", "2", "--events", "2000", "--drain-events", "2000",
               "--workdir", str(tmp_path), "--scope-members", "3000",
               "--rfm-members", "2000", "--segment-members", "2000",
               "--segments", "30", "--journey-members", "3000",
               "--dispatch-messages", "200", "--report-members", "0",
               "--page-members", "0"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0, failed(result)
    for key in FIGURES:
        assert isinstance(result[key], float | int) and result[key] > 0, key
    assert result["postgres"].startswith("ok") and result["drain"].startswith("ok")
    assert result["params"]["stores"] == 2 and result["params"]["events"] == 2000
    assert result["params"]["drain_events"] == 2000
    assert result["targets"] == {"merge_events_per_s": 50_000, "drain_events_per_s": 20_000,
                                 "merge_under_reads_vs_quiet": 0.8,
                                 "projection_catchup_vs_raw": 0.5}
    assert result["drain_duplicates"] == 0 and result["drain_gaps"] == 0
    for key in ("scoped_vs_unscoped_store", "scoped_vs_unscoped_region",
                "scoped_vs_unscoped_store_postgres", "scoped_vs_unscoped_region_postgres"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["scope_members"] == result["scope_members_postgres"] == 3000
    assert result["rfm_members"] == result["rfm_members_postgres"] == 2000
    assert result["rfm_run_s"] >= 0 and result["rfm_run_vs_floor"] > 0
    assert result["rfm_ranked"] > 0
    # Segments: a preview counts what the hand-written join counts; a monthly run's churn;
    # members of a segment within seconds of their batch, under the drain.
    assert result["segment_preview_count"] > 0 and result["segment_preview_vs_floor"] > 0
    assert 0 < result["rfm_directory_churn"] <= 2000
    assert result["segment_freshness_members"] > 0
    assert 0 <= result["segment_freshness_p95_s"] <= result["segment_freshness_max_s"]
    assert result["segments_active"] == result["segments_whole_evaluated"] == 30
    assert result["segments_whole_rows"] > 0 and result["segments_pass_members"] == 2000
    # Journeys: the pass enters whom the bare select selects; the outage loses and repeats
    # nothing.
    assert result["birthday_entered"] == result["birthday_selected"] > 0
    assert result["birthday_pass_vs_floor"] > 0 and result["dispatch_vs_floor"] > 0
    assert result["outage_lost"] == 0 and result["outage_duplicated"] == 0


def test_breakdown_says_where_the_apply_time_goes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--json", "--stores", "3", "--events", "3000", "--drain-events", "0",
               "--no-postgres", "--breakdown", "--workdir", str(tmp_path),
               "--rfm-members", "1000", "--segment-members", "0", "--scope-members", "0",
               "--journey-members", "0", "--dispatch-messages", "0",
               "--report-members", "0", "--page-members", "0"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0, failed(result)
    for key in PROJECTION_FIGURES:  # the projections' catch-up runs without drain or postgres
        assert isinstance(result[key], float | int) and result[key] > 0, key
    # The second floor inserts every projection table's rows, the sales facts among them.
    assert result["projection_rows_held"] > result["projection_fact_rows"]
    parts = result["apply_breakdown"]
    statements = parts["statement_us_per_event"]
    # Every table the apply writes for this workload shows up under its statement kind.
    for kind in ("INSERT events", "INSERT shares", "INSERT spend_months", "INSERT grants",
                 "INSERT members", "INSERT cards", "UPDATE members", "SELECT members"):
        assert statements[kind] > 0, kind
    # The parts add up to the whole (each is rounded to 0.01 µs).
    whole = parts["commit_us_per_event"] + parts["python_us_per_event"] + sum(statements.values())
    assert abs(whole - parts["apply_us_per_event"]) < 0.01 * (len(statements) + 3)
    assert parts["apply_events_per_s"] == pytest.approx(1e6 / parts["apply_us_per_event"],
                                                        rel=0.01)


def test_the_replayed_writes_are_the_merges_rows_and_nothing_else(tmp_path: Path) -> None:
    """The second floor replays the writes recorded from a merge; the database they leave
    must be the one the merge left, table by table (or it is not a floor of the same work)."""
    work = make_workload(4, 4_000, batch_events=200)
    groups = [3, 1, 8, 2, 6]  # uneven, as group commits come
    assert sum(groups) == len(work.payloads)
    figures = measure_writes_replayed(tmp_path / "replayed.db", work, groups)
    assert figures["events_per_s"] > 0
    assert 1 < figures["rows_per_event"] < 10  # the log row and the member rows

    def tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
        conn = sqlite3.connect(path)
        try:
            names = [n for (n,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr)
                    for n in names}
        finally:
            conn.close()

    merged, replayed = tables(tmp_path / "replayed-merged.db"), tables(tmp_path / "replayed.db")
    assert merged == replayed
    assert len(merged["events"]) == 4_000 and merged["shares"] and merged["grants"]


def test_the_report_figures_come_from_rows_every_report_reads(tmp_path: Path) -> None:
    """The reports part at a toy size: every key and ratio, and a fill the reports find rows
    in (a fill that left a table empty would time a report over nothing)."""
    result = measure_reports(f"sqlite:///{tmp_path / 'reports.db'}", 3000, stores=3, days=30,
                             runs=2)
    for key in ("report_store_p95_ms", "report_region_p95_ms", "report_chain_p95_ms",
                "report_vs_floor", "report_fill_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["report_members"] == 3000
    reports = result["reports"]
    assert set(reports) == set(KINDS)
    for kind, figures in reports.items():
        for level in LEVELS:
            f = figures[level]
            assert f["p95_ms"] > 0 and f["floor_p95_ms"] > 0 and f["vs_floor"] > 0, (kind, level)
            assert f["runs"] == 2
            # Every report finds figures for every caller, and its floor rows to read.
            assert f["rows"] > 0 and f["floor_rows"] > 0, (kind, level)
        assert figures["vs_floor"] == min(figures[level]["vs_floor"] for level in LEVELS)
    assert result["report_chain_p95_ms"] == max(r["chain"]["p95_ms"] for r in reports.values())
    assert result["report_vs_floor"] == min(r["vs_floor"] for r in reports.values())
    # A store manager sees a part of what HQ sees: its own staff only.
    assert reports["staff"]["store"]["rows"] < reports["staff"]["chain"]["rows"]
    rows = result["report_params"]["rows"]
    assert rows["members"] > 3000 and rows["member_store_days"] > 3000  # aliases; purchases
    assert all(n > 0 for n in rows.values()), rows
