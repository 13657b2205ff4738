"""The console's page figures (``hub.bench_pages``) at a toy size, in Debian's Chromium against
a real ``membergate-hub run``: every page each caller may open is timed, and none they may not;
a page that does not work stops the run instead of giving a figure (no timing asserts)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from hub.bench_pages import PageFailed, _sign_ins, _time_pages, measure_pages, pages, serving
from hub.bench_reports import LEVELS, fill
from hub.core.db import HubDatabase
from hub.reports.catalog import KINDS


def test_every_page_each_caller_may_open_is_timed_in_chromium(tmp_path: Path) -> None:
    result = measure_pages(f"sqlite:///{tmp_path / 'pages.db'}", 2000, stores=3, days=30,
                           runs=1)
    timed = result["page_load"]
    assert set(timed) == set(LEVELS)
    every = {p.name for p in pages("m", "p")}
    assert set(KINDS) <= every and len(every) == len(KINDS) + 10
    # HQ opens every page; the managers every page but the fleet, RFM, users and the audit.
    assert set(timed["chain"]) == every
    for level in ("store", "region"):
        assert set(timed[level]) == every - {"fleet", "rfm", "users", "audit"}, level
    for level, figures in timed.items():
        for name, f in figures.items():
            assert f["runs"] == 1, (level, name)
            # The hub's first byte comes before the load's end, and both took time.
            assert 0 < f["first_byte_p95_ms"] <= f["p95_ms"], (level, name)
        worst = result["page_load_worst"][level]
        assert result[f"page_load_{level}_p95_ms"] == figures[worst]["p95_ms"] == max(
            f["p95_ms"] for f in figures.values())


def test_a_page_that_fails_gives_no_figure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pages.db'}"
    db = HubDatabase(url).open_sync()
    try:
        fill(db, 600, stores=3, days=10)
        password = secrets.token_urlsafe(18)
        found = db.run_sync(lambda tx: _sign_ins(tx, password))
    finally:
        db.close_sync()
    found["member_id"] = "nobody"  # a card that cannot open
    work = tmp_path / "hub"
    work.mkdir()
    with serving(url, work) as base, pytest.raises(PageFailed, match="nobody: status 404"):
        _time_pages(base, password, found, 1, 1.0, "/usr/bin/chromium")
