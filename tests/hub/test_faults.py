"""Fault injection end to end: a real Mosquitto, the hub and stores, and things going wrong.

Broker SIGKILLed and restarted under load, the edge and the hub ``kill -9``ed mid-sync, batches
duplicated and reordered on the wire, store clocks ten minutes apart, three days offline, and
bad input on a store's downlink. Every test ends with the same books check (``assert_books``):

- zero events lost: the hub holds each store's events 1..last seq, once each, and acked them;
- zero applied twice: the hub's balances == the sums of the stores' own ledgers == a rebuild
  from the hub's event log (``audit.compare``) with no mismatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from edge import checkout, demo, members, stored_value, uplink
from edge.checkout import TenderRequest
from edge.errors import EdgeError
from edge.gateway import open_gateway
from edge.service import EdgeService
from edge.sync import SyncClient
from hub.app import Hub
from hub.campaigns import bundles as campaigns
from hub.core.db import HubDatabase, Tx
from hub.ledger import audit
from protocol import signing, topics
from protocol.codec import decode, decode_batch, encode
from protocol.events import Event, SaleFinalized
from protocol.hlc import HybridClock
from protocol.ids import uuid7
from protocol.mqtt import MqttClient
from protocol.sync import Ack, CampaignManifest
from tests.edge import invariants
from tests.edge.conftest import key, make_config, register, sell
from tests.hub.test_sync_e2e import drained, hub_config, wait_for
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
BROKER_KILLS = int(os.environ.get("MG_FAULT_BROKER_KILLS", "20"))
EDGE_KILLS = int(os.environ.get("MG_FAULT_EDGE_KILLS", "6"))
HUB_KILLS = int(os.environ.get("MG_FAULT_HUB_KILLS", "5"))
OFFLINE_EVENTS = int(os.environ.get("MG_FAULT_OFFLINE_EVENTS", "50000"))
POS_TOKEN = "fault-token-pos-0001"


# -- the books ---------------------------------------------------------------------------------

Balances = dict[str, tuple[int, int, int]]


def edge_books(path: Path) -> tuple[int, Balances]:
    """(last seq written, per member the sums of this store's own points and SV ledgers)."""
    invariants.check(path)
    conn = sqlite3.connect(str(path))
    try:
        epoch = int(conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        row = conn.execute("SELECT value FROM meta WHERE key = ?",
                           (f"outbox_seq:{epoch}",)).fetchone()
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for mid, delta in conn.execute(
                "SELECT member_id, sum(delta) FROM points_ledger GROUP BY member_id"):
            sums[mid][0] += int(delta)
        for mid, principal, bonus in conn.execute(
                "SELECT member_id, sum(principal_delta), sum(bonus_delta) FROM sv_ledger"
                " GROUP BY member_id"):
            sums[mid][1] += int(principal)
            sums[mid][2] += int(bonus)
        return int(row[0]) if row else 0, {m: (v[0], v[1], v[2]) for m, v in sums.items()}
    finally:
        conn.close()


def edge_last_seq(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'outbox_seq:1'").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def _hub_books(tx: Tx) -> dict[str, Any]:
    streams = {str(r[0]): tuple(int(x) for x in r[1:]) for r in tx.all(
        "SELECT store_id, count(*), min(seq), max(seq), count(DISTINCT event_id) FROM events"
        " GROUP BY store_id")}
    acked = {str(s): int(q) for s, q in tx.all("SELECT store_id, acked_seq FROM store_streams")}
    return {"streams": streams, "acked": acked, "balances": audit.balances(tx),
            "compare": audit.compare(tx)}


def _nonzero(balances: Balances) -> Balances:
    return {m: v for m, v in balances.items() if any(v)}


async def assert_books(db: HubDatabase, edges: dict[str, Path]) -> dict[str, Any]:
    """No event lost, none applied twice, and the hub's books rebuild from its log."""
    hub = await db.transaction(_hub_books)
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    total = 0
    for store_id, path in edges.items():
        last, sums = await asyncio.to_thread(edge_books, path)
        count, first, top, distinct = hub["streams"].get(store_id, (0, 0, 0, 0))
        assert count == distinct == last, (
            f"{store_id}: the store wrote {last} events, the hub holds {count}"
            f" ({distinct} distinct event ids)")
        if last:
            assert (first, top) == (1, last), f"{store_id}: hub holds seq {first}..{top}"
        assert hub["acked"].get(store_id, 0) == last, f"{store_id}: hub acked != {last}"
        total += last
        for mid, (p, a, b) in sums.items():
            acc = expected[mid]
            acc[0] += p
            acc[1] += a
            acc[2] += b
    want = _nonzero({m: (v[0], v[1], v[2]) for m, v in expected.items()})
    held = _nonzero(hub["balances"])
    assert held == want, "hub balances differ from the sums of the stores' ledgers"
    assert hub["compare"]["mismatches"] == [], hub["compare"]["mismatches"][:5]
    assert hub["compare"]["events"] == total
    return {"events": total, "members_with_balances": len(held)}


# -- stores and hubs ---------------------------------------------------------------------------


def fast_reconnect(client: MqttClient | None) -> None:
    """Tests kill the broker every second or so: keep the jittered back-off short (the default
    grows to 30 s, which would only make the test wait)."""
    assert client is not None
    client.reconnect_min = 0.05
    client.reconnect_max = 0.5


async def open_store(tmp_path: Path, store_id: str, number: int, broker: Mosquitto,
                     public_key: str, *, clock_offset_ms: int = 0,
                     **sync: Any) -> EdgeService:
    (tmp_path / store_id).mkdir(exist_ok=True)
    cfg = make_config(tmp_path / store_id,
                      store={"store_id": store_id, "store_number": number},
                      sync={"broker_host": broker.host, "broker_port": broker.port,
                            "hub_public_key": public_key, "ack_timeout_s": 1.0, **sync})
    svc = await open_gateway(cfg)
    if clock_offset_ms:
        # The store's wall clock is off: every HLC it stamps comes from the skewed time source.
        def skewed() -> int:
            return time.time_ns() // 1_000_000 + clock_offset_ms

        svc.context.clock = HybridClock(physical_ms=skewed, last=svc.context.clock.last)
    await svc.apply_bundle(demo.demo_bundle())
    return svc


def edge_db(svc: EdgeService) -> Path:
    return Path(svc.config.database.path)


async def all_drained(stores: list[EdgeService]) -> bool:
    for svc in stores:
        if not await drained(svc):
            return False
    return True


async def sell_with_points(svc: EdgeService, member_id: str, price: int) -> dict[str, Any]:
    """A sale paid partly with points (as much as the campaign allows) and the rest in cash."""
    sale = await svc.open_sale("POS-1")
    sid = sale["sale_id"]
    svc.carts.get_open(sid).member_id = member_id
    await svc.add_line(sid, "POS-1", key(), sku="P", name="P", category="grocery", qty=1,
                       unit_price=price)
    q = await svc.sale_view(sid, "POS-1")
    usable = q["points"]["redeemable"]
    tenders = [TenderRequest(kind="cash", amount=q["total"])]
    if usable > 0:
        tenders = [TenderRequest(kind="points", points=usable),
                   TenderRequest(kind="cash", amount=q["total"] - q["points"]["redeemable_value"])]
    try:
        return await svc.finalize(sid, "POS-1", key(), tenders)
    except EdgeError:
        await svc.void_sale(sid, "POS-1")  # e.g. beyond the offline allowance: fine, skip it
        return {}


async def shop(svc: EdgeService, number: int, stop: asyncio.Event, rng: random.Random,
               phones: dict[int, list[str]], pause: float = 0.005) -> int:
    """A store's tills: registrations, member sales, points tenders, top-ups, and sales to
    members of the other store once the directory brought them here. Returns operations."""
    own: list[str] = []
    n = 0
    while not stop.is_set():
        n += 1
        if not own or n % 8 == 0:
            phone = f"+86136{number:02d}{n:06d}"
            own.append((await register(svc, phone, name=f"m{number}-{n}"))["member_id"])
            phones[number].append(phone)
        mid = rng.choice(own)
        roll = rng.random()
        if roll < 0.1:
            await svc.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid,
                             amount=rng.choice((10_000, 50_000)))
        elif roll < 0.2:
            await sell_with_points(svc, mid, rng.randrange(1_000, 9_000))
        elif roll < 0.3:
            others = [p for s, ps in phones.items() if s != number for p in ps]
            if others:
                try:
                    foreign = await svc.find_member_id("phone", rng.choice(others))
                except EdgeError:
                    continue  # not here yet: the directory is behind (the broker keeps dying)
                await sell(svc, [("F", "grocery", 1, rng.randrange(500, 9_000))],
                           member_id=foreign)
        else:
            await sell(svc, [("A", "grocery", 1 + n % 3, rng.randrange(500, 9_000))],
                       member_id=mid)
        await asyncio.sleep(pause)
    return n


async def backlog(svc: EdgeService, *, members_n: int, sales: int, topups: int, phone: str,
                  days: int = 1) -> None:
    """Bulk outbox writes through the edge's own domain code, one transaction a day: members
    registered, member sales (sale + points earned) and top-ups, spread over ``days``."""
    ctx = svc.context
    start_day = ctx.today() - timedelta(days=days - 1)
    mids: list[str] = []

    def one_day(conn: sqlite3.Connection, *, day: int) -> None:
        ctx.today_override = start_day + timedelta(days=day)
        try:
            lo, hi = members_n * day // days, members_n * (day + 1) // days
            mids.extend(members.register(conn, ctx, phone=f"{phone}{i:06d}", name=f"b{i}")
                        for i in range(lo, hi))
            for i in range(sales * day // days, sales * (day + 1) // days):
                cart = svc.carts.open("POS-1")
                cart.member_id = mids[i % len(mids)]
                svc.carts.add_line(cart, sku=f"S{i % 50}", name="item", category="grocery",
                                   qty=1 + i % 3, unit_price=300 + (i * 37) % 4_000)
                checkout.finalize(conn, ctx, cart, [TenderRequest(kind="cash", amount=10**6)],
                                  svc.campaigns.current(conn))
                svc.carts.drop(cart.sale_id)
            for i in range(topups * day // days, topups * (day + 1) // days):
                stored_value.top_up(conn, ctx, mids[i % len(mids)], uuid7(), "POS-1",
                                    1_000 + i % 9_000, i % 3 * 100, None, "cash")
        finally:
            ctx.today_override = None

    for day in range(days):
        await svc.db.write(functools.partial(one_day, day=day))
    for wake in svc.on_outbox:
        wake()


class Proc:
    """A membergate process run the way systemd would (``python -m ...``), killable with -9."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self._err: IO[str] | None = None

    async def start(self, ready: str, limit_s: float = 60) -> re.Match[str]:
        def spawn() -> subprocess.Popen[str]:
            self._err = self.log.open("a", encoding="utf-8")
            return subprocess.Popen([sys.executable, *self.args], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=self._err)

        self.proc = await asyncio.to_thread(spawn)
        out = self.proc.stdout
        assert out is not None
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(out.readline), limit_s)
            if not line:
                raise RuntimeError(f"{self.args} did not start: {self.log.read_text()[-2000:]}")
            found = re.search(ready, line)
            if found:
                return found

    async def kill9(self) -> None:
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        await self._end(signal.SIGTERM)

    async def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        for stream in (proc.stdout, self._err):
            if stream is not None:
                stream.close()
        self._err = None


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    """Processes a test started; any still running at the end are killed."""
    started: list[Proc] = []
    yield started
    for p in started:
        await p.kill9()


@pytest.fixture
async def hub_any(tmp_path: Path, mosquitto: Mosquitto, hub_url: str) -> AsyncIterator[Hub]:
    """An in-process hub on SQLite and on PostgreSQL (the test runs once per backend)."""
    async with Hub(hub_config(tmp_path, mosquitto, hub_url)) as h:
        fast_reconnect(h.link.mqtt)
        yield h


@pytest.fixture
async def hub_sqlite(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Hub]:
    async with Hub(hub_config(tmp_path, mosquitto)) as h:
        fast_reconnect(h.link.mqtt)
        yield h


async def close_all(stores: list[EdgeService]) -> None:
    for svc in stores:
        await svc.close()


# -- 1. the broker SIGKILLed and restarted under load ------------------------------------------


@pytest.mark.slow
async def test_broker_killed_and_restarted_under_load(
        tmp_path: Path, mosquitto: Mosquitto, hub_any: Hub) -> None:
    hub = hub_any
    key_b64 = signing.public_b64(hub.key)
    stores = [await open_store(tmp_path, f"S00{i}", i, mosquitto, key_b64, batch_max_events=50)
              for i in (1, 2)]
    try:
        for svc in stores:
            assert svc.sync is not None
            fast_reconnect(svc.sync.mqtt)
        rng = random.Random(20261123)
        stop = asyncio.Event()
        phones: dict[int, list[str]] = {1: [], 2: []}
        tills = [asyncio.create_task(shop(svc, i, stop, random.Random(i), phones))
                 for i, svc in enumerate(stores, 1)]
        clients = [hub.link.mqtt, *(s.sync.mqtt for s in stores if s.sync is not None)]

        async def all_connected() -> bool:
            return all(c is not None and c.is_connected for c in clients)

        for _ in range(BROKER_KILLS):
            # Each kill cuts live connections: wait until everyone is back (and syncing).
            await wait_for(all_connected, "the hub and both stores reconnected", 15)
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            await asyncio.to_thread(mosquitto.kill)
            await asyncio.sleep(rng.uniform(0.02, 0.3))
            await asyncio.to_thread(mosquitto.start)
        stop.set()
        sales = await asyncio.gather(*tills)
        await wait_for(lambda: all_drained(stores), "both stores drained after the chaos", 90)
        reconnects = [s.sync.mqtt.reconnects for s in stores if s.sync is not None]
        print(f"\nbroker killed {BROKER_KILLS}x; till operations {sales}; store reconnects"
              f" {reconnects}; hub reconnects {hub.link.mqtt.reconnects if hub.link.mqtt else 0};"
              f" duplicates at hub {hub.pipeline.duplicate_events}, gaps {hub.pipeline.gaps}")
        assert min(reconnects) >= BROKER_KILLS
    finally:
        await close_all(stores)
    books = await assert_books(hub.db, {s.config.store.store_id: edge_db(s) for s in stores})
    print(f"books agree: {books}")


# -- 2. the edge kill -9'd while it syncs ------------------------------------------------------


async def _pos(http: httpx.AsyncClient, rng: random.Random, acked: dict[str, dict[str, Any]],
               worker: int, serial: list[int]) -> None:
    """A POS terminal: registers members, then sells to them; records what was acknowledged."""
    while True:
        k = f"w{worker}-{rng.random()}"
        try:
            if len(acked["members"]) < 20 and (not acked["members"] or rng.random() < 0.3):
                serial[0] += 1
                phone = f"+8613710{serial[0]:06d}"
                r = await http.post("/v1/members", json={"phone": phone, "name": f"p{serial[0]}"},
                                    headers={"Idempotency-Key": k})
                if r.status_code == 201:
                    acked["members"][r.json()["member_id"]] = phone
                continue
            phone = rng.choice(list(acked["members"].values()))
            sid = (await http.post("/v1/sales")).json()["sale_id"]
            r = await http.post(f"/v1/sales/{sid}/member", json={"phone": phone},
                                headers={"Idempotency-Key": k + "m"})
            r.raise_for_status()
            for j in range(2):
                r = await http.post(f"/v1/sales/{sid}/lines",
                                    headers={"Idempotency-Key": f"{k}l{j}"},
                                    json={"sku": f"SKU{j}", "name": "x", "category": "grocery",
                                          "qty": 1 + rng.randrange(3),
                                          "unit_price": rng.randrange(100, 9_000)})
                r.raise_for_status()
            q = (await http.get(f"/v1/sales/{sid}/quote")).json()
            r = await http.post(f"/v1/sales/{sid}/finalize",
                                json={"tenders": [{"kind": "cash", "amount": q["total"]}]},
                                headers={"Idempotency-Key": k + "f"})
            if r.status_code == 200:
                acked["sales"][r.json()["sale_id"]] = r.json()["total"]
        except (httpx.TransportError, json.JSONDecodeError):
            return  # the process is gone: what was acknowledged is recorded


def _hub_events_of(tx: Tx, store_id: str) -> list[Event]:
    return [decode(bytes(r[0]), Event) for r in tx.all(
        "SELECT payload FROM events WHERE store_id = ? ORDER BY seq", (store_id,))]


@pytest.mark.slow
async def test_edge_kill_9_mid_sync_loses_and_doubles_nothing(
        tmp_path: Path, mosquitto: Mosquitto, hub_sqlite: Hub, procs: list[Proc]) -> None:
    hub = hub_sqlite
    await hub.push_campaigns(demo.demo_bundle())  # retained: the store picks it up on connect
    db = tmp_path / "edge" / "edge.db"
    db.parent.mkdir()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[store]\nstore_id = "S010"\nstore_number = 10\n[database]\npath = "{db}"\n'
        f'[api]\nport = 0\n[api.tokens]\nPOS-1 = "{POS_TOKEN}"\n'
        f'[sync]\nbroker_host = "{mosquitto.host}"\nbroker_port = {mosquitto.port}\n'
        f'hub_public_key = "{signing.public_b64(hub.key)}"\nack_timeout_s = 1.0\n'
        'batch_max_events = 10\nwindow_batches = 2\nstatus_interval_s = 1.0\n',
        encoding="utf-8")
    edge = Proc(["-m", "edge.cli", "--config", str(cfg), "--log-level", "WARNING", "run"],
                tmp_path / "edge.log")
    procs.append(edge)
    rng = random.Random(4321)
    acked: dict[str, dict[str, Any]] = {"members": {}, "sales": {}}
    serial = [0]

    async def hub_acked() -> int:
        return int(await hub.db.transaction(lambda tx: tx.scalar(
            "SELECT acked_seq FROM store_streams WHERE store_id = 'S010'", default=0)))

    behind_at_kill = 0
    progress: list[int] = []
    for _ in range(EDGE_KILLS):
        base = (await edge.start(r"is up: (http://\S+)")).group(1)
        async with httpx.AsyncClient(base_url=base, timeout=10,
                                     headers={"Authorization": f"Bearer {POS_TOKEN}"}) as http:
            workers = [asyncio.create_task(_pos(http, rng, acked, w, serial)) for w in range(2)]
            await asyncio.sleep(rng.uniform(0.8, 1.6))
            at_kill = await hub_acked()
            await edge.kill9()
            await asyncio.wait_for(asyncio.gather(*workers), 15)
        last = await asyncio.to_thread(edge_last_seq, db)
        behind_at_kill += last > at_kill
        progress.append(at_kill)
    # Restart once more, sell nothing: what was written before the last kill must reach the hub.
    await edge.start(r"is up: (http://\S+)")
    last = await asyncio.to_thread(edge_last_seq, db)

    async def hub_has_all() -> bool:
        return await hub_acked() == last

    await wait_for(hub_has_all, "the hub to hold everything the store wrote", 60)
    await edge.stop()
    print(f"\nedge killed {EDGE_KILLS}x; hub acked at each kill {progress}; store wrote {last};"
          f" kills with unsent events {behind_at_kill}; POS acked {len(acked['sales'])} sales,"
          f" {len(acked['members'])} registrations; hub duplicates {hub.pipeline.duplicate_events}")
    assert len(acked["sales"]) > EDGE_KILLS  # the load really ran between the kills
    assert progress[-1] > 0 and behind_at_kill >= 1  # the store synced while it was killed

    events = await hub.db.transaction(lambda tx: _hub_events_of(tx, "S010"))
    sales = [e.body.sale_id for e in events if isinstance(e.body, SaleFinalized)]
    assert len(sales) == len(set(sales))
    totals = {e.body.sale_id: e.body.total for e in events if isinstance(e.body, SaleFinalized)}
    for sale_id, total in acked["sales"].items():
        assert totals.get(sale_id) == total, f"acknowledged sale {sale_id} not at the hub"
    registered = [e.body.member_id for e in events if e.body.type == "member.registered"]
    assert len(registered) == len(set(registered)) and set(acked["members"]) <= set(registered)
    await assert_books(hub.db, {"S010": db})


# -- 3. the hub kill -9'd mid-batch ------------------------------------------------------------


@pytest.mark.slow
async def test_hub_kill_9_mid_batch(tmp_path: Path, mosquitto: Mosquitto,
                                    procs: list[Proc]) -> None:
    hub_dir = tmp_path / "hub"
    key_b64 = signing.public_b64(campaigns.load_or_create_key(hub_dir))
    url = f"sqlite:///{hub_dir / 'hub.db'}"
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'[hub]\ndatabase = "{url}"\ndata_dir = "{hub_dir}"\n'
                   f'[broker]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n',
                   encoding="utf-8")
    hub = Proc(["-m", "hub.cli", "--config", str(cfg), "run"], tmp_path / "hub.log")
    procs.append(hub)
    stores = [await open_store(tmp_path, f"S00{i}", i, mosquitto, key_b64, batch_max_events=100)
              for i in (1, 2)]
    try:
        # A backlog from while the hub was away, and the tills keep going while it dies.
        for i, svc in enumerate(stores, 1):
            await backlog(svc, members_n=200, sales=2_500, topups=1_500, phone=f"+86135{i:02d}")
        stop = asyncio.Event()
        phones: dict[int, list[str]] = {1: [], 2: []}
        tills = [asyncio.create_task(shop(svc, i, stop, random.Random(i), phones, pause=0.02))
                 for i, svc in enumerate(stores, 1)]
        rng = random.Random(77)
        mid_drain = 0
        for _ in range(HUB_KILLS):
            await hub.start("hub is up")
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            mid_drain += not await all_drained(stores)
            await hub.kill9()
        stop.set()
        await asyncio.gather(*tills)
        await hub.start("hub is up")
        await wait_for(lambda: all_drained(stores), "both stores drained", 90)
        await hub.stop()
        acked = [s.sync.acked for s in stores if s.sync is not None]
        print(f"\nhub killed {HUB_KILLS}x, {mid_drain} of them with a backlog still draining;"
              f" stores acked {acked}")
        assert mid_drain >= 1
    finally:
        await close_all(stores)
    async with HubDatabase(url) as db:
        books = await assert_books(db, {s.config.store.store_id: edge_db(s) for s in stores})
    print(f"books agree: {books}")


# -- 4. batches duplicated and reordered on the wire -------------------------------------------


async def _sniff(client: MqttClient, into: list[bytes]) -> None:
    async for message in client.messages():
        into.append(message.payload)


async def test_duplicated_and_reordered_batches_apply_once(
        tmp_path: Path, mosquitto: Mosquitto, hub_any: Hub) -> None:
    hub = hub_any
    store = "S001"
    a = await open_store(tmp_path, store, 1, mosquitto, signing.public_b64(hub.key),
                         batch_max_events=10)
    rng = random.Random(99)
    sniffed: list[bytes] = []
    try:
        async with MqttClient(mosquitto.host, mosquitto.port, client_id="replayer") as wire:
            await wire.wait_connected(10)
            await wire.subscribe(topics.events(store))
            sniffer = asyncio.create_task(_sniff(wire, sniffed))
            mids = [(await register(a, f"+8613900{i:06d}"))["member_id"] for i in range(5)]
            for i in range(40):
                await sell(a, [("A", "grocery", 1, 1_000 + i * 10)], member_id=mids[i % 5])
            await wait_for(lambda: drained(a), "store drained")
            last = (await a.status())["last_seq"]

            async def sniffed_all() -> bool:
                return max((decode_batch(p).events[-1].seq for p in sniffed), default=0) == last

            await wait_for(sniffed_all, "every batch seen on the wire")

            # Copies of batches the hub applied already, in shuffled order: duplicates only.
            ingest = hub.pipeline
            applied0, dup0, gaps0 = ingest.applied_events, ingest.duplicate_events, ingest.gaps
            copies = list(sniffed)
            rng.shuffle(copies)
            for payload in copies:
                await wire.publish(topics.events(store), payload)
            copied = sum(len(decode_batch(p).events) for p in copies)

            async def dups_counted() -> bool:
                return hub.pipeline.duplicate_events >= dup0 + copied

            await wait_for(dups_counted, "the hub to count the copies as duplicates")
            assert hub.pipeline.applied_events == applied0 and hub.pipeline.gaps == gaps0

            # Future batches out of order: the store's uplink goes quiet while it sells on, and
            # its next batches reach the hub from the wire last-first.
            assert a.sync is not None
            await a.sync.close()
            a.sync = None
            for i in range(30):
                await sell(a, [("B", "grocery", 1, 2_000 + i)], member_id=mids[i % 5])
            top = (await a.status())["last_seq"]

            def build_all(conn: sqlite3.Connection) -> list[bytes]:
                out: list[bytes] = []
                after = last
                while (b := uplink.build(conn, store, 1, after, max_events=7)) is not None:
                    out.append(b.payload)
                    after = b.last_seq
                return out

            future = await a.db.read(build_all)
            assert len(future) >= 3
            for payload in reversed(future):
                await wire.publish(topics.events(store), payload)

            first = len(decode_batch(future[0]).events)

            async def gaps_counted() -> bool:
                return (ingest.gaps >= gaps0 + len(future) - 1
                        and ingest.applied_events > applied0)

            await wait_for(gaps_counted, "the hub to refuse the batches beyond a gap")
            await asyncio.sleep(0.2)
            # Only the batch that continues the stream (it came last) could be applied.
            assert hub.pipeline.applied_events == applied0 + first
            assert hub.pipeline.gaps == gaps0 + len(future) - 1

            # The store comes back and syncs while the wire keeps replaying old and future
            # batches at the hub, shuffled.
            a.sync = await a.around(SyncClient(a, a.config.sync))
            stop = asyncio.Event()

            async def replay() -> int:
                n = 0
                pool = copies + future
                while not stop.is_set():
                    await wire.publish(topics.events(store), rng.choice(pool))
                    n += 1
                    await asyncio.sleep(0.005)
                return n

            replayer = asyncio.create_task(replay())
            for i in range(30):
                await sell(a, [("C", "grocery", 1, 3_000 + i)], member_id=mids[i % 5])
            stop.set()
            replayed = await replayer
            await wait_for(lambda: drained(a), "store drained after the replay", 30)
            sniffer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sniffer
        print(f"\nreplayed {len(copies)} copies, {len(future)} future batches, {replayed} more"
              f" while syncing; hub duplicates {hub.pipeline.duplicate_events - dup0}, gaps"
              f" {hub.pipeline.gaps - gaps0}, applied {hub.pipeline.applied_events}; store wrote"
              f" {(await a.status())['last_seq']} (top before resync {top})")
        assert hub.pipeline.applied_events == (await a.status())["last_seq"]
    finally:
        await a.close()
    await assert_books(hub.db, {store: edge_db(a)})


# -- 5. store clocks ten minutes apart ---------------------------------------------------------


async def test_clock_skew_profile_merge_is_lww_by_hlc(
        tmp_path: Path, mosquitto: Mosquitto, hub_any: Hub) -> None:
    hub = hub_any
    key_b64 = signing.public_b64(hub.key)
    ten_min = 10 * 60 * 1000
    a = await open_store(tmp_path, "S001", 1, mosquitto, key_b64, clock_offset_ms=ten_min)
    b = await open_store(tmp_path, "S002", 2, mosquitto, key_b64, clock_offset_ms=-ten_min)
    stores = [a, b]
    try:
        mid = (await register(a, "+8613800000001", name="registered at A"))["member_id"]
        mid2 = (await register(b, "+8613800000002", name="registered at B"))["member_id"]

        async def knows(svc: EdgeService, phone: str) -> bool:
            try:
                await svc.find_member_id("phone", phone)
                return True
            except EdgeError:
                return False

        await wait_for(lambda: knows(b, "+8613800000001"), "store B to know A's member")
        await wait_for(lambda: knows(a, "+8613800000002"), "store A to know B's member")

        def hub_view(tx: Tx) -> dict[str, tuple[str, list[str], str | None]]:
            return {r[0]: (r[1], json.loads(r[2]), r[3]) for r in tx.all(
                "SELECT member_id, name, tags, birthday FROM members")}

        async def in_step() -> bool:
            """Both stores show every member as the hub merged it."""
            merged = await hub.db.transaction(hub_view)
            for svc in stores:
                for member_id, want in merged.items():
                    m = await svc.member(member_id)
                    if (m["name"], m["tags"], m["birthday"]) != want:
                        return False
            return True

        async def profile(svc: EdgeService, member_id: str, **changes: Any) -> None:
            await svc.update_profile(terminal_id="POS-1", idem_key=key(), member_id=member_id,
                                     changes=changes)
            await wait_for(lambda: drained(svc), "the change at the hub")
            # A store whose write lost must learn the value that stands, from profile changes
            # alone (no sale moves the member's balances meanwhile).
            await wait_for(in_step, "both stores to show the hub's merge", 20)

        # A's member. name: A (clock ahead) writes first, B later in real time: A's HLC wins.
        await profile(a, mid, name="name from A")
        await profile(b, mid, name="name from B, later in real time")
        # tags: B writes first and A later: A wins again, whatever the arrival order.
        await profile(b, mid, tags=["from-b"])
        await profile(a, mid, tags=["from-a"])
        # birthday: only B writes it, yet it loses to A's registration, which happened earlier
        # in real time but carries a newer HLC.
        await profile(b, mid, birthday=date(1990, 5, 17))
        # B's member: B's own later write beats its registration; A's name beats B's.
        await profile(b, mid2, birthday=date(1985, 1, 2))
        await profile(b, mid2, name="B renames its member")
        await profile(a, mid2, name="A renames B's member")

        for svc in stores:
            for m in (mid, mid2):
                await sell(svc, [("A", "grocery", 2, 5_000)], member_id=m)
                await svc.top_up(terminal_id="POS-1", idem_key=key(), member_id=m,
                                 amount=10_000)
        await wait_for(lambda: all_drained(stores), "both stores drained")

        merged = await hub.db.transaction(hub_view)
        assert merged[mid] == ("name from A", ["from-a"], None)
        assert merged[mid2] == ("A renames B's member", [], "1985-01-02")

        # The same as last-writer-wins by (HLC, store id) over every write in the hub's log.
        events = [e for s in ("S001", "S002")
                  for e in await hub.db.transaction(lambda tx, s=s: _hub_events_of(tx, s))]
        for member_id, (name, tags, birthday) in merged.items():
            got = {"name": name, "tags": tags,
                   "birthday": date.fromisoformat(birthday) if birthday else None}
            for field in ("name", "tags", "birthday"):
                writes = [e for e in events if getattr(e.body, "member_id", None) == member_id
                          and (e.body.type == "member.registered"
                               or field in getattr(e.body, "changed", []))]
                newest = max(writes, key=lambda e: (e.hlc, e.store_id))
                assert got[field] == getattr(newest.body, field), (member_id, field)
        b_writes = [e.hlc for e in events if e.store_id == "S002"]
        a_writes = [e.hlc for e in events if e.store_id == "S001"]
        assert max(b_writes) < min(a_writes)  # the skew, not the real order, decided

        # Both stores converge on the hub's merge, points and stored value included.
        held = await hub.db.transaction(audit.balances)

        async def converged() -> bool:
            for svc in stores:
                for member_id, (name, tags, birthday) in merged.items():
                    m = await svc.member(member_id)
                    if (m["name"], m["tags"], m["birthday"]) != (name, tags, birthday):
                        return False
                    sv = m["stored_value"]
                    if (m["points"], sv["principal"], sv["bonus"]) != held[member_id]:
                        return False
            return True

        await wait_for(converged, "both stores to show the hub's merged members", 20)
    finally:
        await close_all(stores)
    await assert_books(hub.db, {s.config.store.store_id: edge_db(s) for s in stores})


# -- 6. three days offline, 50,000 events, then drained ----------------------------------------


@pytest.mark.slow
async def test_three_days_offline_then_drained(tmp_path: Path, mosquitto: Mosquitto,
                                               hub_sqlite: Hub) -> None:
    hub = hub_sqlite
    svc = await open_store(tmp_path, "S001", 1, mosquitto, signing.public_b64(hub.key),
                           ack_timeout_s=5.0)
    try:
        assert svc.sync is not None
        fast_reconnect(svc.sync.mqtt)
        await svc.sync.mqtt.wait_connected(10)
        await asyncio.to_thread(mosquitto.kill)
        started = time.monotonic()
        # Three days of a busy store: a sale earns points (2 events), top-ups, registrations.
        sales = OFFLINE_EVENTS // 5
        await backlog(svc, members_n=1_000, sales=sales, topups=OFFLINE_EVENTS - 2 * sales,
                      phone="+8613601", days=3)
        mid = await svc.find_member_id("phone", "+8613601000001")
        for i in range(20):  # and the tills still work, offline
            await sell(svc, [("A", "grocery", 1, 1_000 + i)], member_id=mid)
        last = (await svc.status())["last_seq"]
        assert last >= OFFLINE_EVENTS
        built = time.monotonic() - started
        assert not await drained(svc)
        await asyncio.to_thread(mosquitto.start)
        t0 = time.monotonic()
        await wait_for(lambda: drained(svc), "the three-day backlog drained", 120)
        took = time.monotonic() - t0
        print(f"\n{last} events built offline in {built:.1f} s; drained in {took:.1f} s after"
              f" the broker came back ({last / took:.0f} events/s), {svc.sync.sent_batches}"
              f" batches sent, hub duplicates {hub.pipeline.duplicate_events}")
    finally:
        await svc.close()
    await assert_books(hub.db, {"S001": edge_db(svc)})


# -- bad input on a store's downlink -----------------------------------------------------------


async def test_misdirected_tampered_or_impossible_downlink_is_refused(
        tmp_path: Path, mosquitto: Mosquitto, hub_sqlite: Hub) -> None:
    """What test_sync_e2e does not cover: hub-signed bundles on the wrong topic, a signed bundle
    changed after signing, an unsigned one, and an ack for events the store never wrote."""
    hub = hub_sqlite
    a = await open_store(tmp_path, "S001", 1, mosquitto, signing.public_b64(hub.key))
    try:
        assert a.sync is not None
        await a.sync.mqtt.wait_connected(10)
        mid = (await register(a, "+8613800000009"))["member_id"]
        await sell(a, [("A", "grocery", 1, 2_000)], member_id=mid)
        await wait_for(lambda: drained(a), "the first events at the hub")
        base = demo.demo_bundle()
        other_store = base.model_copy(update={"scope": "store", "scope_id": "S002"})
        other_region = base.model_copy(update={"scope": "region", "scope_id": "west"})
        own_store = base.model_copy(update={"scope": "store", "scope_id": "S001", "version": 3})
        signed = signing.sign(base.model_copy(update={"version": 5}), hub.key)
        key_id = signing.key_id(hub.key)
        tampered = CampaignManifest(key_id=key_id, bundle=signed.model_copy(
            update={"campaigns": signed.campaigns[:1]}))  # signature kept, content changed
        unsigned = CampaignManifest(key_id=key_id,
                                    bundle=base.model_copy(update={"version": 6}))
        async with MqttClient(mosquitto.host, mosquitto.port, client_id="rogue") as rogue:
            await rogue.wait_connected(10)
            # Signed by the hub, but each on a topic it does not belong on.
            await rogue.publish(topics.store_campaigns("S001"),
                                campaigns.manifest(other_store, hub.key))
            await rogue.publish(topics.region_campaigns("east"),
                                campaigns.manifest(other_region, hub.key))
            await rogue.publish(topics.FLEET_CAMPAIGNS, campaigns.manifest(own_store, hub.key))
            await rogue.publish(topics.FLEET_CAMPAIGNS, encode(tampered))
            await rogue.publish(topics.FLEET_CAMPAIGNS, encode(unsigned))
            # An ack for far more than this store ever wrote: acting on it would prune the
            # outbox and park the uplink beyond every future event.
            await rogue.publish(topics.ack("S001"),
                                encode(Ack(store_id="S001", epoch=1, seq=1_000_000)))

        async def refused() -> bool:
            r = a.sync.refused  # type: ignore[union-attr]
            return (r["wrong_scope"] >= 3 and r["bad_signature"] >= 2
                    and r["ack_ahead"] >= 1)

        await wait_for(refused, "the store to refuse all six")
        status = await a.sync.status()
        assert status.campaign_versions == {"fleet": 1}
        assert status.acked_seq == status.last_seq
        # The link still works: the store's own bundle on its own topic is applied, and what
        # the tills do next reaches the hub.
        await hub.push_campaigns(own_store)

        async def applied() -> bool:
            versions = (await a.sync.status()).campaign_versions  # type: ignore[union-attr]
            return versions.get("store:S001") == 3

        await wait_for(applied, "the store's own bundle applied")
        for i in range(5):
            await sell(a, [("B", "grocery", 1, 1_000 + i)], member_id=mid)
        await wait_for(lambda: drained(a), "the later sales at the hub")
    finally:
        await a.close()
    await assert_books(hub.db, {"S001": edge_db(a)})
