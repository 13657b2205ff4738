"""``membergate-edge bench``: figures for lookups and checkouts on a seeded store.

Prints figures, asserts nothing: these machines are shared and noisy. Each figure comes with a
floor measured in the same run (plain sqlite3 for the lookup) so a reader can judge the ratio.

Checkouts are also timed while the store catches up the member directory (``catchup``): pages
of members registered elsewhere, encoded as the hub sends them, applied back to back the way
the sync client applies them (``edge.directory.apply_in_steps``: checked, then a few entries a
transaction),
once in pages of ``[sync] directory_page`` (what a selling store asks for) and once in pages of
``directory_page_idle`` (what a quiet one asks for); the finalize figures of the same run without
a catch-up are the baseline.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from edge import demo, directory
from edge.checkout import TenderRequest
from edge.config import EdgeConfig
from edge.progress import Progress
from edge.service import EdgeService
from protocol import runtime
from protocol.codec import encode
from protocol.ids import member_code, uuid7
from protocol.sync import DirectoryPage, MemberEntry, StoreGrant, StoreShare

TOKEN = "bench-token-0001"
CATEGORIES = ("grocery", "fresh", "dairy", "snacks", "household")


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _config(db: Path) -> EdgeConfig:
    return EdgeConfig.model_validate({
        "database": {"path": str(db)},
        "api": {"host": "127.0.0.1", "port": 0, "tokens": {"BENCH": TOKEN}},
        "allowance": {"points": 10**9, "stored_value": 10**10},
    })


async def _checkout(svc: EdgeService, rng: random.Random, members: int, n: int) -> float:
    """One checkout of a 10-line member basket; returns quote + finalize in ms."""
    i = rng.randrange(1, members + 1)
    sale = await svc.open_sale("BENCH")
    sid = sale["sale_id"]
    await svc.identify_on_sale(sid, "BENCH", f"i{n}", "card_uid", demo.demo_card_uid(i))
    for j in range(10):
        svc.carts.add_line(svc.carts.get_open(sid), sku=f"SKU{j:04d}", name=f"item {j}",
                           category=CATEGORIES[j % 5], qty=1 + j % 3,
                           unit_price=rng.randrange(100, 5000))
    t0 = time.perf_counter()
    quote = await svc.sale_view(sid, "BENCH")
    await svc.finalize(sid, "BENCH", f"f{n}", [TenderRequest(kind="cash", amount=quote["total"])])
    return (time.perf_counter() - t0) * 1000


def directory_pages(store_number: int, first: int, entries: int, page_size: int,
                    after: int) -> list[tuple[str, bytes]]:
    """``entries`` members registered at another store (``store_number``), with its share and
    this store's standing grant, as encoded pages continuing from checkpoint ``after``:
    ``(request_id, payload)`` each."""
    rng = random.Random(first)
    pages: list[tuple[str, bytes]] = []
    for lo in range(0, entries, page_size):
        count = min(page_size, entries - lo)
        members = []
        for i in range(first + lo, first + lo + count):
            members.append(MemberEntry(
                member_id=uuid7(), member_code=member_code(store_number, i),
                phone=f"+8615{store_number:03d}{i:06d}", name=f"会员{i}",
                tier=rng.choice(("standard", "silver", "gold")),
                cards=[f"B{store_number:03d}{i:08X}"], home_store=f"S{store_number:03d}",
                shares=[StoreShare(store_id=f"S{store_number:03d}",
                                   points=rng.randrange(0, 5000), sv_principal=0, sv_bonus=0)],
                grants=[StoreGrant(store_id="S001", points_granted=rng.randrange(0, 2500),
                                   sv_granted=0)]))
        request_id = uuid7()
        upto = after + count
        pages.append((request_id, encode(DirectoryPage(
            request_id=request_id, after=after, upto=upto, snapshot=False,
            more=lo + count < entries, members=members))))
        after = upto
    return pages


async def _checkout_during_catchup(svc: EdgeService, rng: random.Random, members: int,
                                   pages: list[tuple[str, bytes]], first_n: int
                                   ) -> dict[str, Any]:
    """Checkouts back to back while ``pages`` are applied back to back (the worst case: no
    network round trip between them), until the last page is in."""
    ctx = svc.context

    async def catch_up() -> None:
        for request_id, payload in pages:  # as the store link applies them
            if await directory.apply_in_steps(svc.db, ctx, payload, request_id) is None:
                raise RuntimeError("a bench directory page was not applied")

    latencies: list[float] = []
    start = time.perf_counter()
    task = asyncio.create_task(catch_up())
    n = first_n
    while not task.done():
        latencies.append(await _checkout(svc, rng, members, n))
        n += 1
    await task
    elapsed = time.perf_counter() - start
    return {"finalizes": len(latencies), "catchup_s": round(elapsed, 2),
            "finalize_p50_ms": round(_pct(latencies, 50), 2),
            "finalize_p99_ms": round(_pct(latencies, 99), 2),
            "finalize_max_ms": round(max(latencies), 2)}


async def _seed_and_checkout(config: EdgeConfig, members: int, finalizes: int,
                             catchup_entries: int, progress: Progress) -> dict[str, Any]:
    rng = random.Random(7)
    out: dict[str, Any] = {}
    async with EdgeService(config) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        progress.phase(f"seeding {members:,} members")
        t = time.perf_counter()
        await svc.db.write(lambda conn: demo.seed_members(conn, svc.context, members,
                                                          on_batch=progress.step))
        out["seed_s"] = round(time.perf_counter() - t, 1)
        progress.phase(f"{finalizes:,} checkouts")
        latencies: list[float] = []
        start = time.perf_counter()
        for n in range(finalizes):
            latencies.append(await _checkout(svc, rng, members, n))
            progress.step(n + 1, finalizes)
        elapsed = time.perf_counter() - start
        # The figure: quote + finalize back to back. The whole loop (open, identify,
        # ten lines, quote, finalize) is printed beside it.
        out["finalize_per_s"] = round(finalizes / (sum(latencies) / 1000), 1)
        out["checkout_loop_per_s"] = round(finalizes / elapsed, 1)
        out["finalize_p50_ms"] = round(_pct(latencies, 50), 2)
        out["finalize_p99_ms"] = round(_pct(latencies, 99), 2)
        if catchup_entries > 0:
            catchup: dict[str, Any] = {"entries": catchup_entries}
            first, n = 1, finalizes
            progress.phase(f"checkouts during two catch-ups of {catchup_entries:,} entries")
            for size in (config.sync.directory_page, config.sync.directory_page_idle):
                after = await svc.db.read(directory.checkpoint)
                pages = directory_pages(2, first, catchup_entries, size, after)
                figures = await _checkout_during_catchup(svc, rng, members, pages, n)
                figures["entries_per_s"] = round(catchup_entries / figures["catchup_s"], 1)
                catchup[f"page_{size}"] = figures
                first += catchup_entries
                n += figures["finalizes"]
            out["catchup"] = catchup
            out["catchup_finalize_p99_ms"] = catchup[f"page_{config.sync.directory_page}"][
                "finalize_p99_ms"]
            # The same figure against this run's checkouts without a catch-up: what the
            # catch-up adds, whatever the machine's speed today.
            out["catchup_vs_quiet_p99"] = round(
                out["catchup_finalize_p99_ms"] / out["finalize_p99_ms"], 2)
    return out


def _sqlite_floor(db: Path, uids: list[str]) -> float:
    conn = sqlite3.connect(str(db))
    q = ("SELECT m.* FROM cards c JOIN members m ON m.member_id = c.member_id"
         " WHERE c.card_uid = ?")
    t = time.perf_counter()
    for uid in uids:
        conn.execute(q, (uid,)).fetchone()
    us = (time.perf_counter() - t) / len(uids) * 1e6
    conn.close()
    return us


def _finalize_floor(tmp: Path, n: int = 500) -> float:
    """Plain sqlite3, same durability (WAL, synchronous=FULL), one transaction per sale writing
    what a 10-line member finalize writes (sale, 10 lines, tender, lot, ledger, 2 outbox rows,
    idempotency, 3 updates): the most a checkout can reach on this disk, in this run."""
    db = tmp / "floor.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(
        "CREATE TABLE s(id TEXT PRIMARY KEY, a INT, b INT, c TEXT);"
        "CREATE TABLE l(id TEXT, n INT, sku TEXT, q INT, p INT, PRIMARY KEY(id, n));"
        "CREATE TABLE o(seq INTEGER PRIMARY KEY, payload BLOB);"
        "CREATE TABLE m(id INTEGER PRIMARY KEY, pts INT, spend INT);"
        "INSERT INTO m(id, pts, spend) VALUES (1, 0, 0);")
    blob = os.urandom(400)
    t = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO s VALUES (?, 1, 2, 'x')", (f"s{i}",))
        conn.executemany("INSERT INTO l VALUES (?, ?, 'SKU', 1, 100)",
                         [(f"s{i}", j) for j in range(10)])
        for _ in range(6):
            conn.execute("INSERT INTO o(payload) VALUES (?)", (blob,))
        for _ in range(3):
            conn.execute("UPDATE m SET pts = pts + 1, spend = spend + 100 WHERE id = 1")
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t)
    conn.close()
    return rate


def run_bench(*, members: int, lookups: int, finalizes: int, catchup_entries: int = 50_000,
              workdir: str | None = None, progress: Progress | None = None
              ) -> dict[str, Any]:
    """The figures. Its files (a 1M-member store is ~900 MB) go in a temporary folder removed
    at the end, also after an error or Ctrl-C; a ``workdir`` the caller names is kept."""
    progress = progress or Progress(5 if catchup_entries > 0 else 4)
    if workdir:
        tmp = Path(workdir)
        tmp.mkdir(parents=True, exist_ok=True)
        return _bench_in(tmp, members, lookups, finalizes, catchup_entries, progress)
    tmp = Path(tempfile.mkdtemp(prefix="mg-bench-"))
    try:
        return _bench_in(tmp, members, lookups, finalizes, catchup_entries, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        progress.say(f"removed {tmp}")


def _bench_in(tmp: Path, members: int, lookups: int, finalizes: int, catchup_entries: int,
              progress: Progress) -> dict[str, Any]:
    db = tmp / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    config = _config(db)
    result: dict[str, Any] = {"members": members, "campaigns": 0}
    # On the loop and with the collector ``membergate-edge run`` uses.
    with runtime.tuned_gc():
        result.update(runtime.run(_seed_and_checkout(config, members, finalizes,
                                                     catchup_entries, progress)))
    result["campaigns"] = len(demo.demo_bundle().campaigns)

    progress.phase("finalize floor (plain sqlite3)")
    result["finalize_floor_per_s"] = round(_finalize_floor(tmp), 1)
    result["finalize_vs_floor"] = round(result["finalize_per_s"] / result["finalize_floor_per_s"],
                                        2)
    rng = random.Random(11)
    uids = [demo.demo_card_uid(rng.randrange(1, members + 1)) for _ in range(lookups)]
    result["sqlite_lookup_us"] = round(_sqlite_floor(db, uids), 1)

    progress.phase(f"{lookups:,} lookups over HTTP")

    cfg_file = tmp / "edge.toml"
    cfg_file.write_text(
        f'[database]\npath = "{db}"\n[api]\nhost = "127.0.0.1"\nport = 0\n'
        f'[api.tokens]\nBENCH = "{TOKEN}"\n', encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "--config", str(cfg_file), "--log-level", "WARNING",
         "run"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"is up: (http://\S+)", line)
            if m:
                base = m.group(1)
                break
            if not line and proc.poll() is not None:
                break
        if base is None:
            raise RuntimeError("edge server did not start")
        latencies: list[float] = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for uid in uids[:200]:  # warm the connection and the page cache alike for both
                http.get("/v1/members/lookup", params={"card_uid": uid})
            for i, uid in enumerate(uids):
                t = time.perf_counter()
                r = http.get("/v1/members/lookup", params={"card_uid": uid})
                latencies.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"lookup failed: {r.status_code} {r.text}")
                progress.step(i + 1, lookups)
        result["lookup_p50_ms"] = round(statistics.median(latencies), 3)
        result["lookup_p99_ms"] = round(_pct(latencies, 99), 3)
        result["lookup_http_vs_sqlite"] = round(
            result["lookup_p50_ms"] * 1000 / result["sqlite_lookup_us"], 1)
        result["rss_mb"] = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    result["db_mb"] = round(db.stat().st_size / 2**20, 1)
    result["targets"] = {"lookup_p99_ms": 5, "finalize_per_s": 500, "finalize_p99_ms": 15,
                         "rss_mb": 120}
    return result
