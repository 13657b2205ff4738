"""Projections of the log (``hub.core.projections``, ``hub.projections``), on both backends:
built page by page as batches arrive, or from zero afterwards, they end with the same rows,
over a history with merges (one a late offline store makes, one a chain), partial and full
refunds and duplicate batches; what the rows say; the lag; a projection that fails leaves the
acks alone."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hub import app as hub_app
from hub.api.models import HubStatus
from hub.app import Hub
from hub.cli import main
from hub.core.db import HubDatabase, Tx
from hub.core.projections import ProjectionRunner, lag
from hub.core.schema import migrate
from hub.ledger.apply import apply_batch
from hub.projections.catalog import projections
from protocol import topics
from protocol.codec import decode, encode
from protocol.events import (
    Event,
    EventBatch,
    LotDraw,
    MemberRegistered,
    PointsEarned,
    PointsRedeemed,
    RefundCompleted,
    RefundLine,
    SaleFinalized,
    SaleLine,
    StoredValueSpent,
    StoredValueToppedUp,
    Tender,
)
from protocol.hlc import pack
from protocol.mqtt import MqttClient
from protocol.sync import Ack
from tests.hub.test_sync_e2e import hub_config, wait_for
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

ZONE = "Asia/Shanghai"
TABLES = ("sales_facts", "member_activity", "member_months", "member_days", "member_stores",
          "daily_rollups", "point_lots", "store_days", "store_hours", "sku_days", "sku_months",
          "sku_chain_days", "sku_chain_months", "member_refund_days", "staff_days",
          "staff_months", "member_store_days", "store_members",
          "sale_refunds", "points_days", "points_expiry", "sv_days", "sv_flows", "sv_holdings",
          "sv_topups")
_ids = itertools.count(1)


def at(iso: str) -> int:
    """An HLC at a UTC wall time."""
    return pack(int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000), 0)


class Store:
    """One store's gap-free stream (epoch 1)."""

    def __init__(self, store_id: str) -> None:
        self.store_id, self.seq = store_id, 0

    def batch(self, *timed: tuple[str, Any]) -> EventBatch:
        events = []
        for iso, body in timed:
            self.seq += 1
            events.append(Event(event_id=f"e-{self.store_id}-{self.seq}", store_id=self.store_id,
                                epoch=1, seq=self.seq, hlc=at(iso), body=body))
        return EventBatch(store_id=self.store_id, epoch=1, events=events)


def registered(member: str, phone: str) -> MemberRegistered:
    return MemberRegistered(member_id=member, member_code=f"C-{member}", phone=phone)


def sale(member: str | None, *lines: tuple[str, int, int]) -> SaleFinalized:
    """Lines of (category, qty, unit price)."""
    sale_lines = [SaleLine(line_no=n, sku=f"sku-{cat}", name=cat, category=cat, qty=qty,
                           unit_price=price, gross=qty * price, discount=0, net=qty * price,
                           points=0) for n, (cat, qty, price) in enumerate(lines, 1)]
    total = sum(ln.net for ln in sale_lines)
    return SaleFinalized(sale_id=f"sale-{next(_ids)}", terminal_id="POS-1", member_id=member,
                         cashier_id="C1", guide_id="G1" if member else None, currency="CNY",
                         lines=sale_lines, subtotal=total, discount_total=0,
                         total=total, points_earned=0,
                         tenders=[Tender(kind="cash", amount=total)])


def refund(of: SaleFinalized, *lines: tuple[int, int]) -> RefundCompleted:
    """Lines of (line_no, qty); the amount is the line's unit price times qty."""
    price = {ln.line_no: ln.unit_price for ln in of.lines}
    back = [RefundLine(line_no=n, qty=q, amount=price[n] * q, points_reversed=0)
            for n, q in lines]
    amount = sum(r.amount for r in back)
    return RefundCompleted(refund_id=f"refund-{next(_ids)}", sale_id=of.sale_id,
                           terminal_id="POS-2", member_id=of.member_id, cashier_id="C2",
                           currency="CNY",
                           lines=back, amount=amount, points_reversed=0, points_shortfall=0,
                           points_returned=0, tenders=[Tender(kind="cash", amount=amount)])


def topped_up(member: str, principal: int, bonus: int) -> StoredValueToppedUp:
    return StoredValueToppedUp(member_id=member, topup_id=f"t-{next(_ids)}", currency="CNY",
                               principal=principal, bonus=bonus)


def spent(member: str, principal: int, bonus: int) -> StoredValueSpent:
    return StoredValueSpent(member_id=member, sale_id=f"sv-{next(_ids)}", currency="CNY",
                            principal=principal, bonus=bonus)


def history() -> list[EventBatch]:
    """S001 is online throughout; S002 was offline and merges late (its registration of P1 is
    older than S001's, so S001's member becomes an alias after facts were written for it);
    S003 later registers P1 earlier still (a chain: both become its aliases). Duplicates:
    batches sent twice, and a resend that overlaps."""
    s1, s2, s3 = Store("S001"), Store("S002"), Store("S003")
    m1_sale = sale("m1", ("dairy", 2, 500), ("fresh", 1, 1_200))
    m2_sale = sale("m2", ("snacks", 3, 300))
    b1 = s1.batch(("2026-03-01T10:00:00", registered("m1", "+8613900000001")),
                  ("2026-03-01T10:01:00", registered("m2", "+8613900000002")),
                  ("2026-03-01T10:05:00", m1_sale),
                  ("2026-03-01T16:30:00", sale(None, ("dairy", 1, 800))),  # 00:30 next day
                  ("2026-03-01T16:31:00", m2_sale))
    b2 = s1.batch(("2026-03-02T09:00:00", refund(m1_sale, (1, 1))),  # partial
                  ("2026-03-02T09:01:00", refund(m2_sale, (1, 3))),  # full
                  ("2026-03-02T09:02:00", sale("m1", ("fresh", 1, 999))))
    s2_sale = sale("m3", ("household", 1, 4_000), ("dairy", 1, 700))
    b3 = s2.batch(("2026-02-27T08:00:00", registered("m3", "+8613900000001")),
                  ("2026-02-27T08:10:00", s2_sale),
                  ("2026-03-01T11:00:00", registered("m4", "+8613900000002")),
                  ("2026-03-01T11:05:00", sale("m4", ("snacks", 2, 250))))
    b4 = s2.batch(("2026-03-03T12:00:00", refund(s2_sale, (2, 1))),
                  ("2026-03-03T12:30:00", sale("m3", ("fresh", 4, 100))),
                  ("2026-03-03T12:31:00", topped_up("m3", 10_000, 1_000)),
                  ("2026-03-03T12:32:00", PointsEarned(member_id="m3", lot_id="L1",
                                                       points=500)))
    # Stored value: m1 (m3's alias by now) spends S002's deposit at S001, m2 spends ahead of
    # its top-up, which S003 takes later.
    b5 = s1.batch(("2026-03-04T02:00:00", sale("m1", ("dairy", 1, 450))),  # not told yet
                  ("2026-03-04T02:01:00", spent("m1", 3_000, 300)),
                  ("2026-03-04T02:02:00", spent("m2", 200, 0)),
                  ("2026-03-04T02:03:00", PointsRedeemed(member_id="m1", points=100,
                                                         sale_id="x",
                                                         lots=[LotDraw(lot_id="L1",
                                                                       points=100)])))
    b6 = s3.batch(("2026-02-01T00:00:00", registered("m5", "+8613900000001")),
                  ("2026-02-01T00:05:00", sale("m5", ("grocery", 1, 2_000))),
                  ("2026-03-04T03:00:00", topped_up("m2", 1_000, 0)),
                  ("2026-03-04T03:01:00", spent("m5", 500, 50)))
    b7 = s1.batch(("2026-03-05T03:00:00", sale("m1", ("grocery", 2, 150))),
                  ("2026-03-05T03:01:00", sale("m2", ("dairy", 1, 100))))
    overlap = EventBatch(store_id="S001", epoch=1, events=[*b5.events, *b7.events])
    return [b1, b2, b1, b3, b2, b4, b5, b6, b3, overlap, b7]


async def snapshot(db: HubDatabase) -> dict[str, list[tuple[Any, ...]]]:
    def read(tx: Tx) -> dict[str, list[tuple[Any, ...]]]:
        return {t: sorted((tuple(r) for r in tx.all(f"SELECT * FROM {t}")), key=repr)
                for t in TABLES}
    return await db.transaction(read)


async def test_built_as_batches_arrive_or_from_zero_the_rows_are_the_same(
        hub_db: HubDatabase) -> None:
    small = ProjectionRunner(hub_db, projections(ZONE), page=2)
    for batch in history():
        await hub_db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))
        await small.catch_up()
    incremental = await snapshot(hub_db)
    assert await hub_db.transaction(lambda tx: tx.scalar(
        "SELECT count(*) FROM members WHERE merged_into = 'm5'")) == 2  # m1 and m3

    whole = ProjectionRunner(hub_db, projections(ZONE))
    for name in whole.names:
        await hub_db.transaction(lambda tx, n=name: whole.reset(tx, n))
    assert all(rows == [] for rows in (await snapshot(hub_db)).values())
    await whole.catch_up()
    assert await snapshot(hub_db) == incremental

    # What the rows say. Every sale of m1, m3 and m5 is m5's; the aliases keep nothing.
    def read(tx: Tx) -> dict[str, Any]:
        return {
            "activity": {r[0]: tuple(r[1:]) for r in tx.all(
                "SELECT member_id, first_date, first_store, last_date, last_store, purchases,"
                " refunds, spend, items FROM member_activity")},
            "stores": sorted(tuple(r) for r in tx.all(
                "SELECT member_id, store_id, purchases, spend FROM member_stores")),
            "months": {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in tx.all(
                "SELECT member_id, month, category, spend, items FROM member_months")},
            "day": {(r[0], r[1], r[2]): tuple(r[3:]) for r in tx.all(
                "SELECT store_id, day, category, sales, items, amount, member_amount, refunds,"
                " refund_items, refund_amount FROM daily_rollups")},
            "refund_line": tx.all(
                "SELECT sku, category, qty, amount, local_date, local_hour, member_id"
                " FROM sales_facts WHERE kind = 'refund_line' AND store_id = 'S002'"),
            "net": {str(r[0]): int(r[1]) for r in tx.all(
                "SELECT kind, sum(amount) FROM sales_facts GROUP BY kind")},
        }

    seen = await hub_db.transaction(read)
    assert set(seen["activity"]) == {"m2", "m5"}
    # m5: S003's sale (2026-02-01 08:05 local) is the first; S001's of 03-05 03:00Z the last.
    # 7 purchases: m5 1, m3 2, m1 4; spend 2000 + 4700 + 400 + 2200 + 999 + 450 + 300, less
    # the refunds of 500 (m1) and 700 (m3).
    assert seen["activity"]["m5"] == ("2026-02-01", "S003", "2026-03-05", "S001", 7, 2,
                                      2_000 + 4_700 + 400 + 2_200 + 999 + 450 + 300 - 1_200,
                                      1 + 2 + 4 + 3 + 1 + 1 + 2 - 2)
    # m2 bought at S001, was fully refunded, and its alias m4 bought at S002.
    assert seen["activity"]["m2"][4:] == (3, 1, 900 - 900 + 500 + 100, 3 - 3 + 2 + 1)
    assert ("m5", "S002", 2, 4_700 + 400 - 700) in seen["stores"]
    assert seen["months"][("m5", "2026-03", "dairy")] == (1_000 - 500 - 700 + 450, 2 - 1 - 1 + 1)
    assert seen["months"][("m2", "2026-03", "snacks")] == (900 - 900 + 500, 3 - 3 + 2)
    # The anonymous sale at 16:30Z is 00:30 on March 2nd in Shanghai.
    assert seen["day"][("S001", "2026-03-02", "dairy")][:4] == (1, 1, 800, 0)
    # A refund is booked on its own day, under the category of the line it returns.
    assert seen["day"][("S002", "2026-03-03", "dairy")] == (0, 0, 0, 0, 1, 1, 700)
    assert [tuple(r) for r in seen["refund_line"]] == [
        ("sku-dairy", "dairy", -1, -700, "2026-03-03", 20, "m3")]
    # A sale's lines and its refunds' lines sum to what was kept; so do tenders.
    assert seen["net"]["line"] + seen["net"]["refund_line"] == \
        seen["net"]["sale"] + seen["net"]["refund"] == \
        seen["net"]["tender"] + seen["net"]["refund_tender"]
    # Whose deposits paid: S002's for m1's spend at S001 and m5's at S003 (both m3's, folded
    # into m5), S003's top-up for what m2 spent at S001 before it.
    assert await hub_db.transaction(lambda tx: sorted(tuple(r) for r in tx.all(
        "SELECT store_id, day, from_store, principal, bonus FROM sv_flows"))) == [
        ("S001", "2026-03-04", "S002", 3_000, 300), ("S001", "2026-03-04", "S003", 200, 0),
        ("S003", "2026-03-04", "S002", 500, 50)]


async def test_lag_is_what_is_left_to_read_and_a_rebuild_starts_from_zero(
        hub_db: HubDatabase) -> None:
    runner = ProjectionRunner(hub_db, projections(ZONE), page=3, clock=lambda: 10_000)
    for batch in history()[:2]:
        await hub_db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))
    before = {p["name"]: p for p in await runner.status()}
    assert {p["lag_events"] for p in before.values()} == {8}  # b1 and b2, nothing read yet
    assert {p["lag_s"] for p in before.values()} == {None}  # never at the head
    step = await hub_db.transaction(lambda tx: runner.step(tx))
    assert not step.done and step.events == 3
    await runner.catch_up()
    after = await runner.status()
    assert [(p["lag_events"], p["lag_s"], p["pos"] == p["head"]) for p in after] == \
        [(0, 0.0, True)] * len(runner.names)
    runner.clock = lambda: 25_000  # a new batch, not read yet: stale for 15 s at most
    await hub_db.transaction(lambda tx: apply_batch(tx, history()[3], 1))
    assert [(p["lag_events"], p["lag_s"]) for p in await runner.status()] == \
        [(4, 15.0)] * len(runner.names)

    await runner.catch_up()
    kept = await snapshot(hub_db)
    steps: list[tuple[int, int]] = []
    await runner.rebuild("sales_facts", lambda s: steps.append((s.pos, s.head)))
    assert steps[-1][0] == steps[-1][1] and len(steps) > 1
    assert await snapshot(hub_db) == kept
    # What reads the sales facts started over with them.
    checkpoints = await hub_db.read(lambda tx: lag(tx, runner.names, 25_000))
    assert all(c["lag_events"] == 0 for c in checkpoints)
    with pytest.raises(KeyError):
        await runner.rebuild("no_such_projection")


async def test_store_local_dates_follow_the_chain_zone(tmp_path: Path) -> None:
    async with HubDatabase(f"sqlite:///{tmp_path / 'hub.db'}") as db:
        await db.transaction(migrate)
        late = Store("S009").batch(("2026-06-30T23:30:00", sale(None, ("dairy", 1, 100))))
        await db.transaction(lambda tx: apply_batch(tx, late, 1))
        await ProjectionRunner(db, projections("America/New_York")).catch_up()
        assert await db.transaction(lambda tx: tuple(tx.one(
            "SELECT local_date, local_hour FROM sales_facts WHERE kind = 'sale'")))  \
            == ("2026-06-30", 19)


async def test_the_running_hub_projects_after_the_acks_and_a_failing_projection_holds_none_back(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the wake-up after a group's acks can run the projections here (their own interval
    is an hour): a batch is projected soon after it is acknowledged, and the lag is in the
    status. Then a projection that fails: batches are still applied and acknowledged, and the
    status shows the failure and the lag growing."""
    monkeypatch.setattr(hub_app, "PROJECTIONS_EVERY_S", 3_600.0)
    s1 = Store("S001")
    cfg = hub_config(tmp_path, mosquitto)
    async with Hub(cfg) as hub, MqttClient(mosquitto.host, mosquitto.port,
                                           client_id="store") as store:
        assert hub.link.mqtt is not None
        await hub.link.mqtt.wait_connected(10)
        await store.subscribe(topics.ack("S001"), qos=1)
        await store.wait_connected(10)
        acks = store.messages()

        async def send(batch: EventBatch) -> int:
            await store.publish(topics.events("S001"), encode(batch), qos=1)
            async with asyncio.timeout(10):
                while True:
                    ack = decode((await anext(acks)).payload, Ack)
                    if ack.seq == batch.events[-1].seq:
                        return ack.seq

        await send(s1.batch(("2026-03-01T10:00:00", sale(None, ("dairy", 1, 800)))))

        async def projected() -> bool:
            return all(p["lag_events"] == 0 and p["pos"] > 0
                       for p in (await hub.status())["projections"])

        await wait_for(projected, "the batch projected")
        assert await hub.db.read(lambda tx: tx.scalar(
            "SELECT count(*) FROM sales_facts WHERE kind = 'sale'")) == 1

        def broken(tx: Tx, events: Any) -> None:
            raise RuntimeError("a projection that fails")

        monkeypatch.setattr(hub.projections.projections["daily_rollups"], "apply", broken)
        failures = hub.scheduler.jobs["projections"].failures
        for _ in range(3):
            await send(s1.batch(("2026-03-01T11:00:00", sale(None, ("fresh", 1, 100)))))

        async def failed() -> bool:
            return hub.scheduler.jobs["projections"].failures > failures

        await wait_for(failed, "the projection's failure")
        status = HubStatus.model_validate(await hub.status())
        assert status.jobs["projections"].last_error is not None
        assert {p.name: p.lag_events for p in status.projections} == {
            "sales_facts": 3, "member_activity": 3, "daily_rollups": 3, "point_lots": 3,
            "store_sales": 3, "sku_days": 3, "member_refund_days": 3,
            "staff_days": 3, "member_store_days": 3, "points_days": 3,
            "sv_days": 3}  # one transaction
        assert status.applied_events == 4


async def test_the_command_line_shows_the_lag_and_rebuilds_with_a_progress_bar(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    async with HubDatabase(url) as db:
        await db.transaction(migrate)
        for batch in history():
            await db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))
        await ProjectionRunner(db, projections(ZONE)).catch_up()
        kept = await snapshot(db)
        await db.transaction(lambda tx: apply_batch(tx, Store("S004").batch(
            ("2026-03-06T01:00:00", sale(None, ("dairy", 1, 100)))), 1))
    db_arg = ["--database", str(tmp_path / "hub.db")]

    assert await asyncio.to_thread(main, ["projections", "status", "--json", *db_arg]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["lag_events"]) for r in rows] == [
        ("sales_facts", 1), ("member_activity", 1), ("daily_rollups", 1), ("point_lots", 1),
        ("store_sales", 1), ("sku_days", 1), ("member_refund_days", 1), ("staff_days", 1),
        ("member_store_days", 1), ("points_days", 1), ("sv_days", 1)]
    assert await asyncio.to_thread(main, ["projections", "status", *db_arg]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "pos", "head", "lag_events", "lag_s"]
    assert [line.split()[0] for line in table[1:]] == [r["name"] for r in rows]

    assert await asyncio.to_thread(main, ["projections", "rebuild", "member_activity",
                                          *db_arg]) == 0
    out, err = capsys.readouterr()
    assert "rebuilt member_activity from zero" in out
    assert "rebuilding member_activity [" in err and "100%" in err and err.endswith("\n")
    assert await asyncio.to_thread(main, ["projections", "rebuild", "sales_facts", *db_arg]) == 0
    out, err = capsys.readouterr()
    assert ("rebuilt sales_facts, member_activity, daily_rollups, sku_days,"
            " member_refund_days, staff_days, member_store_days from zero") in out
    async with HubDatabase(url) as db:
        after = await snapshot(db)
    extra = [r for r in after["sales_facts"] if r[5] == "S004"]
    assert len(extra) == 3  # the new sale: its line, the sale, its tender
    assert {**after, "sales_facts": [r for r in after["sales_facts"] if r[5] != "S004"],
            "daily_rollups": kept["daily_rollups"], "sku_chain_days": kept["sku_chain_days"],
            "sku_chain_months": kept["sku_chain_months"],
            **{t: [r for r in after[t] if r[0] != "S004"]
               for t in ("sku_days", "sku_months", "staff_days", "staff_months")}} == kept

    assert await asyncio.to_thread(main, ["projections", "rebuild", "nope", *db_arg]) == 2
    out, err = capsys.readouterr()
    assert "no projection 'nope'" in err and "sales_facts" in err and "Traceback" not in err
