"""What the console's pages cost in a real browser (the issue's "page load in Chromium,
navigation start to charts drawn: p95 per page, reported"), at the report bench's size.

The hub runs as an operator runs it, ``membergate-hub run`` in its own process, over a database
filled by ``hub.bench_reports.fill`` (a million members and a year of sales at 50 stores).
Debian's Chromium, driven by Playwright, signs in as each of the report bench's three callers (a
store manager, a region manager, HQ) and loads every console page their role may open: the
reports with the report bench's periods, the member search and a member's card, segments, RFM,
journeys, campaigns, fleet, users and the audit log. Each page once untimed, then up to ``RUNS``
times (at least ``MIN_RUNS``, then until ``BUDGET_S``), once the jobs the hub runs at its start
have run: some go over every member (tiers, allowances, the nightly segments) and would
otherwise share the box with the first pages timed.

A load is timed by the browser's own navigation timing, from the navigation's start:
- ``p95_ms``: to the end of the load event. The charts are inline SVG, drawn by then (the page
  marks itself ready after, and each load waits for that mark);
- ``first_byte_p95_ms``: to the response's first byte, the hub's part (the reads and the
  rendering); the rest is the network on this box and the browser's drawing.

A figure is kept only for a page that worked: a status other than 200, an error in the page's
console or a request to anything but the hub stops the run with what went wrong.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi.routing import APIRoute

from hub.api.console import authoring
from hub.api.console import pages as console
from hub.auth import passwords, roles, users
from hub.bench_reports import (
    LEVELS,
    MANAGED_STORE,
    NOW_MS,
    PERIODS,
    TODAY,
    USERS,
    fill,
    p95,
    vacuum_analyze,
)
from hub.bench_scope import throwaway_postgres
from hub.core.db import HubDatabase, Tx
from hub.reports import catalog

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package
RUNS, MIN_RUNS, BUDGET_S = 10, 3, 20.0  # per page and caller
START_S = 180.0  # the hub's start over a filled database: migrations checked, caches read
SETTLE_S = 600.0  # its jobs' first runs, over every member
ROOT = Path(__file__).resolve().parents[1]


class PageFailed(RuntimeError):
    """A page that did not work: its figure would be a figure of an error."""


@dataclass(frozen=True)
class Page:
    name: str
    path: str  # under the hub's base URL, with its query

    @property
    def permission(self) -> str:
        """What a role needs to open it: what its console route names."""
        route_path = urlsplit(self.path).path
        for router in (console.router, authoring.router):
            for route in router.routes:
                if isinstance(route, APIRoute) and "GET" in (route.methods or ()) and \
                        route.path_regex.match(route_path):
                    named = [getattr(d.call, "permission", None)
                             for d in route.dependant.dependencies]
                    return str(next(p for p in named if p is not None))
        raise LookupError(f"no console page at {route_path}")


def _period(slug: str, days: int) -> str:
    """The report bench's period for ``slug`` over a fill of ``days`` days."""
    length, grain = PERIODS[slug]
    return urlencode({"start": (TODAY - timedelta(days=min(length, days) - 1)).isoformat(),
                      "end": TODAY.isoformat(), "grain": grain})


def pages(member_id: str, phone: str, days: int = 365) -> list[Page]:
    """Every console page worth a figure, as each would be opened: the reports over the report
    bench's periods; the member search by a phone and that member's card (a member of the
    store manager's store, so every caller may open it)."""
    own = {"dashboard": "/console/dashboard", "campaigns": "/console/campaigns"}
    return [*(Page(slug, f"{own.get(slug, f'/console/reports/{slug}')}?{_period(slug, days)}")
              for slug in catalog.KINDS),
            Page("reports", "/console/reports"),
            Page("member_search", "/console/members?" + urlencode({"phone": phone})),
            Page("member", f"/console/members/{member_id}"),
            *(Page(name, f"/console/{name}") for name in ("segments", "rfm", "journeys")),
            Page("bundles", "/console/campaigns/bundles"),
            *(Page(name, f"/console/{name}") for name in ("fleet", "users", "audit"))]


def _sign_ins(tx: Tx, password: str) -> dict[str, Any]:
    """The three callers get ``password`` (the fill makes them without one); returns the
    member whose card and phone the member pages open, and what each caller may open."""
    for username, _role in USERS.values():
        users.set_password(tx, username, passwords.hash_password(password), NOW_MS)
    found = tx.one("SELECT member_id, phone FROM members WHERE home_store = ? AND merged_into"
                   " IS NULL AND phone IS NOT NULL ORDER BY member_id LIMIT 1", (MANAGED_STORE,))
    if found is None:
        raise PageFailed("the filled database has no member at the store manager's store")
    held = roles.load(tx)
    allowed = {level: sorted(p for p in roles.PERMISSIONS if held[role].allows(p))
               for level, (_username, role) in USERS.items()}
    return {"member_id": str(found[0]), "phone": str(found[1]), "allowed": allowed}


@contextlib.contextmanager
def serving(url: str, workdir: Path) -> Iterator[str]:
    """``membergate-hub run`` over the database at ``url``, in its own process: yields the
    base URL of its console (``http://127.0.0.1:port``); its output is in
    ``workdir/hub.log``."""
    cfg = workdir / "hub.toml"
    database = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
    cfg.write_text(f"""
[hub]
database = {json.dumps(database)}
data_dir = {json.dumps(str(workdir))}
validate_workers = 0
[broker]
embedded_port = 0
[api]
port = 0
""", encoding="utf-8")
    log_path = workdir / "hub.log"
    with log_path.open("w", encoding="utf-8") as log:
        # Output to a file, not a pipe nobody reads after the start: a full pipe stops the hub.
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "--config", str(cfg), "run"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            yield _console_of(proc, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def _console_of(proc: subprocess.Popen[str], log_path: Path) -> str:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if line.startswith("HQ console: "):
                return line.removeprefix("HQ console: ").strip().removesuffix("/console/")
        if proc.poll() is not None:
            raise PageFailed(f"the hub stopped (exit {proc.returncode}): {text[-1500:]}")
        time.sleep(0.2)
    raise PageFailed(f"the hub did not serve its console within {START_S:g} s")


@dataclass
class _Watch:
    """What a page did that spoils its figure."""

    errors: list[str]
    outside: list[str]


def settled(base: str, username: str, password: str, timeout_s: float = SETTLE_S) -> float:
    """Waits until each job the hub runs at its start has run: some go over every member
    (tiers, allowances, the nightly segments) and would otherwise share the box with the first
    pages timed. Signs in as ``username`` (who may read the hub's status); returns the seconds
    waited."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    signed = urllib.request.Request(f"{base}/v1/auth/sign-in", method="POST", data=json.dumps(
        {"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"})
    started, waiting, signed_in = time.monotonic(), ["(signing in)"], False
    while time.monotonic() - started < timeout_s:
        # A sign-in writes its session: it may wait behind a start job's transaction.
        try:
            if not signed_in:
                opener.open(signed, timeout=60).close()
                signed_in = True
            with opener.open(f"{base}/v1/status", timeout=60) as answer:
                jobs = json.load(answer)["jobs"]
        except (TimeoutError, urllib.error.URLError):
            time.sleep(0.5)
            continue
        waiting = sorted(name for name, job in jobs.items()
                         if job["at_start"] and job["runs"] == 0)
        if not waiting:
            return time.monotonic() - started
        time.sleep(0.5)
    raise PageFailed(f"the hub's start jobs {', '.join(waiting)} had not run after"
                     f" {timeout_s:g} s")


def _time_pages(base: str, password: str, found: dict[str, Any], runs: int, budget_s: float,
                chromium: str, days: int = 365) -> dict[str, dict[str, Any]]:
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise PageFailed("the page figures need Playwright: pip install 'membergate[dev]'"
                         ) from exc
    if not os.access(chromium, os.X_OK):
        raise PageFailed(f"no Chromium at {chromium}: apt-get install chromium")
    host = urlsplit(base).netloc
    listed = pages(found["member_id"], found["phone"], days)
    out: dict[str, dict[str, Any]] = {}
    with sync_playwright() as pw:
        try:
            # Root in CI: Chromium's sandbox needs a user namespace it cannot have there.
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        except PlaywrightError as exc:
            raise PageFailed(f"Chromium did not start: {str(exc).splitlines()[0]}") from exc
        try:
            for level in LEVELS:
                watch = _Watch([], [])
                context, page = _watched(browser, host, watch)
                page.goto(f"{base}/console/sign-in")
                page.fill("input[name=username]", USERS[level][0])
                page.fill("input[name=password]", password)
                page.click("#sign-in button[type=submit]")
                page.wait_for_url("**/console/dashboard**")
                figures: dict[str, Any] = {}
                for p in listed:
                    if p.permission not in found["allowed"][level]:
                        continue
                    figures[p.name] = _time_page(page, base + p.path, runs, budget_s, watch)
                    _say(f"{level} {p.name}: {figures[p.name]['p95_ms']} ms")
                out[level] = figures
                context.close()
        finally:
            browser.close()
    return out


def _watched(browser: Any, host: str, watch: _Watch) -> tuple[Any, Any]:
    """A browser context whose page notes its console errors and its requests to anything but
    the hub. Noted, not refused: Playwright's routing, which could refuse them, turns the
    browser's cache off, and a user's browser keeps the console's scripts and styles."""
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()

    def request(sent: Any) -> None:
        if urlsplit(sent.url).netloc != host:
            watch.outside.append(sent.url)

    def console(message: Any) -> None:
        if message.type == "error":
            watch.errors.append(message.text)

    def failed(error: Any) -> None:
        watch.errors.append(str(error))

    page.on("request", request)
    page.on("console", console)
    page.on("pageerror", failed)
    return context, page


def _time_page(page: Any, url: str, runs: int, budget_s: float, watch: _Watch
               ) -> dict[str, Any]:
    loads: list[float] = []
    first_bytes: list[float] = []
    started = time.perf_counter()
    for i in range(runs + 1):  # the first untimed
        if i > min(runs, MIN_RUNS) and time.perf_counter() - started > budget_s:
            break
        response = page.goto(url)
        if response is None or response.status != 200:
            raise PageFailed(f"{url}: status {response and response.status}")
        page.wait_for_function("document.body.dataset.ready === '1'")
        timing = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                               " return [n.loadEventEnd, n.responseStart]; })()")
        if watch.errors or watch.outside:
            raise PageFailed(f"{url}: console errors {watch.errors[:3]}, requests elsewhere"
                             f" {watch.outside[:3]}")
        if i > 0:
            loads.append(float(timing[0]))
            first_bytes.append(float(timing[1]))
    return {"p95_ms": round(p95(loads), 1), "p50_ms": round(sorted(loads)[len(loads) // 2], 1),
            "first_byte_p95_ms": round(p95(first_bytes), 1), "runs": len(loads)}


def _say(text: str) -> None:
    print(f"bench pages: {text}", file=sys.stderr, flush=True)


def _summary(timed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The slowest page of each caller, and which it is."""
    out: dict[str, Any] = {}
    worst: dict[str, str] = {}
    for level, figures in timed.items():
        name = max(figures, key=lambda k: figures[k]["p95_ms"])
        out[f"page_load_{level}_p95_ms"] = figures[name]["p95_ms"]
        worst[level] = name
    out["page_load_worst"] = worst
    return out


def measure_pages(url: str, members: int = 1_000_000, *, stores: int = 50, days: int = 365,
                  seed: int = 1, runs: int = RUNS, budget_s: float = BUDGET_S,
                  chromium: str = CHROMIUM, filled: bool = False) -> dict[str, Any]:
    """The page figures over the database at ``url`` (SQLite or PostgreSQL), filled first
    unless ``filled`` (then it must hold the report bench's fill)."""
    db = HubDatabase(url).open_sync()
    try:
        t = time.perf_counter()
        if not filled:
            fill(db, members, stores, days, seed)
        fill_s = time.perf_counter() - t
        # A password for this run only: never printed, gone with the run.
        password = secrets.token_urlsafe(18)
        found = db.run_sync(lambda tx: _sign_ins(tx, password))
    finally:
        db.close_sync()
    if not filled and url.startswith(("postgres://", "postgresql://")):
        vacuum_analyze(url)
    with tempfile.TemporaryDirectory(prefix="mg-pages-") as tmp:
        t = time.perf_counter()
        with serving(url, Path(tmp)) as base:
            _say(f"the hub serves {base}/console/; waiting for its first jobs")
            settle_s = settled(base, USERS["chain"][0], password)
            _say(f"its first jobs ran in {settle_s:.1f} s")
            timed = _time_pages(base, password, found, runs, budget_s, chromium, days)
        timing_s = time.perf_counter() - t
    return {**_summary(timed), "page_load": timed, "page_members": members,
            "page_fill_s": round(fill_s, 1), "page_hub_jobs_s": round(settle_s, 1),
            "page_timing_s": round(timing_s, 1),
            "page_params": {"runs": f"up to {runs} per page and caller (at least"
                                    f" {min(runs, MIN_RUNS)}, then until {budget_s:g} s),"
                                    " after one untimed, once the hub's first jobs ran;"
                                    " p95 nearest rank",
                            "timed": "navigation start to the load event's end (charts are"
                                     " inline SVG); first byte: to the response's first byte",
                            "callers": {level: USERS[level][0] for level in LEVELS},
                            "browser": chromium}}


def measure_pages_postgres(admin_url: str, members: int = 1_000_000, *, stores: int = 50,
                           days: int = 365, seed: int = 1, runs: int = RUNS,
                           budget_s: float = BUDGET_S, chromium: str = CHROMIUM
                           ) -> dict[str, Any]:
    """The same on PostgreSQL, in a throwaway database ``mg_pages_<random>``, dropped after;
    every key ends in ``_postgres``."""
    with throwaway_postgres(admin_url, "mg_pages") as url:
        figures = measure_pages(url, members, stores=stores, days=days, seed=seed, runs=runs,
                                budget_s=budget_s, chromium=chromium)
    return {f"{k}_postgres": v for k, v in figures.items()}
