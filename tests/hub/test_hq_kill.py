"""kill -9 a real hub process while HQ posts points adjustments: every adjustment whose key the
client retries is applied exactly once, and the books still rebuild from the log."""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from hub.core.db import HubDatabase, Tx
from hub.core.schema import migrate
from hub.ledger.apply import apply_batch
from protocol.events import Event, EventBatch, MemberRegistered, PointsEarned
from tests.hub.test_faults import ROOT, Proc, procs  # noqa: F401 - the fixture

TOKEN = "hq-kill-token-0001"
KEYS = 60
START_POINTS = 1_000
KILL_AFTER = 12  # answers heard before the kill; more requests are in flight by then
WORKERS = 4


def delta_of(i: int) -> int:
    return -(i + 1) if i % 3 == 0 else i + 1  # some taken away, well within the balance


def hub_toml(tmp_path: Path, db_path: Path, token: str, more: str = "") -> Path:
    """A hub's configuration for a process test: SQLite, a broker on a free port, the API on
    a free port with ``token``; ``more`` adds sections."""
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f"""
[hub]
database = "{db_path}"
data_dir = "{tmp_path}"
validate_workers = 0
[broker]
embedded_port = 0
[allowance]
enabled = false
[api]
token = "{token}"
port = 0
{more}""", encoding="utf-8")
    return cfg


def seed(db_path: Path) -> None:
    db = HubDatabase(f"sqlite:///{db_path}").open_sync()
    try:
        db.run_sync(migrate)
        batch = EventBatch(store_id="S001", epoch=1, events=[Event(
            event_id=f"e{i}", store_id="S001", epoch=1, seq=i, hlc=1_000 + i, body=body)
            for i, body in enumerate((
                MemberRegistered(member_id="m1", member_code="C1", phone="+8613900000001"),
                PointsEarned(member_id="m1", lot_id="l1", points=START_POINTS)), 1)])
        db.run_sync(lambda tx: apply_batch(tx, batch, 1))
    finally:
        db.close_sync()


async def post_all(base: str, answers: dict[int, dict[str, Any]],
                   heard: asyncio.Event | None = None) -> None:
    """Post the adjustment of every key from a few clients at once; keep each answer. Sets
    ``heard`` once ``KILL_AFTER`` answers are in; a client stops when the hub is gone."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for k in range(KEYS):
        queue.put_nowait(k)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                r = await http.post("/v1/members/m1/points/adjustments",
                                    json={"delta": delta_of(i), "reason": f"case {i}",
                                          "actor": "ops@hq"},
                                    headers={"Idempotency-Key": f"adj-{i}"})
            except httpx.TransportError:
                return  # the hub is gone: this key is retried after the restart
            assert r.status_code == 201, r.text
            answers.setdefault(i, r.json())
            assert answers[i] == r.json()  # a retry gets the first answer
            if heard is not None and len(answers) >= KILL_AFTER:
                heard.set()

    async with httpx.AsyncClient(base_url=base, timeout=10,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        await asyncio.gather(*(client(http) for _ in range(WORKERS)))


async def test_a_hub_killed_mid_write_applies_every_adjustment_once(
        tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    db_path = tmp_path / "hub.db"
    seed(db_path)
    cfg = hub_toml(tmp_path, db_path, TOKEN)
    args = ["-m", "hub.cli", "--config", str(cfg), "run"]
    ready = r"HQ API: (http://\S+)/docs"

    hub = Proc(args, tmp_path / "hub.log")
    procs.append(hub)
    base = (await hub.start(ready)).group(1)
    answers: dict[int, dict[str, Any]] = {}
    heard = asyncio.Event()
    writing = asyncio.create_task(post_all(base, answers, heard))
    await heard.wait()
    # Killed while the clients keep posting: requests are in flight, some mid-transaction,
    # some committed with their answer not yet sent.
    await hub.kill9()
    await writing
    heard_before = dict(answers)
    assert KILL_AFTER <= len(heard_before) < KEYS

    hub = Proc(args, tmp_path / "hub.log")
    procs.append(hub)
    base = (await hub.start(ready)).group(1)
    await post_all(base, answers)  # every key again
    await hub.stop()

    for i, first in heard_before.items():
        assert answers[i] == first
    assert len({a["event_id"] for a in answers.values()}) == KEYS

    def books(tx: Tx) -> tuple[list[int], int, int]:
        seqs = [int(r[0]) for r in tx.all(
            "SELECT seq FROM events WHERE store_id = 'HQ' ORDER BY seq")]
        points = tx.scalar("SELECT sum(points) FROM shares WHERE member_id = 'm1'")
        keys = tx.scalar("SELECT count(*) FROM hq_requests")
        return seqs, int(points), int(keys)

    db = HubDatabase(f"sqlite:///{db_path}").open_sync()
    try:
        seqs, points, keys = db.run_sync(books)
    finally:
        db.close_sync()
    assert seqs == list(range(1, KEYS + 1))  # gap-free, each adjustment once
    assert keys == KEYS
    assert points == START_POINTS + sum(delta_of(i) for i in range(KEYS))
    rebuilt = await asyncio.to_thread(functools.partial(
        subprocess.run, [sys.executable, "-m", "hub.cli", "--config", str(cfg), "rebuild"],
        cwd=ROOT, capture_output=True, text=True, timeout=60))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert re.search(r'"mismatch_count": 0', rebuilt.stdout)
