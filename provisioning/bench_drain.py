"""The drain part of ``membergate-hub bench``: one store's backlog through a real Mosquitto.

Lives here, not in ``hub``, because it composes both sides (as ``demo_fleet`` does): a real edge
store database with ``events`` outbox rows written by edge code (``outbox.append``, one
transaction), a private Mosquitto on a free port, a ``Hub`` on SQLite, and the store
itself as its own process (``membergate-edge run`` with ``[sync]``), as on its own box. The
figure is the time from the store's first batch at the hub until the store holds the hub's ack
of its last event. The floor beside it, measured in the same run on the same broker: the
same batches published the way the sync client publishes them (one at a time, each awaiting its
PUBACK) to a subscriber that does nothing with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from edge import outbox, uplink
from edge.config import EdgeConfig, SyncSection
from edge.gateway import open_gateway
from edge.service import EdgeService
from edge.status import ACK_KEY
from hub.app import Hub
from hub.bench import store_bodies
from hub.config import HubConfig
from hub.core.clock import now_ms
from hub.core.schema import counter
from hub.members import segments
from protocol.events import EventBody
from protocol.mqtt import MqttClient

MOSQUITTO = "/usr/sbin/mosquitto"
STORE_ID = "S001"
FLOOR_TOPIC = "bench/floor"
_BODY: TypeAdapter[EventBody] = TypeAdapter(EventBody)


class DrainUnavailable(RuntimeError):
    """No Mosquitto to drain through (not installed, or it would not start)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateMosquitto:
    """A Mosquitto of our own: temp config, free port, stopped by its own process handle."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log_file = self.dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text("\n".join([
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 100000",  # the default 1000 drops QoS 1 for a slow subscriber
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            # Started as root, Mosquitto 2 switches to user "mosquitto", who cannot read here.
            f"user {getpass.getuser()}",
        ]) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        if not os.access(MOSQUITTO, os.X_OK):
            raise DrainUnavailable(f"{MOSQUITTO} not installed")
        err = (self.dir / "mosquitto.stderr").open("wb")
        with err:
            self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                          stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                detail = (self.dir / "mosquitto.stderr").read_text(errors="replace").strip()
                raise DrainUnavailable(f"mosquitto exited with {self._proc.returncode}: "
                                       f"{detail[:200]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise DrainUnavailable(f"mosquitto not listening on {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _seed(conn: sqlite3.Connection, service: EdgeService, events: int, seed: int) -> int:
    """``events`` outbox rows as the store's own code writes them; returns the last seq."""
    ctx = service.context
    last = 0
    for body in store_bodies(1, events, seed=seed):
        last = outbox.append(conn, ctx, _BODY.validate_python(body)).seq
    return last


def _all_batches(conn: sqlite3.Connection, epoch: int, cfg: SyncSection) -> list[bytes]:
    out: list[bytes] = []
    after = 0
    while (b := uplink.build(conn, STORE_ID, epoch, after, max_events=cfg.batch_max_events,
                             max_bytes=cfg.batch_max_bytes)) is not None:
        out.append(b.payload)
        after = b.last_seq
    return out


async def _transport_floor(host: str, port: int, payloads: list[bytes]) -> float:
    """Seconds to get ``payloads`` through the broker to a subscriber that only counts them."""
    sub = MqttClient(host, port, client_id="bench-floor-sub", clean_session=True)
    pub = MqttClient(host, port, client_id="bench-floor-pub", clean_session=True)
    await sub.subscribe(FLOOR_TOPIC, qos=1)
    async with sub, pub:
        await sub.wait_connected(10)
        await pub.wait_connected(10)
        done = asyncio.get_running_loop().create_future()

        async def count() -> None:
            seen = 0
            async for _message in sub.messages():
                seen += 1
                if seen == len(payloads):
                    done.set_result(None)
                    return

        counter = asyncio.create_task(count())
        start = time.perf_counter()
        for payload in payloads:
            await pub.publish(FLOOR_TOPIC, payload, qos=1, timeout=30)
        await asyncio.wait_for(done, 60)
        spent = time.perf_counter() - start
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    return spent


async def run_drain(events: int, root: Path, *, seed: int = 1,
                    limit_s: float | None = None) -> dict[str, Any]:
    """Drain a backlog of ``events`` from one store; figures as a dict for ``hub.bench``."""
    broker = PrivateMosquitto(root / "mosquitto")
    broker.start()
    try:
        return await _drain(events, root, broker, seed,
                            limit_s if limit_s is not None else max(120.0, events / 500))
    finally:
        broker.stop()


async def _drain(events: int, root: Path, broker: PrivateMosquitto, seed: int,
                 limit_s: float) -> dict[str, Any]:
    edge_dir = root / "edge"
    edge_dir.mkdir(parents=True, exist_ok=True)
    db_path = edge_dir / "edge.db"
    sync_cfg = SyncSection(broker_host=broker.host, broker_port=broker.port)
    config = EdgeConfig.model_validate({
        "store": {"store_id": STORE_ID, "store_number": 1},
        "database": {"path": str(db_path)},
        "api": {"host": "127.0.0.1", "port": 0},
    })
    # The backlog is written before anything is sent, by the store's own code, with no sync.
    service = await open_gateway(config)
    out: dict[str, Any] = {}
    try:
        t = time.perf_counter()
        last = await service.db.write(lambda conn: _seed(conn, service, events, seed))
        out["drain_seed_s"] = round(time.perf_counter() - t, 1)
        epoch = service.context.epoch
        payloads = await service.db.read(lambda conn: _all_batches(conn, epoch, sync_cfg))
    finally:
        await service.close()
    floor_s = await _transport_floor(broker.host, broker.port, payloads)

    hub_cfg = HubConfig.model_validate({
        "hub": {"database": str(root / "hub" / "hub.db"), "data_dir": str(root / "hub")},
        "broker": {"host": broker.host, "port": broker.port},
    })
    # The store runs as its own process (``membergate-edge run`` with [sync]), as it would on
    # its own box: store and hub do not share an interpreter (or a GIL) here either.
    edge_toml = edge_dir / "edge.toml"
    edge_toml.write_text(
        f'[store]\nstore_id = "{STORE_ID}"\nstore_number = 1\n'
        f'[database]\npath = "{db_path}"\n[api]\nhost = "127.0.0.1"\nport = 0\n'
        f'[sync]\nbroker_host = "{broker.host}"\nbroker_port = {broker.port}\n',
        encoding="utf-8")
    async with Hub(hub_cfg) as hub:
        assert hub.link.mqtt is not None
        await hub.link.mqtt.wait_connected(10)  # subscribed: nothing sent is lost
        # A segment of every member who bought: how long after a batch's commit its members
        # are in it (``segment_freshness_p95_s``), with the drain going on.
        segment = await hub.db.transaction(lambda tx: segments.create(
            tx, name="buyers", definition=FRESHNESS_SEGMENT, for_tills=False, tag=None,
            by="bench", now_ms=now_ms(), today=hub.keeper.today(), zone=hub.chain_zone))
        visible: list[tuple[int, int]] = []  # (wall ms, the log's head then)
        sampler = asyncio.create_task(_sample_head(hub, visible))
        log_file = (edge_dir / "edge.log").open("w", encoding="utf-8")
        store = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "edge.cli", "--config", str(edge_toml), "--log-level",
             "WARNING", "run"], stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            deadline = time.perf_counter() + limit_s + 60
            # The clock starts with the store's first batch at the hub (not with the store
            # process's start-up) and stops when the store holds the ack of its last event.
            while hub.link.received_batches == 0:
                if store.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"drain: the store sent nothing (exit {store.poll()})")
                await asyncio.sleep(0.001)
            start = hub.link.first_batch_at
            acked = 0
            with contextlib.closing(sqlite3.connect(db_path, timeout=5)) as peek:
                while acked < last:
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"drain: acked {acked} of {last} after {limit_s} s")
                    await asyncio.sleep(0.002)
                    acked = int(outbox.meta_get(peek, ACK_KEY.format(epoch=epoch), "0") or 0)
            drain_s = time.perf_counter() - start
        finally:
            await asyncio.to_thread(_stop, store)
            log_file.close()
        if hub.pipeline.applied_events != events:
            raise RuntimeError(f"drain: hub applied {hub.pipeline.applied_events} of {events}")
        out.update(await _freshness(hub, str(segment["segment_id"]), visible, sampler))
        out.update({
            "drain_events_per_s": round(events / drain_s, 1),
            "drain_s": round(drain_s, 2),
            "drain_transport_floor_events_per_s": round(events / floor_s, 1),
            "drain_vs_transport": round(floor_s / drain_s, 3),
            "drain_batches": len(payloads),
            "drain_received_batches": hub.link.received_batches,
            "drain_duplicates": hub.pipeline.duplicate_events,
            "drain_gaps": hub.pipeline.gaps,
            "drain_store": "separate process (membergate-edge run)",
        })
    return out


FRESHNESS_SEGMENT = {"field": "purchases", "gte": 1}
SAMPLE_S = 0.1
FRESHNESS_WAIT_S = 300.0


async def _sample_head(hub: Hub, visible: list[tuple[int, int]]) -> None:
    """When each position of the log became visible (to within ``SAMPLE_S``)."""
    while True:
        head = await hub.db.read(lambda tx: int(tx.scalar("SELECT max(pos) FROM events",
                                                          default=0) or 0), give_way=False)
        visible.append((now_ms(), head))
        await asyncio.sleep(SAMPLE_S)


async def _freshness(hub: Hub, segment_id: str, visible: list[tuple[int, int]],
                     sampler: asyncio.Task[None]) -> dict[str, Any]:
    """Once the keeper has read the whole log: per member of the segment, from when the batch
    with their first purchase was visible to when they entered it."""
    head = visible[-1][1] if visible else 0
    deadline = time.perf_counter() + FRESHNESS_WAIT_S
    while await hub.db.read(lambda tx: counter(tx, "segments_pos"), give_way=False) < head:
        if time.perf_counter() > deadline:
            sampler.cancel()
            return {"segment_freshness": f"not caught up in {FRESHNESS_WAIT_S:.0f} s"}
        await asyncio.sleep(0.2)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    rows = await hub.db.read(lambda tx: tx.all(
        "SELECT g.since_ms, min(e.pos) FROM segment_members g JOIN events e ON e.member_id"
        " = g.member_id AND e.type = 'sale.finalized' WHERE g.segment_id = ?"
        " GROUP BY g.member_id, g.since_ms", (segment_id,)), give_way=False)
    lags: list[float] = []
    for since_ms, pos in rows:
        seen = next((at for at, top in visible if top >= int(pos)), None)
        if seen is not None:
            lags.append(max(0, int(since_ms) - seen) / 1000)
    if not lags:
        return {"segment_freshness": "no member entered the segment"}
    lags.sort()
    return {"segment_freshness_p95_s": round(lags[min(len(lags) - 1,
                                                        round(0.95 * (len(lags) - 1)))], 2),
            "segment_freshness_max_s": round(lags[-1], 2), "segment_freshness_members": len(lags),
            "segment_keeper_passes": hub.keeper.passes}


def drain_part(events: int, workdir: Path, seed: int) -> dict[str, Any]:
    """``membergate-hub bench``'s drain figures (``hub.extensions.BenchPart``)."""
    try:
        figures = asyncio.run(run_drain(events, workdir, seed=seed))
    except DrainUnavailable as exc:
        return {"drain": f"unavailable: {exc}"}
    return {"drain": "ok: store process (membergate-edge run) -> Mosquitto -> Hub (SQLite)",
            **figures}
