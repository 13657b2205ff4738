"""What journeys and the outbox cost (issue 17), each against a floor measured in the same run:

- ``birthday_pass_vs_floor``: a birthday journey's pass over ``members`` members (select the
  birthdays within 7 days, decide conditions and holdout, record the entries: the durable queue
  of what each member is due) against the bare SQL statement selecting the same members;
  ``birthday_act_per_s``: then acting on the entries — a coupon merged on the HQ stream and a
  message in the outbox for each treated member — entries a second;
- ``dispatch_vs_floor``: messages/s through the outbox and the webhook channel to a local sink
  against a bare HTTP client posting the same bodies at the same concurrency;
- ``outage_lost`` / ``outage_duplicated``: the sink answers 503 for ``OUTAGE_S`` seconds while
  messages flow, then comes back; what it never got, and what it got twice (it dedupes on the
  message key and counts)."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from hub.automation import journeys
from hub.automation.engine import JourneyEngine, birthdays_within
from hub.bench_rfm import _load
from hub.core.db import HubDatabase, marks
from hub.ledger.hq_events import Merge
from hub.notify import outbox
from hub.notify.channel import Outgoing
from hub.notify.channels.webhook import WebhookChannel, WebhookSettings, body_of
from hub.notify.dispatcher import Dispatcher, NotifySettings
from protocol.hlc import HybridClock

AS_OF = date(2026, 12, 1)
NOW = int(datetime(2026, 12, 1, 2, 0, tzinfo=UTC).timestamp() * 1000)  # 10:00 in Shanghai
OUTAGE_S = 3.0
JOURNEY = {"name": "bench birthday", "trigger": {"kind": "birthday", "days_before": 7},
           "holdout_percent": 10,
           "actions": [{"kind": "coupon", "coupon_kind": "amount_off", "value": 2000,
                        "min_spend": 5000, "valid_days": 30},
                       {"kind": "message", "channel": "webhook", "template": "birthday",
                        "text": "{name}，生日快乐！券 {coupon_code}"}]}


async def _birthday(url: str, members: int) -> dict[str, Any]:
    async with HubDatabase(url) as db:
        await db.transaction(lambda tx: _load(tx, members))
        await db.transaction(lambda tx: tx.execute(
            "UPDATE members SET birthday = date('1970-01-01', '+' ||"
            " (CAST(substr(member_id, 2) AS INTEGER) * 7919 % 14600) || ' days')"))
        by_md = sorted(birthdays_within(AS_OF, 7))
        floors = []
        for _ in range(3):
            t = time.perf_counter()
            rows = await db.read(lambda tx: tx.all(
                "SELECT m.member_id, m.birthday FROM members m WHERE substr(m.birthday, 6, 5)"
                f" IN ({marks(by_md)}) AND m.merged_into IS NULL AND m.erased = 0", by_md))
            floors.append(time.perf_counter() - t)
        await db.transaction(lambda tx: journeys.create(
            tx, JOURNEY, by="bench", now_ms=NOW, today=AS_OF, zone="Asia/Shanghai",
            check_message=lambda *_: None))
        clock = HybridClock()
        engine = JourneyEngine(db, "Asia/Shanghai", dict,
                               lambda at: Merge(clock, at, zone="Asia/Shanghai"),
                               now_ms=lambda: NOW)
        # The pass: select, decide (conditions, holdout), record the entries — the durable
        # queue of what each member is due — as the running hub's pass does before acting.
        t = time.perf_counter()
        entered = await engine.enter()
        pass_s = time.perf_counter() - t
        # Acting on them: a coupon on the HQ stream (merged, the directory moved) and a
        # message in the outbox for each treated member.
        t = time.perf_counter()
        acted, _effects = await engine.advance()
        act_s = time.perf_counter() - t
        queued = await db.read(lambda tx: int(tx.scalar("SELECT count(*) FROM outbox")))
        floor = statistics.median(floors)
        return {"birthday_members": members, "birthday_selected": len(rows),
                "birthday_entered": entered, "birthday_messages": queued,
                "birthday_floor_s": round(floor, 3), "birthday_pass_s": round(pass_s, 3),
                "birthday_pass_vs_floor": round(floor / pass_s, 3),
                "birthday_act_s": round(act_s, 3),
                "birthday_act_per_s": round(acted / act_s, 1)}


class _Sink:
    """A webhook sink that dedupes on the key and counts; ``down`` answers 503."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.down = False
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                if sink.down:
                    self.send_response(503)
                else:
                    with sink.lock:
                        key = self.headers["Idempotency-Key"]
                        sink.keys[key] = sink.keys.get(key, 0) + 1
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _dispatch(url: str, count: int) -> dict[str, Any]:
    sink = _Sink()
    try:
        async with HubDatabase(url) as db:
            await db.transaction(lambda tx: _load(tx, max(count, 1000)))
            messages = [outbox.Message(key=f"k{i}", member_id=f"m{i % 1000:07d}",
                                       channel="webhook", purpose="transactional",
                                       template="t", params={}, text=f"message {i}")
                        for i in range(count)]
            # The floor: the same bodies, the same concurrency, a bare client.
            bodies = [body_of(Outgoing(key=m.key, member_id=m.member_id, to=m.member_id,
                                       purpose="transactional", template=m.template, params={},
                                       text=m.text)) for m in messages]
            limit = asyncio.Semaphore(8)
            async with httpx.AsyncClient() as client:
                async def post(body: bytes, key: str) -> None:
                    async with limit:
                        await client.post(sink.url, content=body,
                                          headers={"Idempotency-Key": f"floor-{key}"})
                t = time.perf_counter()
                await asyncio.gather(*(post(b, m.key) for b, m in zip(bodies, messages,
                                                                        strict=True)))
                floor_s = time.perf_counter() - t
            settings = NotifySettings(budget_messages=0, retry_first_s=0.2, retry_max_s=1,
                                      round_size=500)
            channel = WebhookChannel(WebhookSettings(url=sink.url, secret="bench",
                                                     allow_http_loopback=True))
            d = Dispatcher(db, {"webhook": channel}, settings, "Asia/Shanghai", dict,
                           lambda: int(time.time() * 1000))
            half = count // 2
            await db.transaction(lambda tx: outbox.enqueue(tx, messages[:half],
                                                           int(time.time() * 1000)))
            t = time.perf_counter()
            while await d.round("webhook"):
                pass
            sent_s = time.perf_counter() - t
            rate_floor, rate = count / floor_s, half / sent_s
            # The outage: the rest queued while the sink answers 503, then it comes back.
            sink.down = True
            await db.transaction(lambda tx: outbox.enqueue(tx, messages[half:],
                                                           int(time.time() * 1000)))
            ends = time.perf_counter() + OUTAGE_S
            while time.perf_counter() < ends:
                await d.round("webhook")
                await asyncio.sleep(0.1)
            sink.down = False
            for _ in range(600):
                await d.round("webhook")
                left = await db.read(lambda tx: int(tx.scalar(
                    "SELECT count(*) FROM outbox WHERE state = 'pending'")))
                if not left:
                    break
                await asyncio.sleep(0.1)
            await channel.aclose()
            got = {k: n for k, n in sink.keys.items() if not k.startswith("floor-")}
            return {"dispatch_messages": half, "dispatch_per_s": round(rate, 1),
                    "dispatch_floor_per_s": round(rate_floor, 1),
                    "dispatch_vs_floor": round(rate / rate_floor, 3),
                    "outage_s": OUTAGE_S,
                    "outage_lost": sum(1 for m in messages if m.key not in got),
                    "outage_duplicated": sum(n - 1 for n in got.values())}
    finally:
        sink.close()


def measure_journeys(workdir: Path, members: int, messages: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if members > 0:
        out.update(asyncio.run(_birthday(f"sqlite:///{workdir / 'journeys.db'}", members)))
    if messages > 0:
        out.update(asyncio.run(_dispatch(f"sqlite:///{workdir / 'dispatch.db'}", messages)))
    return out


if __name__ == "__main__":  # a quick look: python -m hub.bench_journeys
    import sys
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure_journeys(Path(tmp), int(sys.argv[1]), int(sys.argv[2]))))
