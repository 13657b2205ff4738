"""Messages leave through the outbox to a real HTTP bridge (the webhook channel, HMAC-signed):
consent, quiet hours, one frequency budget and a channel quota checked at send time; a bridge
that is down for a while loses nothing and gets nothing twice; a refused message is dead until
resent; one channel down holds back no other."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hub.core.db import HubDatabase, Tx
from hub.notify import outbox
from hub.notify.channel import Outgoing, Sent
from hub.notify.channels.webhook import WebhookChannel, WebhookSettings, signature
from hub.notify.dispatcher import Dispatcher, NotifySettings, Quota
from protocol.errors import ServiceError
from protocol.events import ConsentChanged, MemberRegistered
from tests.hub.test_journeys import Fleet

SECRET = "bridge-secret-0001"
# 2026-12-05 10:00 in Shanghai: outside the quiet hours.
NOON = int(datetime(2026, 12, 5, 2, 0, tzinfo=UTC).timestamp() * 1000)
NIGHT = int(datetime(2026, 12, 5, 14, 0, tzinfo=UTC).timestamp() * 1000)  # 22:00 there


class Bridge:
    """The chain's bridge: checks each signature, dedupes on the key, counts; ``down`` answers
    503, ``refuse`` answers 400 for one member."""

    def __init__(self) -> None:
        self.got: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.bad_signatures = 0
        self.down = False
        self.refuse: set[str] = set()
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Membergate-Timestamp"]
                if self.headers["X-Membergate-Signature"] != signature(SECRET, stamp, body):
                    bridge.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                message = json.loads(body)
                if bridge.down:
                    self.send_response(503)
                elif message["member_id"] in bridge.refuse:
                    self.send_response(400)
                else:
                    bridge.posts += 1
                    bridge.got.setdefault(self.headers["Idempotency-Key"], message)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    b = Bridge()
    yield b
    b.close()


class Stuck:
    """A channel whose provider never answers in time (it is down)."""

    name = "sms"

    async def send(self, message: Outgoing) -> Sent:
        await asyncio.sleep(3600)
        return Sent()

    async def aclose(self) -> None:
        pass


def webhook(url: str) -> WebhookChannel:
    return WebhookChannel(WebhookSettings(url=url, secret=SECRET, allow_http_loopback=True,
                                          timeout_s=5))


async def members(db: HubDatabase, n: int, consent: set[int]) -> None:
    fleet = Fleet(db)
    await fleet.send([MemberRegistered(member_id=f"m{i}", member_code=f"C{i}",
                                       phone=f"+86139000000{i:02d}") for i in range(n)])
    await fleet.send([ConsentChanged(member_id=f"m{i}", channel="wechat", purpose="marketing",
                                     granted=True, text_version="v1") for i in sorted(consent)])


def message(member: str, key: str, purpose: str = "marketing",
            channel: str = "webhook") -> outbox.Message:
    return outbox.Message(key=key, member_id=member, channel=channel, purpose=purpose,
                          template="t", params={"name": member}, text=f"hello {member}")


def states(tx: Tx) -> dict[str, tuple[str, str]]:
    return {str(k): (str(s), str(r)) for k, s, r in tx.all(
        "SELECT key, state, reason FROM outbox")}


async def test_gates_at_send_time(hub_db: HubDatabase, bridge: Bridge) -> None:
    await members(hub_db, 4, consent={0, 1, 3})
    now = [NOON]
    settings = NotifySettings(budget_messages=2, budget_days=7)
    d = Dispatcher(hub_db, {"webhook": webhook(bridge.url)}, settings, "Asia/Shanghai", dict,
                   lambda: now[0])
    await hub_db.transaction(lambda tx: outbox.enqueue(tx, [
        message("m0", "a1"), message("m0", "a2"), message("m0", "a3"),  # the third: budget
        message("m0", "r1", purpose="transactional"),  # exempt from the budget
        message("m1", "b1"), message("m1", "b1"),  # the same key twice: one message
        message("m2", "c1"),  # no consent
        message("m2", "c2", purpose="transactional"),  # needs none
        message("nobody", "x1")], now[0]))
    await d.round("webhook")
    got = await hub_db.read(states)
    assert got == {"a1": ("sent", ""), "a2": ("sent", ""), "a3": ("suppressed", "budget"),
                   "r1": ("sent", ""), "b1": ("sent", ""), "c1": ("suppressed", "no_consent"),
                   "c2": ("sent", ""), "x1": ("suppressed", "member_gone")}
    assert sorted(bridge.got) == ["a1", "a2", "b1", "c2", "r1"]
    assert bridge.got["b1"] == {"key": "b1", "member_id": "m1", "to": "m1",
                                "purpose": "marketing", "template": "t",
                                "params": {"name": "m1"}, "text": "hello m1"}
    assert bridge.bad_signatures == 0
    # Quiet hours: held to 09:00 store-local, not dropped; sent when they end.
    now[0] = NIGHT
    await hub_db.transaction(lambda tx: outbox.enqueue(tx, [message("m3", "q1")], now[0]))
    await d.round("webhook")
    row = await hub_db.read(lambda tx: tx.one(
        "SELECT state, reason, next_ms FROM outbox WHERE key = 'q1'"))
    nine = int(datetime(2026, 12, 6, 1, 0, tzinfo=UTC).timestamp() * 1000)
    assert tuple(row) == ("pending", "quiet_hours", nine)
    now[0] = nine
    await d.round("webhook")
    assert "q1" in bridge.got
    # A week later the budget has room again.
    now[0] = NOON + 8 * 86_400_000
    await hub_db.transaction(lambda tx: outbox.enqueue(tx, [message("m0", "a4")], now[0]))
    await d.round("webhook")
    assert (await hub_db.read(states))["a4"] == ("sent", "")
    await d.channels["webhook"].aclose()


async def test_channel_quota_holds_until_it_frees(hub_db: HubDatabase, bridge: Bridge) -> None:
    await members(hub_db, 1, consent={0})
    now = [NOON]
    settings = NotifySettings(budget_messages=10, quotas={"webhook": Quota(messages=1,
                                                                              days=1)})
    d = Dispatcher(hub_db, {"webhook": webhook(bridge.url)}, settings, "Asia/Shanghai", dict,
                   lambda: now[0])
    await hub_db.transaction(lambda tx: outbox.enqueue(
        tx, [message("m0", "w1"), message("m0", "w2")], now[0]))
    await d.round("webhook")
    row = await hub_db.read(lambda tx: tx.one(
        "SELECT state, reason, next_ms FROM outbox WHERE key = 'w2'"))
    assert tuple(row) == ("pending", "channel_quota", NOON + 86_400_000)
    now[0] = NOON + 86_400_000
    await d.round("webhook")
    assert sorted(bridge.got) == ["w1", "w2"]
    await d.channels["webhook"].aclose()


async def test_outage_loses_nothing_and_repeats_nothing(hub_db: HubDatabase,
                                                        bridge: Bridge) -> None:
    n = 30
    await members(hub_db, n, consent=set(range(n)))
    now = [NOON]
    settings = NotifySettings(budget_messages=100, retry_first_s=1, retry_max_s=60,
                              give_up_after_h=1)
    d = Dispatcher(hub_db, {"webhook": webhook(bridge.url)}, settings, "Asia/Shanghai", dict,
                   lambda: now[0])
    await hub_db.transaction(lambda tx: outbox.enqueue(
        tx, [message(f"m{i}", f"k{i}") for i in range(n)], now[0]))
    bridge.down = True
    # Ten minutes of a bridge answering 503, tried with backoff (the clock moves on).
    tries = 0
    while now[0] < NOON + 600_000:
        await d.round("webhook")
        tries += 1
        now[0] += 15_000
    assert bridge.got == {}
    pending = await hub_db.read(lambda tx: tx.all(
        "SELECT state, reason, attempts FROM outbox"))
    assert {(str(s), str(r)) for s, r, _a in pending} == {("pending", "retry")}
    assert 3 <= min(int(a) for _s, _r, a in pending) < tries  # backed off, not hammered
    bridge.down = False
    now[0] += 60_000
    await d.round("webhook")
    assert sorted(bridge.got) == sorted(f"k{i}" for i in range(n))
    assert bridge.posts == n  # each once
    # A member the bridge refuses is dead at once; resent, it goes again.
    bridge.refuse = {"m0"}
    await hub_db.transaction(lambda tx: outbox.enqueue(tx, [message("m0", "z1")], now[0]))
    await d.round("webhook")
    dead = await hub_db.read(lambda tx: tx.one(
        "SELECT message_id, state, reason FROM outbox WHERE key = 'z1'"))
    assert (dead[1], dead[2]) == ("dead", "refused")
    sent = await hub_db.read(lambda tx: tx.scalar(
        "SELECT message_id FROM outbox WHERE key = 'k1'"))
    with pytest.raises(ServiceError, match="only a dead or failed"):
        await hub_db.transaction(lambda tx: outbox.resend(tx, message_id=str(sent),
                                                          now_ms=now[0]))
    bridge.refuse = set()
    await hub_db.transaction(lambda tx: outbox.resend(tx, message_id=str(dead[0]),
                                                      now_ms=now[0]))
    await d.round("webhook")
    assert "z1" in bridge.got
    await d.channels["webhook"].aclose()


async def test_a_stuck_channel_holds_back_no_other(hub_db: HubDatabase, bridge: Bridge) -> None:
    await members(hub_db, 2, consent={0, 1})
    await hub_db.transaction(lambda tx: tx.execute(
        "INSERT INTO consents(member_id, channel, purpose, granted, text_version, store_id,"
        " hlc) VALUES ('m0', 'sms', 'marketing', 1, 'v1', 'S001', 1)"))
    await hub_db.transaction(lambda tx: outbox.enqueue(tx, [
        message("m0", "s1", channel="sms"), message("m1", "h1")], NOON))
    async with Dispatcher(hub_db, {"webhook": webhook(bridge.url), "sms": Stuck()},
                          NotifySettings(), "Asia/Shanghai", dict, lambda: NOON):
        for _ in range(200):
            if "h1" in bridge.got:
                break
            await asyncio.sleep(0.05)
    assert "h1" in bridge.got
    assert (await hub_db.read(states))["s1"] == ("sending", "")
    # The hub stopped while it was being sent: at the next start it goes out again.
    assert await hub_db.transaction(outbox.recover) == 1


def test_messages_from_the_shell(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """``membergate-hub messages``: counts, a list of the dead, resending them (audited); a
    message that is not dead is refused in one line, no traceback."""
    import sqlite3

    from hub.cli import main

    db = str(tmp_path / "hub.db")

    async def seed() -> None:
        async with HubDatabase(f"sqlite:///{db}") as hub_db:
            from hub.core.schema import migrate
            await hub_db.transaction(migrate)
            await hub_db.transaction(lambda tx: outbox.enqueue(tx, [
                message("m1", "d1"), message("m1", "d2"), message("m2", "p1")], NOON))
            await hub_db.transaction(lambda tx: tx.execute(
                "UPDATE outbox SET state = 'dead', reason = 'gave_up' WHERE key LIKE 'd%'"))

    asyncio.run(seed())
    assert main(["messages", "counts", "--database", db]) == 0
    assert json.loads(capsys.readouterr().out) == {"webhook": {"dead": 2, "pending": 1}}
    assert main(["messages", "list", "--state", "dead", "--database", db]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(m["key"] for m in listed) == ["d1", "d2"]
    pending = sqlite3.connect(db).execute(
        "SELECT message_id FROM outbox WHERE key = 'p1'").fetchone()[0]
    assert main(["messages", "resend", "--id", pending, "--database", db]) == 2
    err = capsys.readouterr().err
    assert "only a dead or failed" in err and "Traceback" not in err
    assert main(["messages", "resend", "--channel", "webhook", "--database", db]) == 0
    assert json.loads(capsys.readouterr().out) == {"resent": 2}
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'message.resend'"
                        " AND remote = 'cli'").fetchone() == (1,)


async def test_a_one_time_subscription_allows_one_message_per_consent(
        hub_db: HubDatabase, bridge: Bridge) -> None:
    """``per_consent``: each time the member subscribes (gives WeChat consent again), one
    message; more are suppressed until they do."""
    await members(hub_db, 1, consent={0})
    now = [NOON]
    settings = NotifySettings(budget_messages=10,
                              quotas={"webhook": Quota(messages=1, per_consent=True)})
    d = Dispatcher(hub_db, {"webhook": webhook(bridge.url)}, settings, "Asia/Shanghai", dict,
                   lambda: now[0])
    await hub_db.transaction(lambda tx: outbox.enqueue(
        tx, [message("m0", "o1"), message("m0", "o2")], now[0]))
    await d.round("webhook")
    assert await hub_db.read(states) == {"o1": ("sent", ""), "o2": ("suppressed", "consent_used")}
    # The member subscribes again (a later consent): one more message may go.
    now[0] += 3_600_000
    fleet = Fleet(hub_db)
    fleet.seq = await hub_db.read(lambda tx: int(tx.scalar(
        "SELECT max(seq) FROM events WHERE store_id = 'S001'")))
    await fleet.send([ConsentChanged(member_id="m0", channel="wechat", purpose="marketing",
                                     granted=True, text_version="v2")], at_ms=now[0] - 1000)
    await hub_db.transaction(lambda tx: outbox.enqueue(
        tx, [message("m0", "o3"), message("m0", "o4")], now[0]))
    await d.round("webhook")
    got = await hub_db.read(states)
    assert (got["o3"], got["o4"]) == (("sent", ""), ("suppressed", "consent_used"))
    assert sorted(bridge.got) == ["o1", "o3"]
    await d.channels["webhook"].aclose()
