"""Applying a store's event batch: once, in order, in one transaction.

``(store_id, epoch, seq)`` is the idempotency key. A batch that starts beyond the next expected
``seq`` is not applied (the store is asked to resend from its ack); events at or below the ack
are duplicates and change nothing. Ledger and spend effects arrive summed per member
(``hub.ledger.facts``) and are written once per batch, a statement per table for all its members;
profile fields merge last-writer-wins by ``(hlc, store_id)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.core.db import Tx, in_chunks
from hub.core.schema import next_counter
from hub.ledger import allowances, erasure, late_days
from hub.ledger.allowances import AllowancePolicy
from hub.ledger.facts import DETAIL, Decoded, Fact, reduce_events, tail
from hub.members import store_members
from hub.members.identity import canonical
from hub.members.tiers import ADD_SPEND, DEFAULT_ZONE, TierRules, window_start
from hub.members.tiers import record as tier_history
from hub.stores.registry import is_virtual
from protocol.codec import encode
from protocol.events import EventBatch
from protocol.hlc import wall_ms
from protocol.sync import Ack

PROFILE_FIELDS = ("name", "birthday", "phone", "tags", "guide_id", "email", "gender")
# Where the HLC goes in a new member's stamps template: "0.5" cannot be in a store id (no dots).
_HLC = 0.5


@dataclass
class ApplyResult:
    ack: Ack
    applied: int = 0
    duplicates: int = 0
    gap: bool = False
    members_changed: int = 0
    merged: list[tuple[str, str]] = field(default_factory=list)  # (alias, survivor)


def acked_seq(tx: Tx, store_id: str, epoch: int) -> int:
    return int(tx.scalar("SELECT acked_seq FROM store_streams WHERE store_id = ? AND epoch = ?",
                         (store_id, epoch), default=0))


def apply_batch(tx: Tx, batch: EventBatch, now_ms: int, tiers: TierRules | None = None,
                raw: list[bytes] | None = None, allowance: AllowancePolicy | None = None,
                *, zone: str = DEFAULT_ZONE, chain_zone: str = DEFAULT_ZONE) -> ApplyResult:
    """Apply a validated ``batch``; ``raw`` are the events' bytes as received (stored as the
    event log instead of encoding each event again). ``zone`` is the store's time zone,
    ``chain_zone`` the chain's (the tier window's months)."""
    payloads = raw if raw is not None else [encode(e) for e in batch.events]
    reduced = reduce_events(batch.store_id, batch.epoch, batch.events, payloads, zone)
    return apply_facts(tx, reduced, now_ms, tiers, allowance, chain_zone=chain_zone)


def apply_facts(tx: Tx, batch: Decoded, now_ms: int, tiers: TierRules | None = None,
                allowance: AllowancePolicy | None = None, *, chain_zone: str = DEFAULT_ZONE
                ) -> ApplyResult:
    """Apply a batch reduced by ``hub.ledger.facts``: the hub's one apply path."""
    store, epoch = batch.store_id, batch.epoch
    acked = acked_seq(tx, store, epoch)
    first = batch.first_seq
    if first > acked + 1:
        # A gap: something before this batch is missing. Apply nothing; the ack tells the store
        # where to resend from.
        return ApplyResult(Ack(store_id=store, epoch=epoch, seq=acked, resend=True), gap=True)
    skip = max(0, min(len(batch.rows), acked - first + 1))  # seqs are consecutive (codec)
    result = ApplyResult(Ack(store_id=store, epoch=epoch, seq=acked), duplicates=skip)
    _touch_store(tx, store, epoch, now_ms)
    if skip == len(batch.rows):
        return result
    if skip:
        batch = tail(batch, skip)
    tx.executemany(
        "INSERT INTO events(store_id, epoch, seq, event_id, hlc, type, member_id, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", batch.rows)
    if not is_virtual(store):  # HQ's own stream changes no store's day
        late_days.mark(tx, batch, now_ms)
    touched: set[str] = set()
    # Registrations first, all at once (a store registers a member before anything else names
    # it); they may merge members. Then profiles, cards and coupons in event order.
    fresh = _register_all(tx, [f for f in batch.facts if f.type == _REGISTERED], store,
                          touched, result)
    for f in batch.facts:
        if f.type != _REGISTERED:
            _HANDLERS[f.type](tx, f, store, touched, result)

    # Every member the sums name, read once (after the merges above): merged or not, books,
    # tier, spend in the tier window.
    since = window_start(now_ms, tiers.window_months, chain_zone) if tiers is not None else None
    spend_since = since if batch.spend else None  # the window's spend only where it can move
    books = allowances.load(tx, {*batch.ledger, *(m for m, _month in batch.spend)}, spend_since)
    alias = {a: canonical(tx, b.merged_into) for a, b in books.items()
             if b.merged_into is not None}
    if alias:  # the members they now are, read too
        books.update(allowances.load(tx, set(alias.values()) - books.keys(), spend_since))

    # The batch's sums, per member it now is (a merge above or earlier moved the member).
    shares: dict[str, list[int]] = {}
    spent: dict[tuple[str, str], list[int]] = {}
    for mid, (points, principal, bonus, esc_points, esc_sv) in batch.ledger.items():
        member = alias.get(mid, mid)
        share = shares.setdefault(member, [0, 0, 0])
        share[0] += points
        share[1] += principal
        share[2] += bonus
        used = spent.setdefault((member, store), [0, 0])
        used[0] += esc_points
        used[1] += esc_sv
    months: dict[tuple[str, str], int] = {}
    for (mid, month), amount in batch.spend.items():
        member = alias.get(mid, mid)
        months[(member, month)] = months.get((member, month), 0) + amount
    tx.executemany(_ADD_SHARES, [(m, store, p, a, b) for m, (p, a, b) in shares.items()
                                 if p or a or b])
    tx.executemany(ADD_SPEND, [(m, mo, v) for (m, mo), v in months.items() if v])
    # The books as the writes above left them: balances moved, this store now holds a share.
    for member, (p, a, b) in shares.items():
        if p or a or b:
            held = books[member]
            held.points.balance += p
            held.stored_value.balance += a + b
            held.share_stores.add(store)
            touched.add(member)
    # Acknowledged spending (net of refunds) uses up what the hub granted this store, and
    # standing allowances follow the balances just moved: one write per member and store.
    touched |= allowances.settle(tx, allowance, spent, {m: books[m] for m in shares})
    tier_of: dict[str, str] = {}
    if tiers is not None and since is not None:
        window: dict[str, int] = {}
        for (member, month), amount in months.items():
            window[member] = window.get(member, books[member].window_spend) + (
                amount if month >= since else 0)
        for member, spend in window.items():
            held = books[member]
            tier = tiers.tier_for(spend)
            if held.tier is not None and tier != held.tier:  # a member the hub knows
                tier_of[member] = tier
        touched.update(tier_of)
        tier_history(tx, tiers, [(m, str(books[m].tier), t) for m, t in sorted(tier_of.items())],
                     now_ms)
    # A new directory change number for every member whose entry changed (stores catch up
    # from it), with the new tier where it changed: one row update each. A member this batch
    # inserted has one already: any number taken in this transaction is above every
    # checkpoint a store can hold before it commits.
    renumber = (touched - fresh) | tier_of.keys()
    if renumber:
        last = next_counter(tx, "member_change", len(renumber))
        tx.executemany(
            "UPDATE members SET tier = coalesce(?, tier), change_no = ? WHERE member_id = ?",
            [(tier_of.get(m), last - i, m) for i, m in enumerate(sorted(renumber))])
        store_members.set_tiers(tx, [(t, m) for m, t in sorted(tier_of.items())])
    result.members_changed = len(touched | fresh)
    seq = batch.last_seq
    tx.execute(
        "INSERT INTO store_streams(store_id, epoch, acked_seq) VALUES (?, ?, ?)"
        " ON CONFLICT(store_id, epoch) DO UPDATE SET acked_seq = excluded.acked_seq",
        (store, epoch, seq))
    result.applied = len(batch.rows)
    result.ack = Ack(store_id=store, epoch=epoch, seq=seq)
    return result


_ADD_SHARES = (
    "INSERT INTO shares(member_id, store_id, points, sv_principal, sv_bonus)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(member_id, store_id) DO UPDATE SET"
    " points = shares.points + excluded.points,"
    " sv_principal = shares.sv_principal + excluded.sv_principal,"
    " sv_bonus = shares.sv_bonus + excluded.sv_bonus")


def _touch_store(tx: Tx, store: str, epoch: int, now_ms: int) -> None:
    if is_virtual(store):
        return  # the hub's own stream: no store to have seen (fleet status lists stores)
    tx.execute(
        "INSERT INTO stores(store_id, last_seen_ms, epoch) VALUES (?, ?, ?)"
        " ON CONFLICT(store_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
        " epoch = CASE WHEN excluded.epoch > stores.epoch THEN excluded.epoch"
        " ELSE stores.epoch END",
        (store, now_ms, epoch))


# --- the rare changes, one handler per event type ------------------------------------------------

Handler = Callable[[Tx, Fact, str, set[str], ApplyResult], None]


def _on_profile(tx: Tx, f: Fact, store: str, touched: set[str], result: ApplyResult) -> None:
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    _merge_profile(tx, f, store, member_id)
    _still_erased(tx, member_id)
    # Even a write that lost: the store that made it shows its own value until the directory
    # sends the member again with the value that stands.
    touched.add(member_id)


def _on_card(tx: Tx, f: Fact, store: str, touched: set[str], result: ApplyResult) -> None:
    """A card bound: new to the hub, or freed (``unbound``) and now another member's. A card
    another member holds stays theirs (a store refuses that binding when it knows; one that
    did not know loses to the holder) and a lost card stays lost."""
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    uid = f.detail["card_uid"]
    held = tx.one("SELECT member_id, state FROM cards WHERE card_uid = ?", (uid,))
    tx.execute(_INSERT_CARD, (uid, member_id, f.hlc, store))
    if held is not None and held[1] == "unbound":
        touched.add(str(held[0]))  # its entry no longer lists the card
    _still_erased(tx, member_id)
    touched.add(member_id)


def _still_erased(tx: Tx, member_id: str) -> None:
    """A store's change to an erased member, sent before it heard of the erasure, brings
    personal data back: erased again."""
    if tx.scalar("SELECT erased FROM members WHERE member_id = ?", (member_id,)):
        erasure.erase(tx, member_id)


# A card new to the hub, or one unbound from its member and now registered with another (a
# store lets an unbound card be used again); a card someone holds stays theirs.
_INSERT_CARD = ("INSERT INTO cards(card_uid, member_id, stamp_hlc, stamp_store)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(card_uid) DO UPDATE SET"
                " member_id = excluded.member_id, state = 'active', reason = '',"
                " stamp_hlc = excluded.stamp_hlc, stamp_store = excluded.stamp_store"
                " WHERE cards.state = 'unbound'")


def _on_card_state(tx: Tx, f: Fact, store: str, touched: set[str],
                   result: ApplyResult) -> None:
    """Lost, found, replaced or unbound: last writer wins by (hlc, stream), for the card's
    member only (a card since bound to another member is theirs)."""
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    d = f.detail
    row = tx.one("SELECT member_id, stamp_hlc, stamp_store FROM cards WHERE card_uid = ?",
                 (d["card_uid"],))
    if row is None:  # a card bound before the hub kept cards: known from now on
        tx.execute("INSERT INTO cards(card_uid, member_id, state, reason, stamp_hlc,"
                   " stamp_store) VALUES (?, ?, ?, ?, ?, ?)",
                   (d["card_uid"], member_id, d["state"], d["reason"], f.hlc, store))
        _still_erased(tx, member_id)
    elif str(row[0]) == member_id and (f.hlc, store) > (int(row[1]), str(row[2])):
        tx.execute("UPDATE cards SET state = ?, reason = ?, stamp_hlc = ?, stamp_store = ?"
                   " WHERE card_uid = ?", (d["state"], d["reason"], f.hlc, store, d["card_uid"]))
    touched.add(member_id)


def _on_pin(tx: Tx, f: Fact, store: str, touched: set[str], result: ApplyResult) -> None:
    """A PIN set (which lifts a lock) or locked: one value, last writer wins by (hlc, stream).
    A lock stamped after a reset elsewhere stands: the member sets a PIN again."""
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    row = tx.one("SELECT pin_hlc, pin_store FROM members WHERE member_id = ?", (member_id,))
    if row is None or (f.hlc, store) <= (int(row[0]), str(row[1])):
        touched.add(member_id)  # the store that lost shows its own until the entry comes
        return
    if f.type == "member.pin_set":
        tx.execute("UPDATE members SET pin_hash = ?, pin_locked = 0, pin_hlc = ?, pin_store = ?"
                   " WHERE member_id = ?", (f.detail["pin_hash"], f.hlc, store, member_id))
    else:
        tx.execute("UPDATE members SET pin_locked = 1, pin_hlc = ?, pin_store = ?"
                   " WHERE member_id = ?", (f.hlc, store, member_id))
    touched.add(member_id)


def _on_birthday_gift(tx: Tx, f: Fact, store: str, touched: set[str],
                      result: ApplyResult) -> None:
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    if tx.execute("UPDATE members SET birthday_gift_year = ? WHERE member_id = ?"
                  " AND birthday_gift_year < ?",
                  (f.detail["year"], member_id, f.detail["year"])).rowcount:
        touched.add(member_id)  # no other store gives it again this year


def _on_message_shown(tx: Tx, f: Fact, store: str, touched: set[str],
                      result: ApplyResult) -> None:
    """A till printed a message HQ left for the member: delivered (the outbox's row, written
    here as SQL: the ledger stands below ``hub.notify``), and gone from the member's entry so
    no other till prints it again."""
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    key = f.detail["key"]
    if tx.execute("DELETE FROM till_messages WHERE member_id = ? AND key = ?",
                  (member_id, key)).rowcount:
        touched.add(member_id)
    tx.execute("UPDATE outbox SET state = 'delivered', done_ms = ?, provider_id = ? WHERE"
               " key = ? AND channel = 'store' AND state IN ('sending', 'sent')",
               (wall_ms(f.hlc), f"{store}/{f.detail['terminal_id']}", key))


def _on_coupon_issued(tx: Tx, f: Fact, store: str, touched: set[str],
                      result: ApplyResult) -> None:
    d = f.detail
    member_id = canonical(tx, f.member_id) if f.member_id is not None else None
    # The store it counts at in the reports: HQ's and the online channel's at their member's
    # home store (hub schema 27).
    for_store = store if not is_virtual(store) else None if member_id is None else tx.scalar(
        "SELECT home_store FROM members WHERE member_id = ?", (member_id,))
    inserted = tx.execute(
        "INSERT INTO coupons(coupon_code, store_id, member_id, campaign_id, kind, value,"
        " min_spend, categories, expires_on, state, hlc, for_store)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'issued', ?, ?) ON CONFLICT DO NOTHING",
        (d["coupon_code"], store, member_id, d["campaign_id"], d["kind"], d["value"],
         d["min_spend"], json.dumps(d["categories"], ensure_ascii=False), d["expires_on"],
         f.hlc, for_store)).rowcount
    if inserted and member_id is not None and is_virtual(store):
        touched.add(member_id)  # its entry now carries the coupon to every store


def _on_coupon_redeemed(tx: Tx, f: Fact, store: str, touched: set[str],
                        result: ApplyResult) -> None:
    _redeem_coupon(tx, f, store)  # anonymous sales redeem coupons too
    _coupon_state(tx, f.detail["coupon_code"], "issued", "redeemed", touched)


def _on_coupon_reopened(tx: Tx, f: Fact, store: str, touched: set[str],
                        result: ApplyResult) -> None:
    reopened = tx.execute("DELETE FROM coupon_redemptions WHERE coupon_code = ? AND sale_id = ?",
                          (f.detail["coupon_code"], f.detail["sale_id"])).rowcount
    if reopened:  # the redemption that stood was refunded: the coupon is open again
        _coupon_state(tx, f.detail["coupon_code"], "redeemed", "issued", touched)


def _on_coupon_voided(tx: Tx, f: Fact, store: str, touched: set[str],
                      result: ApplyResult) -> None:
    _coupon_state(tx, f.detail["coupon_code"], "issued", "voided", touched)


def _coupon_state(tx: Tx, code: str, was: str, now: str, touched: set[str]) -> None:
    """Move a coupon the hub knows from ``was`` to ``now``; a hub-issued one's member gets a
    new directory change number, so its entry drops (or carries again) the coupon. A coupon
    issued before the hub kept coupons is not in the table: nothing to move."""
    moved = tx.execute("UPDATE coupons SET state = ? WHERE coupon_code = ? AND state = ?",
                       (now, code, was)).rowcount
    if not moved:
        return
    row = tx.one("SELECT store_id, member_id FROM coupons WHERE coupon_code = ?", (code,))
    if row[1] is not None and is_virtual(row[0]):
        touched.add(row[1])


def _on_erased(tx: Tx, f: Fact, store: str, touched: set[str], result: ApplyResult) -> None:
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    erasure.erase(tx, member_id)
    touched.add(member_id)  # every store forgets them through the directory


def _on_consent(tx: Tx, f: Fact, store: str, touched: set[str], result: ApplyResult) -> None:
    """Given or withdrawn: the latest by (hlc, stream) stands."""
    assert f.member_id is not None
    member_id = canonical(tx, f.member_id)
    d = f.detail
    row = tx.one("SELECT hlc, store_id FROM consents WHERE member_id = ? AND channel = ?"
                 " AND purpose = ?", (member_id, d["channel"], d["purpose"]))
    if row is not None and (f.hlc, store) <= (int(row[0]), str(row[1])):
        return
    tx.execute(
        "INSERT INTO consents(member_id, channel, purpose, granted, text_version, store_id, hlc)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(member_id, channel, purpose) DO UPDATE SET"
        " granted = excluded.granted, text_version = excluded.text_version,"
        " store_id = excluded.store_id, hlc = excluded.hlc",
        (member_id, d["channel"], d["purpose"], int(d["granted"]), d["text_version"], store,
         f.hlc))


_REGISTERED = "member.registered"  # applied first and all at once, by ``_register_all``
_HANDLERS: dict[str, Handler] = {
    "member.profile_changed": _on_profile,
    "member.card_bound": _on_card,
    "member.card_state": _on_card_state,
    "member.pin_set": _on_pin,
    "member.pin_locked": _on_pin,
    "member.birthday_gift": _on_birthday_gift,
    "member.message_shown": _on_message_shown,
    "member.erased": _on_erased,
    "member.consent": _on_consent,
    "coupon.redeemed": _on_coupon_redeemed,
    "coupon.reopened": _on_coupon_reopened,
    "coupon.issued": _on_coupon_issued,
    "coupon.voided": _on_coupon_voided,
}
# Every rare change hub.ledger.facts keeps is applied.
if {*_HANDLERS, _REGISTERED} != set(DETAIL):
    raise RuntimeError(f"hub ingest has no handler for {set(DETAIL) - {*_HANDLERS, _REGISTERED}}")


def _register_all(tx: Tx, facts: list[Fact], store: str, touched: set[str],
                  result: ApplyResult) -> set[str]:
    """Insert the batch's new members, a statement per table, each with its directory change
    number; where the same phone is now held by more than one live member, the earliest
    registration (HLC, then store id) is the member and every other becomes its alias
    (``merge_member``). Runs before the batch's sums are written: they go to the member each
    id now is. Returns the members inserted."""
    if not facts:
        return set()
    ids = [f.member_id for f in facts if f.member_id is not None]
    before = _existing(tx, ids)
    stamps: dict[str, str] = {}
    # Every field of a new member carries the registration's stamp: the JSON ``json.dumps``
    # would write, from a template made once per batch (a dumps per member was a tenth of
    # applying a batch of registrations).
    template = json.dumps({name: [_HLC, store] for name in PROFILE_FIELDS}).split(str(_HLC))
    rows = []
    for f in facts:
        assert f.member_id is not None
        d = f.detail
        if f.member_id in before or f.member_id in stamps:
            continue  # registered already (a resend after a hub restore): changes nothing
        stamps[f.member_id] = str(f.hlc).join(template)
        tags = json.dumps(d["tags"], ensure_ascii=False) if d["tags"] else "[]"
        rows.append((f.member_id, d["member_code"], d["phone"], d["name"], d["birthday"],
                     d["tier"], tags, d["guide_id"], d["gender"], store, f.hlc,
                     stamps[f.member_id]))
    last = next_counter(tx, "member_change", len(rows)) if rows else 0
    tx.executemany(
        "INSERT INTO members(member_id, member_code, phone, name, birthday, tier, tags, guide_id,"
        " gender, home_store, registered_hlc, stamps, change_no)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING", [(*r, last - i) for i, r in enumerate(rows)])
    tx.executemany(_INSERT_CARD, [(f.detail["card_uid"], f.member_id, f.hlc, store)
                                  for f in facts if f.detail["card_uid"]])
    # A row can still have been refused by a member code another member holds.
    inserted = _existing(tx, list(stamps)) if stamps else set()
    touched.update(set(ids) - inserted)  # registered before: sent again all the same
    phones = sorted({f.detail["phone"] for f in facts
                     if f.member_id in inserted and f.detail["phone"]})
    holders: dict[str, list[tuple[int, str, str]]] = {}
    for chunk, marks in in_chunks(phones):
        for mid, phone, hlc, home in tx.all(
                "SELECT member_id, phone, registered_hlc, home_store FROM members"
                f" WHERE phone IN ({marks}) AND merged_into IS NULL", chunk):
            holders.setdefault(phone, []).append((int(hlc), str(home), str(mid)))
    for phone in phones:
        ranked = sorted(holders.get(phone, []))
        if len(ranked) < 2:
            continue
        survivor = ranked[0][2]
        for _hlc, _store, alias in ranked[1:]:
            merge_member(tx, alias, survivor)
            result.merged.append((alias, survivor))
            touched.add(alias)  # its entry now points at the survivor
        touched.add(survivor)
    return inserted


def _existing(tx: Tx, member_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk, marks in in_chunks(member_ids):
        found.update(r[0] for r in tx.all(
            f"SELECT member_id FROM members WHERE member_id IN ({marks})", chunk))
    return found


def merge_member(tx: Tx, alias: str, survivor: str) -> None:
    """``alias`` becomes ``survivor``: cards and ledgers move; the alias stays as a pointer."""
    tx.execute("UPDATE members SET merged_into = ? WHERE member_id = ?", (survivor, alias))
    tx.execute("UPDATE members SET merged_into = ? WHERE merged_into = ?", (survivor, alias))
    store_members.forget(tx, alias)
    tx.execute("UPDATE cards SET member_id = ? WHERE member_id = ?", (survivor, alias))
    # The survivor keeps its own PIN; a gift either had this year counts for both.
    tx.execute("UPDATE members SET birthday_gift_year = (SELECT birthday_gift_year FROM members"
               " WHERE member_id = ?) WHERE member_id = ? AND birthday_gift_year < (SELECT"
               " birthday_gift_year FROM members WHERE member_id = ?)", (alias, survivor, alias))
    rows = tx.all("SELECT store_id, points, sv_principal, sv_bonus FROM shares"
                  " WHERE member_id = ?", (alias,))
    tx.executemany(_ADD_SHARES, [(survivor, *r) for r in rows])
    tx.execute("DELETE FROM shares WHERE member_id = ?", (alias,))
    tx.executemany(ADD_SPEND, [(survivor, month, amount) for month, amount in tx.all(
        "SELECT month, amount FROM spend_months WHERE member_id = ?", (alias,))])
    tx.execute("DELETE FROM spend_months WHERE member_id = ?", (alias,))
    # The escrow books move too, per store (granted and spent): what a store still spends under
    # the old id is then counted against what it holds for the member (``hub.ledger.allowances``).
    tx.executemany(allowances.ADD_BOOKS, [(survivor, *r) for r in tx.all(
        "SELECT store_id, points_spent, sv_spent, points_granted, sv_granted FROM grants"
        " WHERE member_id = ?", (alias,))])
    tx.execute("DELETE FROM grants WHERE member_id = ?", (alias,))
    # Consents move too; where both ids have one for a channel, the survivor's stands.
    tx.execute("UPDATE consents SET member_id = ? WHERE member_id = ? AND NOT EXISTS (SELECT 1"
               " FROM consents c WHERE c.member_id = ? AND c.channel = consents.channel"
               " AND c.purpose = consents.purpose)", (survivor, alias, survivor))
    tx.execute("DELETE FROM consents WHERE member_id = ?", (alias,))
    tx.execute("UPDATE till_messages SET member_id = ? WHERE member_id = ? AND key NOT IN"
               " (SELECT key FROM till_messages WHERE member_id = ?)", (survivor, alias, survivor))
    # Coupons issued to the old id are the member's: its entry carries the open ones.
    tx.execute("UPDATE coupons SET member_id = ? WHERE member_id = ?", (survivor, alias))


def _merge_profile(tx: Tx, f: Fact, store: str, member_id: str) -> bool:
    row = tx.one("SELECT stamps FROM members WHERE member_id = ?", (member_id,))
    if row is None:
        return False
    stamps = json.loads(row[0])
    stamp = [f.hlc, store]
    changed = False
    for name in f.detail["changed"]:
        if stamp <= stamps.get(name, [0, ""]):
            continue  # an older write: the newer value stays
        value = f.detail[name]  # birthday is already ISO text (``hub.ledger.facts``)
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
