"""``membergate-hub bench``: how fast the hub merges, beside floors measured in the same run.

Prints figures, asserts nothing about speed: these machines are shared and noisy. Each figure
comes with a floor from the same run, so a reader can judge the ratio rather than the number:

* merge: realistic batches from many stores (registrations first, then sales with a few lines,
  stored value spent, points earned), put through the hub's own ingest: validated in its
  validation worker (``hub.ledger.facts.decode``), applied by ``IngestPipeline`` in group commits
  through ``HubDatabase`` on SQLite (WAL, ``synchronous=FULL``, as the hub opens it), in the
  order a hub would see them (stores interleaved);
* raw: the same event-log rows inserted in the same transactions (the merge's group sizes)
  into a bare copy of the ``events`` table with plain ``sqlite3`` and the hub's pragmas: what
  the disk allows for the log alone;
* writes replayed: every statement the merge wrote with (log, members, cards, shares, grants,
  spend months, change numbers, counters, streams), recorded in an untimed apply and replayed
  alone on a fresh database with the hub's schema, in the merge's transactions: the floor for
  the rows the merge must write, with no reads and no Python between them;
* the same merge on PostgreSQL, in a throwaway database that is dropped afterwards;
* projections: every projection of the hub's log (sales facts, member activity, daily
  rollups and the report rollups) caught up from zero over the merged log, a page a
  transaction as the running hub does it; its floor (issue 13's) is the sales fact rows they
  wrote, inserted again with plain sqlite3 ``executemany`` into a bare copy of their table, in
  the same transactions; a second floor inserts every row all their tables hold at the end;
* drain: one store's backlog through a private Mosquitto to a running ``Hub`` until the
  store holds the ack of its last event (``provisioning.bench_drain``, which composes edge and
  hub; this module imports only ``hub`` and ``protocol``).

Batches are generated and encoded before any timing; only decoding and applying are timed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgpack

from hub import extensions
from hub.app import READ_YIELD_S
from hub.bench_journeys import measure_journeys
from hub.bench_pages import CHROMIUM, measure_pages, measure_pages_postgres
from hub.bench_reports import measure_reports, measure_reports_postgres
from hub.bench_rfm import measure_rfm, measure_rfm_postgres
from hub.bench_scope import measure_scope, measure_scope_postgres
from hub.bench_segments import measure_segments
from hub.config import HubConfig
from hub.core.db import CACHE_KIB, WRITER_AUTOCHECKPOINT_PAGES, Cursor, HubDatabase, Tx
from hub.core.projections import ProjectionRunner
from hub.core.schema import migrate
from hub.ledger.apply import ApplyResult, apply_facts
from hub.ledger.facts import Decoded
from hub.ledger.facts import decode as decode_uplink
from hub.ledger.pipeline import MAX_GROUP_BATCHES, IngestPipeline, Validators
from hub.projections import sales
from hub.projections.catalog import projections
from protocol.codec import DEFAULT_MAX_BYTES, encode
from protocol.events import Event
from protocol.ids import member_code, uuid7

PG_ADMIN = "postgresql://postgres@127.0.0.1/postgres"
BATCH_EVENTS = 500  # the edge's default [sync] batch_max_events
TARGETS: dict[str, float] = {"merge_events_per_s": 50_000, "drain_events_per_s": 20_000,
                             "merge_under_reads_vs_quiet": 0.8, "projection_catchup_vs_raw": 0.5}
READERS_BENCHED = 8  # concurrent HQ users running reports during the merge

CATEGORIES = ("grocery", "fresh", "dairy", "snacks", "household")
TIERS = ("standard", "standard", "standard", "silver", "gold")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊洋艳勇军杰娟涛明超秀霞平刚桂"
PRODUCTS = ("牛奶 1L", "大米 5kg", "苹果", "酸奶", "薯片", "洗衣液", "鸡蛋 12枚", "面包", "矿泉水",
            "酱油")
# The chain's catalogue: every store sells from the same products, each in one category, and a
# few sell far more often than the rest (a line picks product ``int(CATALOGUE * u**2)``).
CATALOGUE = 20_000


def catalogue_line(k: int) -> tuple[str, str, str]:
    """Product ``k``'s (sku, name, category)."""
    return f"69{k * 7_919 + 100_003:011d}", PRODUCTS[k % len(PRODUCTS)], CATEGORIES[k % 5]


# The hub's event log, bare: the same columns and key, none of the other tables or indexes.
RAW_DDL = """CREATE TABLE events (
    store_id TEXT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
    event_id TEXT NOT NULL, hlc BIGINT NOT NULL, type TEXT NOT NULL,
    member_id TEXT, payload BLOB NOT NULL,
    PRIMARY KEY (store_id, epoch, seq))"""
RAW_INSERT = ("INSERT INTO events(store_id, epoch, seq, event_id, hlc, type, member_id, payload)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


# --- the workload ------------------------------------------------------------------------------


def members_for(count: int) -> int:
    """Members a store registers in its first pass: a tenth of its events, at most 10,000."""
    return max(1, min(count // 10, 10_000))


def _tender(kind: str, amount: int, sv_principal: int = 0) -> dict[str, Any]:
    return {"kind": kind, "amount": amount, "points": 0, "sv_principal": sv_principal,
            "sv_bonus": 0, "coupon_code": None, "reference": None}


def store_bodies(store_number: int, count: int, *, seed: int = 1) -> Iterator[dict[str, Any]]:
    """``count`` event bodies as a store's checkouts record them, in ``model_dump(mode="json")``
    shape and edge order: first the store's members register, then visits: a sale of 1-5 lines
    (seven in ten by a member), a quarter of member sales partly paid from stored value
    (``sv.spent`` after the sale), and the points a member sale earns (``points.earned``)."""
    rng = random.Random(seed * 1_000_003 + store_number)
    members: list[str] = []
    made = 0
    for i in range(1, members_for(count) + 1):
        mid = uuid7()
        members.append(mid)
        bday = date(rng.randrange(1950, 2005), rng.randrange(1, 13), rng.randrange(1, 29))
        yield {"type": "member.registered", "v": 1, "member_id": mid,
               "member_code": member_code(store_number, i),
               "phone": f"+861{store_number:04d}{i:06d}",
               "name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
               "birthday": bday.isoformat(), "card_uid": f"04{store_number:04X}{i:06X}",
               "tier": rng.choice(TIERS), "tags": [], "guide_id": None, "gender": None}
        made += 1
        if made == count:
            return
    expires = (date.today() + timedelta(days=365)).isoformat()
    while True:
        sale_id = uuid7()
        member = rng.choice(members) if rng.random() < 0.7 else None
        lines: list[dict[str, Any]] = []
        for n in range(1, rng.randint(1, 5) + 1):
            qty, price = rng.randint(1, 3), rng.randrange(100, 5_000)
            gross = qty * price
            discount = gross // 20 if member is not None and n == 1 else 0
            net = gross - discount
            sku, name, category = catalogue_line(int(CATALOGUE * rng.random() ** 2))
            lines.append({"line_no": n, "sku": sku, "name": name, "category": category,
                          "qty": qty, "unit_price": price, "gross": gross, "discount": discount,
                          "net": net, "points": net // 100 if member is not None else 0})
        subtotal = sum(ln["gross"] for ln in lines)
        discount_total = sum(ln["discount"] for ln in lines)
        total = subtotal - discount_total
        earned = sum(ln["points"] for ln in lines)
        sv = total // 2 if member is not None and rng.random() < 0.25 else 0
        tenders = [_tender("stored_value", sv, sv)] if sv else []
        if total - sv > 0 or not tenders:
            tenders.append(_tender("cash", total - sv))
        discounts = ([{"kind": "tier_discount", "label": "Member price", "amount": discount_total,
                       "campaign_id": "tier-price", "coupon_code": None}]
                     if discount_total else [])
        # Tills name their cashier (version 2 of a sale); a third of sales name a guide.
        guide = f"G{rng.randrange(1, 20):02d}" if rng.random() < 0.3 else None
        bodies: list[dict[str, Any]] = [{
            "type": "sale.finalized", "v": 2, "sale_id": sale_id, "terminal_id": "POS-1",
            "member_id": member, "cashier_id": f"C{rng.randrange(1, 9):02d}", "guide_id": guide,
            "currency": "CNY", "lines": lines, "discounts": discounts,
            "tenders": tenders, "subtotal": subtotal, "discount_total": discount_total,
            "total": total, "points_earned": earned}]
        if sv:
            bodies.append({"type": "sv.spent", "v": 1, "member_id": member, "sale_id": sale_id,
                           "currency": "CNY", "principal": sv, "bonus": 0})
        if earned:
            bodies.append({"type": "points.earned", "v": 1, "member_id": member,
                           "lot_id": uuid7(), "points": earned, "expires_on": expires,
                           "reason": "sale", "sale_id": sale_id})
        for body in bodies:
            yield body
            made += 1
            if made == count:
                return


@dataclass
class Workload:
    payloads: list[bytes]  # encoded EventBatch, in arrival order (stores interleaved)
    events: int
    members: int
    stores: list[str] = field(default_factory=list)  # the store each payload comes from
    by_type: Counter[str] = field(default_factory=Counter)

    @property
    def payload_bytes(self) -> int:
        return sum(len(p) for p in self.payloads)


def _check_shape(envelope: dict[str, Any]) -> None:
    """The generator writes wire dicts by hand for speed; they must be what the edge encodes."""
    if encode(Event.model_validate(envelope)) != msgpack.packb(envelope, use_bin_type=True):
        raise RuntimeError(f"bench {envelope['body']['type']} events differ from protocol.events")


def make_workload(stores: int, events: int, *, batch_events: int = BATCH_EVENTS,
                  seed: int = 1) -> Workload:
    """``events`` split over ``stores`` (S001...), cut into consecutive batches of each store,
    and interleaved batch by batch the way a hub receives a fleet."""
    per_store = [events // stores + (1 if s < events % stores else 0) for s in range(stores)]
    hlc0 = time.time_ns() // 1_000_000 << 16
    work = Workload(payloads=[], events=0, members=0)
    checked: set[str] = set()
    per_store_batches: list[list[bytes]] = []
    for s, count in enumerate(per_store):
        store_id, number = f"S{s + 1:03d}", s + 1
        batches: list[bytes] = []
        chunk: list[dict[str, Any]] = []
        work.members += min(count, members_for(count))
        for seq, body in enumerate(store_bodies(number, count, seed=seed), 1):
            env = {"event_id": uuid7(), "store_id": store_id, "epoch": 1, "seq": seq,
                   "hlc": hlc0 + (seq << 16), "body": body}
            if body["type"] not in checked:
                _check_shape(env)
                checked.add(body["type"])
            work.by_type[body["type"]] += 1
            chunk.append(env)
            if len(chunk) == batch_events or seq == count:
                payload = msgpack.packb({"v": 1, "store_id": store_id, "epoch": 1,
                                         "events": chunk}, use_bin_type=True)
                if len(payload) > DEFAULT_MAX_BYTES:
                    raise RuntimeError("a bench batch exceeds the hub's payload limit")
                batches.append(payload)
                chunk = []
        work.events += count
        per_store_batches.append(batches)
    for k in range(max((len(b) for b in per_store_batches), default=0)):
        for s, b in enumerate(per_store_batches):
            if k < len(b):
                work.payloads.append(b[k])
                work.stores.append(f"S{s + 1:03d}")
    return work


# --- the measurements --------------------------------------------------------------------------


# Report-shaped reads (HQ's questions while stores sync): aggregates over the member tables the
# merge is writing, a ranking, a count by tier. Each runs in one reader transaction.
REPORT_QUERIES = (
    "SELECT month, count(*) AS members, sum(amount) AS spend FROM spend_months"
    " GROUP BY month ORDER BY month",
    "SELECT member_id, sum(points) AS points FROM shares GROUP BY member_id"
    " ORDER BY points DESC LIMIT 20",
    "SELECT tier, count(*) AS members FROM members WHERE merged_into IS NULL GROUP BY tier",
    "SELECT store_id, count(*) AS members, sum(sv_principal + sv_bonus) AS stored_value"
    " FROM shares GROUP BY store_id",
)


async def _report_reader(db: HubDatabase, stop: asyncio.Event, done: list[int]) -> None:
    """One HQ user asking report after report on the reader pool until ``stop``."""
    i = 0
    while not stop.is_set():
        sql = REPORT_QUERIES[i % len(REPORT_QUERIES)]
        await db.read(lambda tx, sql=sql: tx.all(sql))  # type: ignore[misc]
        done[0] += 1
        i += 1


async def measure_merge(url: str, work: Workload, *, readers: int = 0) -> dict[str, Any]:
    """Decode and apply every batch the way ``Hub`` does: validated by its validation
    worker (the default hub configuration: one process), put on its ``IngestPipeline``,
    applied in groups on the database thread, with the default tier rules. ``merge`` is wall
    time until the last batch is committed; ``groups`` are the batches per transaction, which
    the raw floor replays. With ``readers``, that many concurrent HQ users run report-shaped
    queries (``REPORT_QUERIES``) on the hub's reader pool for the whole merge."""
    config = HubConfig()
    applied = 0

    async def count(results: list[ApplyResult]) -> None:
        nonlocal applied
        applied += sum(r.applied for r in results)

    async def refused(store_id: str, reason: str, detail: str) -> None:
        raise RuntimeError(f"the hub refused a bench batch of {store_id}: {reason} ({detail})")

    validators = Validators(config.hub.validate_workers, DEFAULT_MAX_BYTES)
    try:
        await validators.start()
        async with HubDatabase(url) as db:
            await db.transaction(migrate)
            pipeline = IngestPipeline(db, config.tiers, lambda: int(time.time() * 1000),
                                      count, allowance=config.allowance, validators=validators,
                                      on_refused=refused).start()
            if readers:  # as the hub has it: HQ's reads let queued batches go first
                db.read_gate = functools.partial(pipeline.give_way, READ_YIELD_S)
            stop, reports = asyncio.Event(), [0]
            users = [asyncio.create_task(_report_reader(db, stop, reports))
                     for _ in range(readers)]
            try:
                start = time.perf_counter()
                for store_id, payload in zip(work.stores, work.payloads, strict=True):
                    await pipeline.submit(store_id, payload)
                await pipeline.drained()
                wall = time.perf_counter() - start
            finally:
                stop.set()
                await asyncio.gather(*users)
                await pipeline.close()
    finally:
        validators.close()
    if applied != work.events:
        raise RuntimeError(f"merge applied {applied} of {work.events} events")
    return {"merge": work.events / wall, "wall_s": wall, "groups": pipeline.group_sizes,
            "validate_workers": config.hub.validate_workers, "reports": reports[0]}


class _TimedTx(Tx):
    """A ``Tx`` that adds each statement's time to ``spent`` under its first words."""

    def __init__(self, tx: Tx, spent: defaultdict[str, float]) -> None:
        super().__init__(tx._conn, tx.dialect)
        self.spent = spent

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        start = time.perf_counter()
        try:
            return super().execute(sql, params)
        finally:
            self.spent[_statement(sql)] += time.perf_counter() - start

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        start = time.perf_counter()
        try:
            super().executemany(sql, rows)
        finally:
            self.spent[_statement(sql)] += time.perf_counter() - start

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # A query's rows are stepped in ``fetchall``: timed with the statement, not the Python.
        start = time.perf_counter()
        try:
            rows: list[Any] = Tx.execute(self, sql, params).fetchall()  # untimed execute
            return rows
        finally:
            self.spent[_statement(sql)] += time.perf_counter() - start


def _statement(sql: str) -> str:
    words = sql.split()
    table = next((w for w, prev in zip(words[1:], words, strict=False)
                  if prev.upper() in ("INTO", "UPDATE", "FROM")), "?")
    return f"{words[0].upper()} {table.split('(')[0]}"


def measure_breakdown(path: Path, work: Workload, group: int = MAX_GROUP_BATCHES
                      ) -> dict[str, Any]:
    """Where the apply's time goes: every batch validated up front, then applied alone on
    this thread in groups of ``group`` (as the pipeline commits them under load), with each
    statement timed. µs per event: per statement kind (table), the commits, and the rest
    (the apply's Python)."""
    config = HubConfig()
    decoded = [decode_uplink(p, max_bytes=DEFAULT_MAX_BYTES) for p in work.payloads]
    db = HubDatabase(f"sqlite:///{path}")
    spent: defaultdict[str, float] = defaultdict(float)
    inside, total = 0.0, 0.0
    db.open_sync()
    try:
        db.run_sync(migrate)
        now = int(time.time() * 1000)
        for i in range(0, len(decoded), group):
            batches = decoded[i:i + group]

            def apply_all(tx: Tx, batches: list[Decoded] = batches) -> None:
                nonlocal inside
                start = time.perf_counter()
                timed = _TimedTx(tx, spent)
                for d in batches:
                    apply_facts(timed, d, now, config.tiers, config.allowance)
                inside += time.perf_counter() - start

            start = time.perf_counter()
            db.run_sync(apply_all)
            total += time.perf_counter() - start
    finally:
        db.close_sync()
    per = 1e6 / work.events
    statements = sum(spent.values())
    return {"apply_events_per_s": round(work.events / total, 1),
            "apply_us_per_event": round(total * per, 2),
            "commit_us_per_event": round((total - inside) * per, 2),
            "python_us_per_event": round((inside - statements) * per, 2),
            "statement_us_per_event": {k: round(v * per, 2) for k, v in sorted(
                spent.items(), key=lambda kv: -kv[1])}}


class _RecordingTx(Tx):
    """A ``Tx`` that keeps every write it is given (statement and rows, in order)."""

    def __init__(self, tx: Tx, writes: list[tuple[str, list[Sequence[Any]]]]) -> None:
        super().__init__(tx._conn, tx.dialect)
        self.writes = writes

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if not sql.lstrip().upper().startswith("SELECT"):
            self.writes.append((sql, [tuple(params)]))
        return super().execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self.writes.append((sql, rows))
        super().executemany(sql, rows)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _sqlite(path: Path) -> sqlite3.Connection:
    """Plain sqlite3 with ``HubDatabase``'s pragmas."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
    return conn


def measure_writes_replayed(path: Path, work: Workload, groups: list[int]) -> dict[str, Any]:
    """A second floor: every row the merge writes — log, members, cards, shares, grants, spend
    months, change numbers, counters, streams — and nothing else. The batches are applied once
    in the merge's groups with each write recorded (untimed); then, on a fresh database with
    the hub's schema, exactly those statements and rows are replayed in the same transactions
    with plain sqlite3 and the hub's pragmas (timed). No reads, no Python between them: what
    SQLite and the disk allow for what the merge must write to keep its guarantees."""
    config = HubConfig()
    decoded = [decode_uplink(p, max_bytes=DEFAULT_MAX_BYTES) for p in work.payloads]
    recorded: list[list[tuple[str, list[Sequence[Any]]]]] = []
    merged = path.with_name(f"{path.stem}-merged{path.suffix}")  # kept beside, for comparison
    _remove(merged)
    db = HubDatabase(f"sqlite:///{merged}")
    db.open_sync()
    try:
        db.run_sync(migrate)
        now = int(time.time() * 1000)
        at = 0
        for size in groups:
            writes: list[tuple[str, list[Sequence[Any]]]] = []
            batches = decoded[at:at + size]
            at += size

            def apply_all(tx: Tx, batches: list[Decoded] = batches,
                          writes: list[tuple[str, list[Sequence[Any]]]] = writes) -> None:
                rec = _RecordingTx(tx, writes)
                for d in batches:
                    apply_facts(rec, d, now, config.tiers, config.allowance)

            db.run_sync(apply_all)
            recorded.append(writes)
    finally:
        db.close_sync()
    _remove(path)
    fresh = HubDatabase(f"sqlite:///{path}")  # the hub's schema on a fresh file, untimed
    fresh.open_sync()
    try:
        fresh.run_sync(migrate)
    finally:
        fresh.close_sync()
    conn = _sqlite(path)
    spent = 0.0
    rows = 0
    for writes in recorded:
        t = time.perf_counter()
        conn.execute("BEGIN")
        for sql, params in writes:
            if len(params) == 1:  # RETURNING statements cannot go through executemany
                conn.execute(sql, params[0]).fetchall()
            else:
                conn.executemany(sql, params)
        conn.execute("COMMIT")
        spent += time.perf_counter() - t
        rows += sum(len(p) for _sql, p in writes)
    conn.close()
    return {"events_per_s": work.events / spent, "rows_per_event": rows / work.events}


def measure_projections(merged: Path, raw_path: Path, events: int) -> dict[str, Any]:
    """Every projection caught up from zero over the log the merge left in ``merged``, with
    the hub's runner and page size, on the calling thread (timed); then two floors, each on a
    fresh file with plain sqlite3 and the hub's pragmas:

    * ``raw``: the sales fact rows that wrote, inserted again in the same transactions (split
      by the pages' ends) into a bare copy of their table (issue 13's floor);
    * ``all_rows``: every row every projection's tables hold at the end, inserted into bare
      copies of those tables in as many transactions, each a like share of every table. The
      catch-up also adds to rows earlier pages wrote (a day's sums), so this floor is lower
      than what any incremental catch-up can reach: the rows' own cost."""
    db = HubDatabase(f"sqlite:///{merged}")
    db.open_sync()
    try:
        runner = ProjectionRunner(db, projections(HubConfig().hub.timezone))
        for name in runner.names:
            db.run_sync(functools.partial(runner.reset, name=name))
        ends: list[int] = []
        start = time.perf_counter()
        while True:
            step = db.run_sync(runner.step)
            ends.append(step.pos)
            if step.done:
                break
        catchup = time.perf_counter() - start
        tables = sorted({t for p in runner.projections.values() for t in p.tables})
        held: dict[str, tuple[str, list[tuple[Any, ...]]]] = {}
        for table in tables:
            held[table] = db.run_sync(functools.partial(_table_rows, table=table))
        rows = db.run_sync(lambda tx: [tuple(r) for r in tx.all(
            f"SELECT {', '.join(sales.COLUMNS)} FROM sales_facts ORDER BY pos")])
    finally:
        db.close_sync()
    pages: list[list[tuple[Any, ...]]] = [[] for _ in ends]
    page, at_pos = 0, sales.COLUMNS.index("pos")
    for row in rows:
        while row[at_pos] > ends[page]:
            page += 1
        pages[page].append(row)
    _remove(raw_path)
    conn = _sqlite(raw_path)
    conn.execute(held["sales_facts"][0])
    spent = 0.0
    for chunk in pages:
        t = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(sales.INSERT, chunk)
        conn.execute("COMMIT")
        spent += time.perf_counter() - t
    conn.close()
    all_rows_s = _insert_shares(raw_path, held, len(ends))
    return {"catchup": events / catchup, "raw": events / spent, "rows": len(rows),
            "pages": len(ends), "catchup_s": catchup, "all_rows": events / all_rows_s,
            "all_rows_count": sum(len(r) for _sql, r in held.values())}


def _table_rows(tx: Any, table: str) -> tuple[str, list[tuple[Any, ...]]]:
    """``table``'s ``CREATE TABLE`` and every row it holds."""
    sql = str(tx.scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (table,)))
    return sql, [tuple(r) for r in tx.all(f"SELECT * FROM {table}")]


def _insert_shares(path: Path, held: dict[str, tuple[str, list[tuple[Any, ...]]]],
                   transactions: int) -> float:
    """Seconds to insert every table's rows into bare copies on a fresh file, in
    ``transactions`` transactions that each take the next like share of every table."""
    _remove(path)
    conn = _sqlite(path)
    inserts = {}
    for table, (sql, rows) in held.items():
        conn.execute(sql)
        if rows:
            inserts[table] = f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})"
    spent = 0.0
    for k in range(transactions):
        shares = [(inserts[table], rows[len(rows) * k // transactions:
                                        len(rows) * (k + 1) // transactions])
                  for table, (_sql, rows) in held.items() if rows]
        t = time.perf_counter()
        conn.execute("BEGIN")
        for sql, share in shares:
            conn.executemany(sql, share)
        conn.execute("COMMIT")
        spent += time.perf_counter() - t
    conn.close()
    return spent


def measure_decode(work: Workload) -> float:
    """Events per second that strict validation (and the reduction to what the apply takes)
    alone manages in one process: what a validation worker can feed the apply."""
    start = time.perf_counter()
    for payload in work.payloads:
        decode_uplink(payload, max_bytes=DEFAULT_MAX_BYTES)
    return work.events / (time.perf_counter() - start)


def _rows(payload: bytes) -> list[tuple[Any, ...]]:
    """The events-table rows of one batch, payload column encoded as the hub encodes it."""
    batch = msgpack.unpackb(payload, raw=False)
    store, epoch = batch["store_id"], batch["epoch"]
    return [(store, epoch, e["seq"], e["event_id"], e["hlc"], e["body"]["type"],
             e["body"].get("member_id"), msgpack.packb(e, use_bin_type=True))
            for e in batch["events"]]


def measure_raw(path: Path, work: Workload, groups: list[int] | None = None) -> float:
    """Plain sqlite3, same pragmas as ``HubDatabase``: the same rows in the same transactions
    (``groups``: batches per transaction as the merge committed them; default one each)."""
    _remove(path)
    conn = _sqlite(path)
    conn.execute(RAW_DDL)
    rows = 0
    spent = 0.0
    sizes = list(groups) if groups else [1] * len(work.payloads)
    at = 0
    for size in sizes:
        group = [_rows(p) for p in work.payloads[at:at + size]]  # prepared outside the timing
        at += size
        t = time.perf_counter()
        conn.execute("BEGIN")
        for batch in group:
            conn.executemany(RAW_INSERT, batch)
        conn.execute("COMMIT")
        spent += time.perf_counter() - t
        rows += sum(len(b) for b in group)
    conn.close()
    return rows / spent


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def measure_postgres(admin_url: str, work: Workload) -> dict[str, Any]:
    """The same merge in a throwaway database ``mg_bench_<random>``, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except Exception as exc:  # not installed, not running, refused: say so and carry on
        return {"postgres": f"unavailable: {_why(exc)}"}
    name = f"mg_bench_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        figures = asyncio.run(measure_merge(_with_database(admin_url, name), work))
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return {"postgres": f"ok: {name} on {urlsplit(admin_url).hostname} (dropped)",
            "merge_events_per_s_postgres": round(figures["merge"], 1)}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:300]}"


def failed(result: dict[str, Any]) -> list[str]:
    """The parts of a ``run_bench`` result that broke (empty when every part ran or was
    skipped or unavailable)."""
    return [k for k in ("postgres", "drain", "journeys", "reports", "reports_postgres", "pages",
                        "pages_postgres")
            if str(result.get(k, "")).startswith("failed")]


def run_bench(*, stores: int = 50, events: int = 200_000, drain_events: int = 100_000,
              postgres_url: str | None = PG_ADMIN, batch_events: int = BATCH_EVENTS,
              workdir: str | Path | None = None, seed: int = 1, breakdown: bool = False,
              scope_members: int = 1_000_000, rfm_members: int = 1_000_000,
              segment_members: int = 100_000, segment_count: int = 1000,
              journey_members: int = 1_000_000, dispatch_messages: int = 5000,
              report_members: int = 1_000_000, page_members: int = 1_000_000,
              chromium: str = CHROMIUM) -> dict[str, Any]:
    """Every figure in one dict (see the module docstring). ``postgres_url`` None skips the
    PostgreSQL merge; ``drain_events`` 0 skips the drain."""
    if stores < 1 or events < stores:
        raise ValueError("need at least one store and one event per store")
    keep = workdir is not None
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mg-hub-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        t = time.perf_counter()
        work = make_workload(stores, events, batch_events=batch_events, seed=seed)
        generate_s = time.perf_counter() - t
        result: dict[str, Any] = {"params": {
            "stores": stores, "events": events, "batch_events": batch_events,
            "batches": len(work.payloads), "members": work.members,
            "event_mix": dict(work.by_type.most_common()),
            "payload_mb": round(work.payload_bytes / 2**20, 1),
            "drain_events": drain_events,
            "sqlite": "WAL, synchronous=FULL, group commits of the hub's ingest pipeline"
                      " (as HubDatabase)",
            "raw_table": "bare copy of hub events table (same columns and primary key, no"
                         " other tables or indexes), plain sqlite3 executemany, same pragmas,"
                         " same transactions as the merge's group commits",
            "postgres_url": postgres_url, "generate_s": round(generate_s, 1),
            "python": platform.python_version(), "sqlite_version": sqlite3.sqlite_version,
            "cpus": os.cpu_count(), "workdir": str(tmp)}}

        hub_db = tmp / "hub.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{hub_db}{suffix}").unlink(missing_ok=True)
        merge = asyncio.run(measure_merge(f"sqlite:///{hub_db}", work))
        result["merge_events_per_s"] = round(merge["merge"], 1)
        result["validate_workers"] = merge["validate_workers"]
        result["decode_events_per_s"] = round(measure_decode(work), 1)
        groups = merge["groups"]
        result["batches_per_commit"] = round(len(work.payloads) / max(1, len(groups)), 2)
        result["merge_s"] = round(merge["wall_s"], 2)
        result["hub_db_mb"] = round(sum(
            Path(f"{hub_db}{s}").stat().st_size for s in ("", "-wal")
            if Path(f"{hub_db}{s}").exists()) / 2**20, 1)

        # The same merge while 8 HQ users run reports on the reader pool: reads apart from
        # the writer (HQ.md principle 3), as a ratio to the quiet merge. Busy and quiet runs
        # alternate (quiet, busy, quiet, busy) and the ratio is of their sums, so a noisy
        # moment on a shared machine weighs on both sides alike.
        def fresh_merge(readers: int) -> dict[str, Any]:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{hub_db}{suffix}").unlink(missing_ok=True)
            return asyncio.run(measure_merge(f"sqlite:///{hub_db}", work, readers=readers))

        busy = [fresh_merge(READERS_BENCHED)]
        quiet = [merge, fresh_merge(0)]
        busy.append(fresh_merge(READERS_BENCHED))
        result["merge_under_reads_events_per_s"] = round(
            sum(b["merge"] for b in busy) / len(busy), 1)
        result["reports_during_merge"] = sum(b["reports"] for b in busy) // len(busy)
        result["merge_under_reads_vs_quiet"] = round(
            sum(b["merge"] for b in busy) / sum(q["merge"] for q in quiet), 3)

        raw = measure_raw(tmp / "raw.db", work, groups)
        result["raw_insert_rows_per_s"] = round(raw, 1)
        result["merge_vs_raw"] = round(merge["merge"] / raw, 3)
        replayed = measure_writes_replayed(tmp / "replayed.db", work, groups)
        result["writes_replayed_events_per_s"] = round(replayed["events_per_s"], 1)
        result["rows_written_per_event"] = round(replayed["rows_per_event"], 2)
        result["merge_vs_writes_replayed"] = round(merge["merge"] / replayed["events_per_s"], 3)
        caught = measure_projections(hub_db, tmp / "projection-raw.db", work.events)
        result["projection_catchup_events_per_s"] = round(caught["catchup"], 1)
        result["projection_raw_insert_events_per_s"] = round(caught["raw"], 1)
        result["projection_catchup_vs_raw"] = round(caught["catchup"] / caught["raw"], 3)
        result["projection_all_rows_insert_events_per_s"] = round(caught["all_rows"], 1)
        result["projection_rows_held"] = caught["all_rows_count"]
        result["projection_catchup_vs_all_rows"] = round(
            caught["catchup"] / caught["all_rows"], 3)
        result["projection_fact_rows"] = caught["rows"]
        result["projection_pages"] = caught["pages"]
        result["projection_catchup_s"] = round(caught["catchup_s"], 2)
        if breakdown:
            result["apply_breakdown"] = measure_breakdown(tmp / "breakdown.db", work)

        # What a scope costs: a store and a region manager's member search and store day as a
        # ratio to the same queries unscoped (``hub.bench_scope``).
        if scope_members > 0:
            try:
                result.update(measure_scope(f"sqlite:///{tmp / 'scope.db'}", scope_members,
                                            seed))
            except Exception as exc:
                result["scope"] = f"failed: {_why(exc)}"
            if postgres_url is not None:
                try:
                    result.update(measure_scope_postgres(postgres_url, scope_members, seed))
                except Exception as exc:
                    result["scope_postgres"] = f"failed: {_why(exc)}"

        # What an RFM run costs against one bare SQL statement (``hub.bench_rfm``).
        if rfm_members > 0:
            try:
                result.update(measure_rfm(f"sqlite:///{tmp / 'rfm.db'}", rfm_members))
            except Exception as exc:
                result["rfm"] = f"failed: {_why(exc)}"
            if postgres_url is not None:
                try:
                    result.update(measure_rfm_postgres(postgres_url, rfm_members))
                except Exception as exc:
                    result["rfm_postgres"] = f"failed: {_why(exc)}"

        # Every consolidated report for a store, a region and HQ against one bare SQL statement
        # each, over a year of rollups at ``stores`` stores (``hub.bench_reports``).
        if report_members > 0:
            try:
                figures = measure_reports(f"sqlite:///{tmp / 'reports.db'}", report_members,
                                          stores=stores, seed=seed)
                result["params"]["reports"] = figures.pop("report_params")
                result.update(figures)
            except Exception as exc:
                result["reports"] = f"failed: {_why(exc)}"
            if postgres_url is not None:
                try:
                    figures = measure_reports_postgres(postgres_url, report_members,
                                                       stores=stores, seed=seed)
                    figures.pop("report_params_postgres")  # the same as SQLite's
                    result.update(figures)
                except Exception as exc:
                    result["reports_postgres"] = f"failed: {_why(exc)}"

        # The console's pages in Chromium over the same fill (``hub.bench_pages``): on SQLite
        # the reports' database when it holds as many members, on PostgreSQL a fill of its own
        # (the reports' throwaway database is gone by now).
        if page_members > 0:
            reuse = report_members == page_members and "reports" not in failed(result)
            db_file = tmp / ("reports.db" if reuse else "pages.db")
            try:
                figures = measure_pages(f"sqlite:///{db_file}", page_members, stores=stores,
                                        seed=seed, filled=reuse, chromium=chromium)
                result["params"]["pages"] = figures.pop("page_params")
                result.update(figures)
            except Exception as exc:
                result["pages"] = f"failed: {_why(exc)}"
            if postgres_url is not None:
                try:
                    figures = measure_pages_postgres(postgres_url, page_members, stores=stores,
                                                     seed=seed, chromium=chromium)
                    figures.pop("page_params_postgres")  # the same as SQLite's
                    result.update(figures)
                except Exception as exc:
                    result["pages_postgres"] = f"failed: {_why(exc)}"

        # What 1,000 active segments cost the keeper (``hub.bench_segments``).
        if segment_members > 0 and segment_count > 0:
            try:
                result.update(measure_segments(f"sqlite:///{tmp / 'segments.db'}",
                                               segment_members, segment_count))
            except Exception as exc:
                result["segments"] = f"failed: {_why(exc)}"

        # A birthday journey's pass and the outbox's dispatch (``hub.bench_journeys``).
        if journey_members > 0 or dispatch_messages > 0:
            try:
                result.update(measure_journeys(tmp, journey_members, dispatch_messages))
            except Exception as exc:
                result["journeys"] = f"failed: {_why(exc)}"

        # A part that breaks is reported as "failed: ..." (and the command exits 1) rather
        # than losing the figures measured before it.
        if postgres_url is None:
            result["postgres"] = "skipped: --no-postgres"
        else:
            try:
                result.update(measure_postgres(postgres_url, work))
            except Exception as exc:
                result["postgres"] = f"failed: {_why(exc)}"

        # Parts from outside the hub (``hub.extensions``): the drain runs a real store and
        # Mosquitto, which only the fleet-level tools may bring together.
        if drain_events > 0:
            for name, part in extensions.bench_parts().items():
                try:
                    result.update(part(drain_events, tmp / name, seed))
                except Exception as exc:
                    result[name] = f"failed: {_why(exc)}"
            result.setdefault("drain", "unavailable: no drain bench installed")
        else:
            result["drain"] = "skipped: --drain-events 0"
        result["targets"] = dict(TARGETS)
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        return result
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
