"""kill -9 a real hub process again and again while a birthday journey runs over 10,000 members
(entering them, issuing their coupons on the HQ stream, queueing and sending their messages to
the chain's bridge): in the end every member has exactly one coupon and the bridge exactly one
message (it dedupes on the message key and counts what it got twice), the HQ stream has no gap,
and the books rebuild from the log (HQ.md principle 7)."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn

from hub.automation import journeys
from hub.core.db import HubDatabase, Tx
from hub.core.schema import migrate
from hub.ledger.apply import apply_batch
from hub.notify.channels.webhook import signature
from hub.notify.dispatcher import NotifySettings
from protocol.events import ConsentChanged, Event, EventBatch, EventBody, MemberRegistered
from tests.hub.test_faults import ROOT, Proc, procs  # noqa: F401 - the fixture
from tests.hub.test_hq_kill import hub_toml

MEMBERS = 10_000
KILLS = 5
TOKEN = "journey-kill-token-01"
SECRET = "bridge-secret-kill"
ZONE = "Asia/Shanghai"


class Sink:
    """The chain's bridge as a real HTTP server (uvicorn, in a thread): checks signatures,
    keeps the first body of each key, counts every post of it."""

    def __init__(self) -> None:
        self.first: dict[str, dict[str, Any]] = {}
        self.posts: dict[str, int] = {}
        self.bad = 0

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the hub was killed mid-request: it never finished sending
                body += message.get("body", b"")
                more = message.get("more_body", False)
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            ok = headers.get("x-membergate-signature") == signature(
                SECRET, headers.get("x-membergate-timestamp", ""), body)
            if ok:
                key = headers["idempotency-key"]
                self.posts[key] = self.posts.get(key, 0) + 1
                self.first.setdefault(key, json.loads(body))
            else:
                self.bad += 1
            await send({"type": "http.response.start", "status": 200 if ok else 401,
                        "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def seed(db_path: Path) -> str:
    """10,000 members whose birthdays all fall within the next week, each consenting to be
    messaged on WeChat; a birthday journey (a coupon, a message) made before the hub starts."""
    today = datetime.now(ZoneInfo(ZONE)).date()
    db = HubDatabase(f"sqlite:///{db_path}").open_sync()
    try:
        db.run_sync(migrate)
        bodies: list[EventBody] = []
        for i in range(MEMBERS):
            day = today + timedelta(days=1 + i % 6)
            born = day.replace(year=1990) if (day.month, day.day) != (2, 29) else day.replace(
                year=1988)
            bodies.append(MemberRegistered(member_id=f"m{i:05d}", member_code=f"C{i:05d}",
                                           name=f"会员{i}", birthday=born))
            bodies.append(ConsentChanged(member_id=f"m{i:05d}", channel="wechat",
                                         purpose="marketing", granted=True, text_version="v1"))
        for start in range(0, len(bodies), 2000):
            batch = EventBatch(store_id="S001", epoch=1, events=[Event(
                event_id=f"e{n}", store_id="S001", epoch=1, seq=n, hlc=1_000 + n, body=body)
                for n, body in enumerate(bodies[start:start + 2000], start + 1)])
            db.run_sync(lambda tx, b=batch: apply_batch(tx, b, 1))
        made = db.run_sync(lambda tx: journeys.create(tx, {
            "name": "生日礼", "trigger": {"kind": "birthday", "days_before": 7},
            "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 1000,
                         "valid_days": 30},
                        {"kind": "message", "channel": "webhook", "template": "birthday",
                         "text": "{name}，生日快乐！券 {coupon_code}"}]},
            by="mkt", now_ms=int(time.time() * 1000), today=today, zone=ZONE,
            check_message=lambda *_: None))
        return str(made["journey_id"])
    finally:
        db.close_sync()


def progress(db_path: Path) -> dict[str, int]:
    db = HubDatabase(f"sqlite:///{db_path}").open_sync()
    try:
        return db.run_sync(lambda tx: {
            "entries": int(tx.scalar("SELECT count(*) FROM journey_entries", default=0)),
            "done": int(tx.scalar("SELECT count(*) FROM journey_entries WHERE state = 'done'",
                                  default=0)),
            "sent": int(tx.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'",
                                  default=0))})
    finally:
        db.close_sync()


@pytest.mark.slow
async def test_a_hub_killed_at_random_points_of_a_birthday_run(
        tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    db_path = tmp_path / "hub.db"
    journey = await asyncio.to_thread(seed, db_path)
    sink = Sink()
    cfg = hub_toml(tmp_path, db_path, TOKEN, f"""
[automation]
every_s = 0.5
[notify]
quiet_from = "00:00"
quiet_until = "00:00"
[channels.webhook]
url = "http://127.0.0.1:{sink.port}/hook"
secret = "{SECRET}"
allow_http_loopback = true
""")
    args = ["-m", "hub.cli", "--config", str(cfg), "run"]
    ready = r"HQ API: (http://\S+)/docs"
    rng = random.Random()
    seen: list[dict[str, int]] = []
    try:
        for _ in range(KILLS):
            hub = Proc(args, tmp_path / "hub.log")
            procs.append(hub)
            await hub.start(ready)
            await asyncio.sleep(rng.uniform(0.2, 3.0))
            await hub.kill9()
            seen.append(await asyncio.to_thread(progress, db_path))
        hub = Proc(args, tmp_path / "hub.log")
        procs.append(hub)
        await hub.start(ready)
        for _ in range(600):
            now = await asyncio.to_thread(progress, db_path)
            if now["done"] == MEMBERS and now["sent"] == MEMBERS:
                break
            await asyncio.sleep(0.5)
        await hub.stop()
    finally:
        sink.close()
    # The kills fell while it was working, not all before it began or after it ended.
    assert any(0 < s["done"] < MEMBERS or 0 < s["sent"] < MEMBERS for s in seen), seen

    def books(tx: Tx) -> dict[str, Any]:
        return {
            "entries": [tuple(r) for r in tx.all(
                "SELECT state, count(*) FROM journey_entries GROUP BY state")],
            "coupons": [tuple(r) for r in tx.all(
                "SELECT count(*), count(DISTINCT member_id) FROM coupons"
                " WHERE campaign_id = ?", (journey,))],
            "issued_events": int(tx.scalar(
                "SELECT count(*) FROM events WHERE store_id = 'HQ' AND type = 'coupon.issued'")),
            "hq_seqs": [int(r[0]) for r in tx.all(
                "SELECT seq FROM events WHERE store_id = 'HQ' ORDER BY seq")],
            "messages": [tuple(r) for r in tx.all(
                "SELECT count(*), count(DISTINCT member_id), min(state), max(state)"
                " FROM outbox")],
            "actions": int(tx.scalar("SELECT count(*) FROM journey_actions")),
            "codes": {str(m): str(c) for m, c in tx.all(
                "SELECT member_id, coupon_code FROM coupons WHERE campaign_id = ?",
                (journey,))}}

    db = HubDatabase(f"sqlite:///{db_path}").open_sync()
    try:
        got = db.run_sync(books)
    finally:
        db.close_sync()
    assert got["entries"] == [("done", MEMBERS)]
    assert got["coupons"] == [(MEMBERS, MEMBERS)]  # exactly one coupon each
    assert got["issued_events"] == MEMBERS
    assert got["hq_seqs"] == list(range(1, len(got["hq_seqs"]) + 1))  # no gap, none twice
    assert got["messages"] == [(MEMBERS, MEMBERS, "sent", "sent")]
    assert got["actions"] == 2 * MEMBERS
    # The bridge: one message per member, each naming that member's coupon; a message sent
    # again after a kill (the same key) it recognised.
    members = {m["member_id"]: m for m in sink.first.values()}
    assert len(sink.first) == len(members) == MEMBERS
    assert sink.bad == 0
    for member, message in members.items():
        assert message["text"] == f"会员{int(member[1:])}，生日快乐！券 {got['codes'][member]}"
    # Sent again: at most the round a kill cut between the provider's answer and its record.
    assert sum(sink.posts.values()) - MEMBERS <= KILLS * NotifySettings().round_size
    rebuilt = await asyncio.to_thread(functools.partial(
        subprocess.run, [sys.executable, "-m", "hub.cli", "--config", str(cfg), "rebuild"],
        cwd=ROOT, capture_output=True, text=True, timeout=120))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert re.search(r'"mismatch_count": 0', rebuilt.stdout)
