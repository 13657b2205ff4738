"""``membergate-hub demo``: a hub with its embedded broker and two stores, walking a story.

The one place that composes edge and hub in one process (as the tests do); each side still only
talks to the other through the broker and ``protocol``. Nothing here listens on a fixed port: the
embedded broker takes a free one, so a Mosquitto already on 1883 is no obstacle.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from edge import demo as edge_demo
from edge.checkout import TenderRequest
from edge.config import EdgeConfig
from edge.gateway import open_gateway
from edge.service import EdgeService
from edge.sync import SyncClient
from hub.api.app import serving
from hub.app import Hub
from hub.config import HubConfig
from hub.ledger import audit
from protocol import signing
from protocol.money import format_amount
from provisioning import demo_history

# The console's chain: six stores of their own (the story's two stream live), two regions.
HISTORY_STORES = (("S101", "南京东路店", "east"), ("S102", "徐家汇店", "east"),
                  ("S103", "西湖店", "east"), ("S104", "天河店", "south"),
                  ("S105", "福田店", "south"), ("S106", "海珠店", "south"))


def say(text: str) -> None:
    print(text, flush=True)


async def _until(check: Callable[[], Awaitable[bool]], what: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


async def _store(root: Path, store_id: str, number: int, name: str, hub: Hub,
                 port: int) -> EdgeService:
    (root / store_id).mkdir(parents=True, exist_ok=True)
    cfg = EdgeConfig.model_validate({
        "store": {"store_id": store_id, "store_number": number, "name": name},
        "database": {"path": str(root / store_id / "edge.db")},
        "api": {"tokens": {"POS-1": f"demo-token-{store_id.lower()}"}},
        "sync": {"broker_host": "127.0.0.1", "broker_port": port,
                 "hub_public_key": signing.public_b64(hub.key), "ack_timeout_s": 3.0},
    })
    svc = await open_gateway(cfg)
    await svc.apply_bundle(edge_demo.demo_bundle())
    return svc


async def _drained(svc: EdgeService) -> bool:
    link = svc.sync
    if not isinstance(link, SyncClient):
        return False
    s = await link.status()
    return s.outbox_depth == 0 and s.acked_seq == s.last_seq


async def _sale(svc: EdgeService, card_uid: str, lines: list[tuple[str, str, str, int, int]],
                key: str) -> dict[str, Any]:
    sale = await svc.open_sale("POS-1")
    sid = sale["sale_id"]
    await svc.identify_on_sale(sid, "POS-1", f"{key}-id", "card_uid", card_uid)
    for i, (sku, name, cat, qty, price) in enumerate(lines):
        await svc.add_line(sid, "POS-1", f"{key}-l{i}", sku=sku, name=name, category=cat,
                           qty=qty, unit_price=price)
    view = await svc.sale_view(sid, "POS-1")
    return await svc.finalize(sid, "POS-1", f"{key}-fin",
                              [TenderRequest(kind="cash", amount=view["total"])])


async def run_demo(workdir: str | None, seconds: float | None) -> dict[str, Any]:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="membergate-demo-"))
    limit_s = max(10.0, (seconds or 60.0) - 2)
    cfg = HubConfig.model_validate({
        "hub": {"database": str(root / "hub" / "hub.db"), "data_dir": str(root / "hub")},
        "broker": {"embedded_port": 0},
        "api": {"port": 0},  # a free port: the console's address is printed
    })
    result: dict[str, Any] = {"ok": False, "dir": str(root)}
    async with Hub(cfg) as hub:
        assert hub.link.broker_port is not None
        port = hub.link.broker_port
        say(f"[hub] up: embedded MQTT broker on 127.0.0.1:{port}, SQLite at {cfg.database_url}")
        say(f"[hub] campaign signing key {signing.key_id(hub.key)}; the stores trust only it")
        a = await _store(root, "S001", 1, "Nanjing Road", hub, port)
        b = await _store(root, "S002", 2, "Xujiahui", hub, port)
        try:
            await _story(hub, a, b, limit_s)
            await _console(hub, seconds)
            result["ok"] = True
        finally:
            await a.close()
            await b.close()
    if seconds is None:
        say(f"demo data kept in {root}")
    return result


async def _story(hub: Hub, a: EdgeService, b: EdgeService, limit_s: float) -> None:
    say("[S001] store A (Nanjing Road) and [S002] store B (Xujiahui) are up and syncing")
    m = await a.register_member(terminal_id="POS-1", idem_key="demo-reg", phone="13812345678",
                                name="张伟", birthday=None, card_uid="04A1B2C3")
    mid = m["member_id"]
    say(f"[S001] 张伟 registers with phone 138-1234-5678 and card 04A1B2C3: member code"
        f" {m['member_code']}")
    r = await _sale(a, "04A1B2C3", [("6901234567892", "牛奶", "dairy", 4, 1_250),
                             ("6900000000012", "大米 5kg", "grocery", 1, 4_990)], "demo-s1")
    say(f"[S001] buys milk and rice for {format_amount(r['total'], 'CNY')}, earns"
        f" {r['points_earned']} points")
    await _until(lambda: _drained(a), "store A to drain", limit_s)
    say("[hub]  store A's events are merged and acknowledged; the outbox is pruned")

    async def b_knows() -> bool:
        try:
            found = await b.find_member_id("card_uid", "04A1B2C3")
        except Exception:
            return False
        return bool((await b.member(found))["points"] == r["points_earned"])

    await _until(b_knows, "store B to learn the member", limit_s)
    view = await b.member(mid)
    say(f"[S002] card 04A1B2C3 tapped: recognised as {view['name']} with {view['points']} points")

    say("[S002] store B loses its link to the hub ...")
    link = b.sync
    assert isinstance(link, SyncClient)
    await link.close()
    b.sync = None
    r2 = await _sale(b, "04A1B2C3", [("6905555000017", "苹果", "fresh", 3, 800)], "demo-s2")
    pending = await b.db.read(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0])
    say(f"[S002] ... and keeps selling offline: {format_amount(r2['total'], 'CNY')}, earns"
        f" {r2['points_earned']} points ({pending} events waiting in the outbox)")
    b.sync = await b.around(SyncClient(b, b.config.sync))
    say("[S002] link back: the outbox drains in order")
    await _until(lambda: _drained(b), "store B to drain", limit_s)
    expected = r["points_earned"] + r2["points_earned"]

    async def agree() -> bool:
        return bool((await a.member(mid))["points"] == expected
                    and (await b.member(mid))["points"] == expected)

    await _until(agree, "both stores to agree", limit_s)
    held = await hub.db.transaction(audit.balances)
    check = await hub.db.transaction(audit.compare)
    say(f"[check] points at the hub {held[mid][0]}, store A {(await a.member(mid))['points']},"
        f" store B {(await b.member(mid))['points']}; rebuilt from the event log:"
        f" {len(check['mismatches'])} mismatches over {check['events']} events")
    if held[mid][0] != expected or check["mismatches"]:
        raise RuntimeError("balances disagree")

    bundle = edge_demo.demo_bundle().model_copy(update={"version": 2})
    topic = await hub.push_campaigns(bundle)
    say(f"[hq]   pushes campaign bundle version 2 (signed) on {topic}")

    async def both_v2() -> bool:
        links = [s.sync for s in (a, b)]
        assert all(isinstance(link, SyncClient) for link in links)
        sa, sb = [await link.status() for link in links]  # type: ignore[union-attr]
        return bool(sa.campaign_versions.get("fleet") == 2 == sb.campaign_versions.get("fleet"))

    await _until(both_v2, "both stores to apply version 2", limit_s)
    say("[S001] [S002] verified the hub's signature and applied campaign version 2")
    status = await hub.status()
    for s in status["stores"]:
        say(f"[fleet] {s['store_id']}: epoch {s['epoch']}, acked seq {s['acked_seq']},"
            f" lag {s['lag_events']} events")
    say("demo done: every balance agrees at the hub and in both stores")


async def _console(hub: Hub, seconds: float | None) -> None:
    """A year of a six-store chain's history, then the HQ console over it: served until
    Ctrl-C, or checked once and left when the demo runs for ``--seconds``."""
    say("[hq]   writing a year of history for six more stores (two regions) ...")
    chain = await demo_history.seed(hub.db, members=300, days=400, stores=HISTORY_STORES)
    await hub.reload_access()
    await hub.reload_zones()
    say(f"[hq]   {chain.events} events merged: {len(chain.members)} members,"
        f" {len(chain.sales)} sales, an RFM run, a segment, a user of each role")
    async with serving(hub) as docs:
        base = docs.removesuffix("/docs")
        say(f"[hq]   HQ console: {base}/console/  (sign in as admin, or s101 for a store manager;"
            f" password {demo_history.PASSWORD})")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            signed = await client.post("/v1/auth/sign-in", json={
                "username": "admin", "password": demo_history.PASSWORD})
            signed.raise_for_status()
            page = await client.get("/console/dashboard")
            if page.status_code != 200 or "首页看板" not in page.text:
                raise RuntimeError(f"the console's dashboard answered {page.status_code}")
        say("[hq]   the dashboard answers, in Chinese, with the chain's figures")
        if seconds is None:
            say("press Ctrl-C to stop")
            await asyncio.Event().wait()


class _DemoCommand:
    """``membergate-hub demo`` (``hub.extensions.HubCommand``)."""

    help = "hub + embedded broker + two stores, walking a story"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seconds", type=float, default=None,
                            help="exit 0 when the story is done (after at most N seconds)")
        parser.add_argument("--dir", help="working directory (default: a new temporary one)")

    def run(self, args: argparse.Namespace) -> int:
        result = asyncio.run(run_demo(args.dir, args.seconds))
        return 0 if result["ok"] else 1


demo_command = _DemoCommand()
