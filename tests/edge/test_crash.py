"""kill -9 the edge process at random moments while it sells and refunds; nothing acknowledged
may be lost, nothing may be half-written, the outbox may have no gap."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge import demo
from tests.edge import invariants

# 20 kills hold the guarantee in CI time; MG_CRASH_ROUNDS=200 soaks it for longer.
ROUNDS = int(os.environ.get("MG_CRASH_ROUNDS", "20"))
TOKEN = "crash-token-0001"


async def _start(cfg: Path, seed: bool) -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, "-m", "edge.cli", "--config", str(cfg), "--log-level", "WARNING",
            "run"] + (["--demo"] if seed else [])
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once per round, before any load
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    while True:
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 60)
        if not line:
            raise RuntimeError(f"edge did not start: {proc.stderr.read() if proc.stderr else ''}")
        m = re.search(r"is up: (http://\S+)", line)
        if m:
            return proc, m.group(1)


async def _drive(http: httpx.AsyncClient, rng: random.Random, acked: dict[str, Any],
                 worker: int) -> None:
    n = 0
    while True:
        n += 1
        k = f"w{worker}-{rng.random()}"
        try:
            if acked["sales"] and rng.random() < 0.3:
                sale_id = rng.choice(list(acked["sales"]))
                r = await http.post("/v1/refunds", json={
                    "sale_id": sale_id, "lines": [{"line_no": 1, "qty": 1}]},
                    headers={"Idempotency-Key": k})
                if r.status_code == 201:
                    acked["refunds"][r.json()["refund_id"]] = r.json()["amount"]
                continue
            sid = (await http.post("/v1/sales")).json()["sale_id"]
            await http.post(f"/v1/sales/{sid}/member", headers={"Idempotency-Key": k + "m"},
                            json={"card_uid": demo.demo_card_uid(rng.randrange(1, 200))})
            for j in range(3):
                await http.post(f"/v1/sales/{sid}/lines", headers={"Idempotency-Key": f"{k}l{j}"},
                                json={"sku": f"SKU{j}", "name": "x", "category": "grocery",
                                      "qty": 1 + rng.randrange(3),
                                      "unit_price": rng.randrange(100, 9_000)})
            q = (await http.get(f"/v1/sales/{sid}/quote")).json()
            tenders: list[dict[str, Any]] = []
            usable = min(q["points"]["redeemable"], q["total"] // 2)
            if usable > 0 and rng.random() < 0.5:
                tenders.append({"kind": "points", "points": usable})
                tenders.append({"kind": "cash", "amount": q["total"] - usable})
            else:
                tenders.append({"kind": "cash", "amount": q["total"]})
            r = await http.post(f"/v1/sales/{sid}/finalize", json={"tenders": tenders},
                                headers={"Idempotency-Key": k + "f"})
            if r.status_code == 200:
                body = r.json()
                acked["sales"][body["sale_id"]] = body["total"]
        except (httpx.TransportError, json.JSONDecodeError):
            return  # the process is gone: what was acknowledged is recorded


def _verify(db: Path, acked: dict[str, Any]) -> None:
    counts = invariants.check(db)
    conn = sqlite3.connect(str(db))
    try:
        sales = dict(conn.execute("SELECT sale_id, total FROM sales").fetchall())
        for sale_id, total in acked["sales"].items():
            assert sales.get(sale_id) == total, f"acknowledged sale {sale_id} lost"
        events = {r[0] for r in conn.execute("SELECT type FROM outbox")}
        assert counts["sales"] == 0 or "sale.finalized" in events
        refunds = dict(conn.execute("SELECT refund_id, amount FROM refunds").fetchall())
        for refund_id, amount in acked["refunds"].items():
            assert refunds.get(refund_id) == amount, f"acknowledged refund {refund_id} lost"
        logged = conn.execute("SELECT count(*) FROM outbox WHERE type = 'sale.finalized'"
                              ).fetchone()[0]
        assert logged == counts["sales"]
        for sale_id in sales:
            assert conn.execute("SELECT count(*) FROM sale_lines WHERE sale_id = ?",
                                (sale_id,)).fetchone()[0] > 0
    finally:
        conn.close()


@pytest.mark.slow
async def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[database]\npath = "{db}"\n[api]\nport = 0\n[api.tokens]\nPOS = "{TOKEN}"\n'
                   '[allowance]\npoints = 100000000\n', encoding="utf-8")
    rng = random.Random(1234)
    acked: dict[str, Any] = {"sales": {}, "refunds": {}}
    kills_mid_flight = 0
    for rnd in range(ROUNDS):
        proc, base = await _start(cfg, seed=rnd == 0)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10,
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                before = len(acked["sales"]) + len(acked["refunds"])
                workers = [asyncio.create_task(_drive(http, rng, acked, w)) for w in range(3)]
                # Kill while the tills are writing: once this process has acknowledged a write
                # (a cold process on a slow machine takes a while to), then a moment later.
                loop = asyncio.get_running_loop()
                until = loop.time() + 10
                while (len(acked["sales"]) + len(acked["refunds"]) == before  # noqa: ASYNC110
                       and loop.time() < until):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.wait_for(asyncio.gather(*workers), 15)
                kills_mid_flight += len(acked["sales"]) + len(acked["refunds"]) > before
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        _verify(db, acked)
    assert len(acked["sales"]) > ROUNDS  # the load really ran between the kills
    assert kills_mid_flight >= ROUNDS // 2
