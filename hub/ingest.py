"""Applying a store's event batch: once, in order, in one transaction.

``(store_id, epoch, seq)`` is the idempotency key. A batch that starts beyond the next expected
``seq`` is not applied (the store is asked to resend from its ack); events at or below the ack
are duplicates and change nothing. Ledger effects are summed per member and store and written
once per batch; profile fields merge last-writer-wins by ``(hlc, store_id)``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from hub import allowances
from hub.allowances import AllowancePolicy
from hub.db import Tx
from hub.facts import Decoded, Fact, facts_of
from hub.schema import next_counter
from hub.tiers import ADD_SPEND, TierRules, month_of_hlc, recompute
from protocol.codec import encode
from protocol.events import BODY_TYPES, EventBatch
from protocol.sync import Ack

PROFILE_FIELDS = ("name", "birthday", "phone", "tags")


@dataclass
class ApplyResult:
    ack: Ack
    applied: int = 0
    duplicates: int = 0
    gap: bool = False
    members_changed: int = 0
    merged: list[tuple[str, str]] = field(default_factory=list)  # (alias, survivor)


def canonical(tx: Tx, member_id: str) -> str:
    """Follow a merged member to the member it now is."""
    seen = {member_id}
    while True:
        row = tx.one("SELECT merged_into FROM members WHERE member_id = ?", (member_id,))
        if row is None or row[0] is None or row[0] in seen:
            return member_id
        member_id = row[0]
        seen.add(member_id)


def acked_seq(tx: Tx, store_id: str, epoch: int) -> int:
    return int(tx.scalar("SELECT acked_seq FROM store_streams WHERE store_id = ? AND epoch = ?",
                         (store_id, epoch), default=0))


def apply_batch(tx: Tx, batch: EventBatch, now_ms: int, tiers: TierRules | None = None,
                raw: list[bytes] | None = None, allowance: AllowancePolicy | None = None
                ) -> ApplyResult:
    """Apply a validated ``batch``; ``raw`` are the events' bytes as received (stored as the
    event log instead of encoding each event again)."""
    payloads = raw if raw is not None else [encode(e) for e in batch.events]
    return apply_facts(tx, Decoded(batch.store_id, batch.epoch, facts_of(batch), payloads),
                       now_ms, tiers, allowance)


def apply_facts(tx: Tx, batch: Decoded, now_ms: int, tiers: TierRules | None = None,
                allowance: AllowancePolicy | None = None) -> ApplyResult:
    """Apply a batch reduced to facts (``hub.facts.decode``): the hub's one apply path."""
    store, epoch, facts = batch.store_id, batch.epoch, batch.facts
    acked = acked_seq(tx, store, epoch)
    first = facts[0].seq
    if first > acked + 1:
        # A gap: something before this batch is missing. Apply nothing; the ack tells the store
        # where to resend from.
        return ApplyResult(Ack(store_id=store, epoch=epoch, seq=acked, resend=True), gap=True)
    skip = max(0, min(len(facts), acked - first + 1))  # seqs are consecutive (codec)
    fresh = facts[skip:]
    result = ApplyResult(Ack(store_id=store, epoch=epoch, seq=acked), duplicates=skip)
    _touch_store(tx, store, epoch, now_ms)
    if not fresh:
        return result
    tx.executemany(
        "INSERT INTO events(store_id, epoch, seq, event_id, hlc, type, member_id, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(store, epoch, f.seq, f.event_id, f.hlc, f.type, f.member_id, blob)
         for f, blob in zip(fresh, batch.raw[skip:], strict=True)])
    acc = _Effects(tx, store, {f.member_id for f in fresh if f.member_id is not None})
    for f in fresh:
        _HANDLERS[f.type](tx, f, acc, result)
    acc.flush(tx)
    touched = acc.touched
    if allowance is not None and acc.ledgers:
        # Standing allowances follow the balances and the spending just acknowledged.
        touched |= allowances.refresh(tx, allowance, acc.ledgers)
    if tiers is not None and acc.spenders:
        touched.update(recompute(tx, tiers, now_ms, sorted(acc.spenders)))
    if touched:
        last = next_counter(tx, "member_change", len(touched))
        tx.executemany("UPDATE members SET change_no = ? WHERE member_id = ?",
                       [(last - i, m) for i, m in enumerate(sorted(touched))])
        result.members_changed = len(touched)
    seq = fresh[-1].seq
    tx.execute(
        "INSERT INTO store_streams(store_id, epoch, acked_seq) VALUES (?, ?, ?)"
        " ON CONFLICT(store_id, epoch) DO UPDATE SET acked_seq = excluded.acked_seq",
        (store, epoch, seq))
    result.applied = len(fresh)
    result.ack = Ack(store_id=store, epoch=epoch, seq=seq)
    return result


_ADD_SHARES = (
    "INSERT INTO shares(member_id, store_id, points, sv_principal, sv_bonus)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(member_id, store_id) DO UPDATE SET"
    " points = shares.points + excluded.points,"
    " sv_principal = shares.sv_principal + excluded.sv_principal,"
    " sv_bonus = shares.sv_bonus + excluded.sv_bonus")
_CHUNK = 500  # ids per ``IN (...)``: well under SQLite's and PostgreSQL's parameter limits


class _Effects:
    """A batch's ledger-like effects summed per member, written once per batch (and before a
    merge, because a merge moves what was written so far).

    Which members of the batch are aliases of another is read once, set-based, up front: a
    query per event was most of the cost of applying a batch. Merges made by this batch update
    the map as they happen."""

    def __init__(self, tx: Tx, store_id: str, member_ids: set[str]) -> None:
        self.store_id = store_id
        self.shares: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.spend: dict[str, int] = defaultdict(int)
        self.months: dict[tuple[str, str], int] = defaultdict(int)
        self.grants: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.touched: set[str] = set()
        self.spenders: set[str] = set()
        self.ledgers: set[str] = set()  # members whose balance or escrow this batch moved
        self.alias: dict[str, str] = _aliases(tx, member_ids)

    def member(self, member_id: str) -> str:
        return self.alias.get(member_id, member_id)

    def merged(self, alias: str, survivor: str) -> None:
        for k, v in self.alias.items():
            if v == alias:
                self.alias[k] = survivor
        self.alias[alias] = survivor

    def flush(self, tx: Tx) -> None:
        store = self.store_id
        tx.executemany(_ADD_SHARES, [(m, store, p, a, b) for m, (p, a, b)
                                     in self.shares.items()])
        tx.executemany("UPDATE members SET spend_total = spend_total + ? WHERE member_id = ?",
                       [(v, m) for m, v in self.spend.items() if v])
        tx.executemany(ADD_SPEND, [(m, mo, v) for (m, mo), v in self.months.items() if v])
        # Acknowledged spending (net of refunds) uses up what the hub granted this store.
        allowances.record_spent(tx, {(m, store): v for m, v in self.grants.items()})
        self.shares.clear()
        self.spend.clear()
        self.months.clear()
        self.grants.clear()


def _aliases(tx: Tx, member_ids: set[str]) -> dict[str, str]:
    """``{alias: member it now is}`` for those of ``member_ids`` that were merged."""
    ids = sorted(member_ids)
    found: dict[str, str] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        found.update((a, m) for a, m in tx.all(
            "SELECT member_id, merged_into FROM members WHERE merged_into IS NOT NULL"
            f" AND member_id IN ({', '.join('?' * len(chunk))})", chunk))
    # A merge points every alias at the survivor, so one hop is the rule; follow any longer
    # chain an older hub may have left.
    return {a: canonical(tx, m) for a, m in found.items()}


def _touch_store(tx: Tx, store: str, epoch: int, now_ms: int) -> None:
    tx.execute(
        "INSERT INTO stores(store_id, last_seen_ms, epoch) VALUES (?, ?, ?)"
        " ON CONFLICT(store_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
        " epoch = CASE WHEN excluded.epoch > stores.epoch THEN excluded.epoch"
        " ELSE stores.epoch END",
        (store, now_ms, epoch))


# --- one handler per event type -----------------------------------------------------------------

Handler = Callable[[Tx, Fact, _Effects, ApplyResult], None]


def _on_registered(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    assert f.member_id is not None and f.detail is not None
    survivor = _register(tx, f, acc, result)
    acc.touched.add(f.member_id)
    if survivor is not None:
        acc.touched.add(survivor)


def _on_ledger(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    """Points and stored value: summed into the member's share at this store; spending also
    uses up the store's escrow."""
    assert f.member_id is not None  # every ledger event names its member
    member_id = acc.member(f.member_id)
    if f.points or f.principal or f.bonus:
        share = acc.shares[member_id]
        share[0] += f.points
        share[1] += f.principal
        share[2] += f.bonus
        acc.touched.add(member_id)
    if f.escrow_points or f.escrow_sv:
        grant = acc.grants[member_id]
        grant[0] += f.escrow_points
        grant[1] += f.escrow_sv
    acc.ledgers.add(member_id)


def _on_spend(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    """Sales and refunds move the member's spend, which tiers are made of."""
    if f.member_id is None:  # an anonymous sale or its refund
        return
    member_id = acc.member(f.member_id)
    acc.spend[member_id] += f.spend
    acc.months[(member_id, month_of_hlc(f.hlc))] += f.spend
    acc.spenders.add(member_id)


def _on_profile(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    assert f.member_id is not None
    member_id = acc.member(f.member_id)
    _merge_profile(tx, f, acc.store_id, member_id)
    # Even a write that lost: the store that made it shows its own value until the directory
    # sends the member again with the value that stands.
    acc.touched.add(member_id)


def _on_card(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    assert f.member_id is not None and f.detail is not None
    member_id = acc.member(f.member_id)
    tx.execute("INSERT INTO cards(card_uid, member_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
               (f.detail["card_uid"], member_id))
    acc.touched.add(member_id)


def _on_coupon_redeemed(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    _redeem_coupon(tx, f, acc.store_id)  # anonymous sales redeem coupons too


def _on_coupon_reopened(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    assert f.detail is not None
    tx.execute("DELETE FROM coupon_redemptions WHERE coupon_code = ? AND sale_id = ?",
               (f.detail["coupon_code"], f.detail["sale_id"]))


def _nothing(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> None:
    """Kept in the log (and in rebuilds) with no effect on the hub's tables."""


_HANDLERS: dict[str, Handler] = {
    "member.registered": _on_registered,
    "member.profile_changed": _on_profile,
    "member.card_bound": _on_card,
    "sale.finalized": _on_spend,
    "refund.completed": _on_spend,
    "points.earned": _on_ledger,
    "points.redeemed": _on_ledger,
    "points.expired": _on_ledger,
    "points.adjusted": _on_ledger,
    "sv.topped_up": _on_ledger,
    "sv.spent": _on_ledger,
    "sv.refunded": _on_ledger,
    "coupon.issued": _nothing,
    "coupon.redeemed": _on_coupon_redeemed,
    "coupon.voided": _nothing,
    "coupon.reopened": _on_coupon_reopened,
}
if set(_HANDLERS) != set(BODY_TYPES):  # a new event type must say what it does at the hub
    raise RuntimeError(f"hub ingest has no handler for {set(BODY_TYPES) - set(_HANDLERS)}")


def _register(tx: Tx, f: Fact, acc: _Effects, result: ApplyResult) -> str | None:
    """Insert the member; the same phone registered elsewhere first makes this one an alias."""
    assert f.member_id is not None and f.detail is not None
    d, store = f.detail, acc.store_id
    stamp = [f.hlc, store]
    stamps = json.dumps({name: stamp for name in PROFILE_FIELDS})
    inserted = tx.execute(
        "INSERT INTO members(member_id, member_code, phone, name, birthday, tier, tags,"
        " home_store, registered_hlc, stamps, change_no) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
        " ON CONFLICT DO NOTHING",
        (f.member_id, d["member_code"], d["phone"], d["name"], d["birthday"], d["tier"],
         json.dumps(d["tags"], ensure_ascii=False), store, f.hlc, stamps)).rowcount
    if d["card_uid"]:
        tx.execute("INSERT INTO cards(card_uid, member_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                   (d["card_uid"], f.member_id))
    if not inserted or not d["phone"]:
        return None
    rows = tx.all(
        "SELECT member_id, registered_hlc, home_store FROM members"
        " WHERE phone = ? AND merged_into IS NULL AND member_id <> ?",
        (d["phone"], f.member_id))
    if not rows:
        return None
    # The earliest registration (HLC, then store id) is the member; every other is an alias.
    ranked = sorted([*((r[1], r[2], r[0]) for r in rows), (f.hlc, store, f.member_id)])
    survivor = str(ranked[0][2])
    acc.flush(tx)  # the merge moves shares and spend: what the batch summed so far goes first
    for _hlc, _store, alias in ranked[1:]:
        merge_member(tx, alias, survivor)
        acc.merged(alias, survivor)
        result.merged.append((alias, survivor))
    return survivor


def merge_member(tx: Tx, alias: str, survivor: str) -> None:
    """``alias`` becomes ``survivor``: cards and ledgers move; the alias stays as a pointer."""
    tx.execute("UPDATE members SET merged_into = ? WHERE member_id = ?", (survivor, alias))
    tx.execute("UPDATE members SET merged_into = ? WHERE merged_into = ?", (survivor, alias))
    tx.execute("UPDATE cards SET member_id = ? WHERE member_id = ?", (survivor, alias))
    rows = tx.all("SELECT store_id, points, sv_principal, sv_bonus FROM shares"
                  " WHERE member_id = ?", (alias,))
    tx.executemany(_ADD_SHARES, [(survivor, *r) for r in rows])
    tx.execute("DELETE FROM shares WHERE member_id = ?", (alias,))
    spend = tx.scalar("SELECT spend_total FROM members WHERE member_id = ?", (alias,), default=0)
    tx.execute("UPDATE members SET spend_total = spend_total + ? WHERE member_id = ?",
               (spend, survivor))
    tx.execute("UPDATE members SET spend_total = 0 WHERE member_id = ?", (alias,))
    tx.executemany(ADD_SPEND, [(survivor, month, amount) for month, amount in tx.all(
        "SELECT month, amount FROM spend_months WHERE member_id = ?", (alias,))])
    tx.execute("DELETE FROM spend_months WHERE member_id = ?", (alias,))


def _merge_profile(tx: Tx, f: Fact, store: str, member_id: str) -> bool:
    assert f.detail is not None
    row = tx.one("SELECT stamps FROM members WHERE member_id = ?", (member_id,))
    if row is None:
        return False
    stamps = json.loads(row[0])
    stamp = [f.hlc, store]
    changed = False
    for name in f.detail["changed"]:
        if stamp <= stamps.get(name, [0, ""]):
            continue  # an older write: the newer value stays
        value = f.detail[name]  # birthday is already ISO text (``hub.facts``)
        if name == "tags":
            value = json.dumps(value, ensure_ascii=False)
        tx.execute(f"UPDATE members SET {name} = ? WHERE member_id = ?", (value, member_id))
        stamps[name] = stamp
        changed = True
    if changed:
        tx.execute("UPDATE members SET stamps = ? WHERE member_id = ?",
                   (json.dumps(stamps), member_id))
    return changed


def _redeem_coupon(tx: Tx, f: Fact, store: str) -> None:
    assert f.detail is not None
    code, sale_id, amount = f.detail["coupon_code"], f.detail["sale_id"], f.detail["amount"]
    inserted = tx.execute(
        "INSERT INTO coupon_redemptions(coupon_code, store_id, sale_id, hlc, amount)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (code, store, sale_id, f.hlc, amount)).rowcount
    if inserted:
        return
    kept = tx.one("SELECT store_id, sale_id, hlc, amount FROM coupon_redemptions"
                  " WHERE coupon_code = ?", (code,))
    if (f.hlc, store) < (kept[2], kept[0]):
        # This one came later over the wire but happened first: it stands, the other is flagged.
        tx.execute("UPDATE coupon_redemptions SET store_id = ?, sale_id = ?, hlc = ?, amount = ?"
                   " WHERE coupon_code = ?", (store, sale_id, f.hlc, amount, code))
        loser = (code, kept[0], kept[1], kept[2], kept[3], store, sale_id)
    else:
        loser = (code, store, sale_id, f.hlc, amount, kept[0], kept[1])
    tx.execute("INSERT INTO coupon_conflicts(coupon_code, store_id, sale_id, hlc, amount,"
               " kept_store, kept_sale) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
               loser)


def record_refusal(tx: Tx, store_id: str, reason: str, detail: str) -> None:
    tx.execute(
        "INSERT INTO refusals(store_id, reason, count, last_detail) VALUES (?, ?, 1, ?)"
        " ON CONFLICT(store_id, reason) DO UPDATE SET count = refusals.count + 1,"
        " last_detail = excluded.last_detail",
        (store_id, reason, detail[:500]))
