"""Applying the hub's member directory at a store.

A page is checked whole before anything is written, then applied in steps of ``STEP`` entries,
each its own short transaction, the new checkpoint with the last (``apply_in_steps``): a
checkout waits behind one step, not behind a page (issue 16: finalize p99 within 10 ms while
a store catches up). Between steps the event loop serves the tills. A crash between steps leaves
the checkpoint before the page: the page is asked for and applied again, and an entry is a
state, so applying it twice leaves what applying it once does (``tests/edge/test_directory.py``).
The checkpoint is never ahead of its data. Profile fields take the hub's value (it merged
every store's writes last-writer-wins); balances are never overwritten: this store's ledgers stay
its own and only the other stores' shares are taken from the hub. Of the offline allowances the
hub granted (``grants``), this store takes its own (``edge.allowance.apply_hub_grant``). The
coupons the hub issued a member (``coupons``) join this store's own, so the till finds and
validates them offline.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from typing import Any

import msgpack
from pydantic import ValidationError

from edge import allowance
from edge.context import StoreContext
from edge.db import Database
from edge.outbox import meta_get, meta_set
from protocol.codec import (
    DEFAULT_MAX_BYTES,
    MAX_ARRAY_LEN,
    MAX_MAP_LEN,
    InvalidMessage,
    MalformedPayload,
    unpack,
)
from protocol.redact import erase_personal
from protocol.sync import DirectoryPage, MemberEntry, RpcReply

CHECKPOINT = "directory_checkpoint"
# Entries checked or written per step: a step of checks takes about a millisecond and a step
# of writes a few, so a checkout arriving meanwhile waits about that long.
STEP = 10
MAX_ENTRIES = DirectoryPage.model_fields["members"].metadata[0].max_length


def checkpoint(conn: sqlite3.Connection) -> int:
    return int(meta_get(conn, CHECKPOINT, "0") or 0)


UNPACK_STEP = 50  # entries unpacked between two turns of the tills
# How long a page's unpacking and checking stand aside between steps. A turn of the loop (0 s)
# let a checkout take one step of its own per step of the page: a checkout takes ten or so, so
# each of them waited behind a step of the page, and a page of 1,000 entries (100 steps)
# stretched every checkout meanwhile. A millisecond lets a checkout's steps run together; a
# page of 1,000 entries takes a tenth of a second longer.
GIVE_WAY_S = 0.001

def open_page(payload: bytes, request_id: str | None) -> tuple[DirectoryPage, list[Any]] | None:
    """The page's header (``members`` empty) and its entries unchecked, if it answers
    ``request_id`` (None otherwise). Raises ``CodecError`` for a malformed page."""
    return _opened(unpack(payload), request_id)


async def open_page_stepwise(payload: bytes, request_id: str | None
                             ) -> tuple[DirectoryPage, list[Any]] | None:
    """``open_page``, with the tills served while the page is unpacked: a page of 1,000
    entries is half a megabyte, and unpacking it at once held the event loop 12-50 ms on this
    machine (every checkout meanwhile waited that long). Its entries are unpacked a few at a
    time; anything unusual (not a map, members not a list) is left to ``unpack``, whose errors
    are the ones a page gets."""
    if len(payload) <= DEFAULT_MAX_BYTES:
        up = msgpack.Unpacker(raw=False, strict_map_key=True, max_array_len=MAX_ARRAY_LEN,
                              max_map_len=MAX_MAP_LEN, max_buffer_size=max(1, len(payload)))
        up.feed(payload)
        data: dict[str, Any] = {}
        whole = True
        try:
            for _ in range(up.read_map_header()):
                key = up.unpack()
                if key != "members":
                    data[key] = up.unpack()
                    continue
                members = []
                for i in range(up.read_array_header()):
                    members.append(up.unpack())
                    if i % UNPACK_STEP == UNPACK_STEP - 1:
                        await asyncio.sleep(GIVE_WAY_S)
                data[key] = members
        except Exception:  # unusual or malformed: unpack below says what is wrong
            whole = False
        if whole and up.tell() == len(payload):  # nothing after the page
            return _opened(data, request_id)
    return open_page(payload, request_id)


def _opened(data: Any, request_id: str | None) -> tuple[DirectoryPage, list[Any]] | None:
    if not isinstance(data, dict):
        raise MalformedPayload(f"expected a map, got {type(data).__name__}")
    raw = data.get("members", [])
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise InvalidMessage(f"DirectoryPage invalid at members: a list of at most"
                             f" {MAX_ENTRIES} entries")
    header = decode_header(data)
    if header.request_id != request_id:
        return None
    return header, raw


def decode_header(data: dict[str, Any]) -> DirectoryPage:
    try:
        return DirectoryPage.model_validate({**data, "members": []})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidMessage(f"DirectoryPage invalid at {where or 'top'}: {first['msg']}"
                             ) from exc


def check_entries(raw: list[Any], start: int) -> list[MemberEntry]:
    """``raw[start:start + STEP]`` as entries; ``CodecError`` names the first bad one."""
    out = []
    for i in range(start, min(start + STEP, len(raw))):
        try:
            out.append(MemberEntry.model_validate(raw[i]))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidMessage(f"DirectoryPage invalid at members.{i}.{where}:"
                                 f" {first['msg']}") from exc
    return out


async def apply_in_steps(db: Database, ctx: StoreContext, payload: bytes,
                         request_id: str | None, step: int = STEP) -> tuple[int, bool] | None:
    """Check a page as received, then apply it ``step`` entries at a time (module doc; a
    quiet store takes a page in one step: no till waits); returns the checkpoint after it and
    whether more follow (None: it answers another request or none). Raises ``CodecError``
    for a malformed page, before anything is written."""
    opened = await open_page_stepwise(payload, request_id)
    if opened is None:
        return None
    header, raw = opened
    entries: list[MemberEntry] = []
    for start in range(0, len(raw), STEP):
        entries += check_entries(raw, start)
        await asyncio.sleep(GIVE_WAY_S)  # the tills between steps
    if not entries:
        upto = await db.write(lambda conn: apply_page(conn, ctx, header))
        return upto, header.more
    at = 0
    while at < len(entries):
        last = at + step >= len(entries)
        done: int | None = await db.write(functools.partial(
            _apply_step, ctx=ctx, page=header, entries=entries[at:at + step], last=last),
            durable=False)  # the hub sends the page again if power takes it
        if done is not None:  # a stale page, or the last step: the checkpoint now
            return done, header.more
        at += step
    raise AssertionError("the last step returns the checkpoint")  # pragma: no cover


def _apply_step(conn: sqlite3.Connection, ctx: StoreContext, page: DirectoryPage,
                entries: list[MemberEntry], last: bool) -> int | None:
    """One step of a page: its entries, and the checkpoint if it is the last. Returns the
    checkpoint when the page is stale (nothing applied) or done, None to go on."""
    current = checkpoint(conn)
    if not _continues(page, current):
        return current
    for entry in entries:
        apply_entry(conn, ctx, entry)
    if not last:
        return None
    meta_set(conn, CHECKPOINT, page.upto)
    return page.upto


def _continues(page: DirectoryPage, current: int) -> bool:
    """Whether ``page`` is the one to apply next from checkpoint ``current``."""
    if page.after != current and not page.snapshot:
        return False  # a stale or out-of-order page: ask again from where we are
    return not (page.snapshot and page.after == 0 and current > 0 and page.upto <= current)


def apply_page(conn: sqlite3.Connection, ctx: StoreContext, page: DirectoryPage) -> int:
    """Apply ``page`` whole if it continues from our checkpoint (one transaction: tools and
    tests; the store link applies pages in steps); returns the checkpoint after it."""
    current = checkpoint(conn)
    if not _continues(page, current):
        return current
    for entry in page.members:
        apply_entry(conn, ctx, entry)
    meta_set(conn, CHECKPOINT, page.upto)
    return page.upto


def apply_entry(conn: sqlite3.Connection, ctx: StoreContext, e: MemberEntry) -> None:
    others = [s for s in e.shares if s.store_id != ctx.store_id]
    remote = (sum(s.points for s in others), sum(s.sv_principal for s in others),
              sum(s.sv_bonus for s in others))
    birthday = e.birthday.isoformat() if e.birthday else None
    if e.merged_into is not None:
        # The allowance here joins the member's: the hub moved its grants there as well.
        allowance.fold(conn, ctx, e.member_id, e.merged_into)
        # Free the phone and code lookups for the member it became; cards move with the merge.
        conn.execute("UPDATE members SET merged_into = ?, phone = NULL, remote_points = 0,"
                     " remote_sv_principal = 0, remote_sv_bonus = 0 WHERE member_id = ?",
                     (e.merged_into, e.member_id))
        if conn.execute("SELECT 1 FROM members WHERE member_id = ?",
                        (e.member_id,)).fetchone() is None:
            _insert(conn, ctx, e, None, birthday, (0, 0, 0))
            conn.execute("UPDATE members SET merged_into = ? WHERE member_id = ?",
                         (e.merged_into, e.member_id))
        return
    for alias in e.aliases:  # a merge may reach us first through the survivor's entry
        conn.execute("UPDATE members SET merged_into = ?, phone = NULL WHERE member_id = ?",
                     (e.member_id, alias))
        allowance.fold(conn, ctx, alias, e.member_id)  # before the combined grant below
    if e.erased:  # erased on the member's request: forget their cards and what was changed
        conn.execute("DELETE FROM cards WHERE member_id = ?", (e.member_id,))
        conn.execute("UPDATE member_changes SET detail = '{\"erased\": true}'"
                     " WHERE member_id = ?", (e.member_id,))
        # Answers kept for retries (a registration's, a profile change's) show the member
        # whole: emptied of it, so a retry still gets its answer and no second effect.
        for key, text in conn.execute("SELECT idem_key, response FROM idempotency"
                                      " WHERE instr(response, ?) > 0", (e.member_id,)).fetchall():
            conn.execute("UPDATE idempotency SET response = ? WHERE idem_key = ?",
                         (erase_personal(text), key))
    if e.phone:  # a phone held by another (stale) local row yields to the hub's view
        conn.execute("UPDATE members SET phone = NULL WHERE phone = ? AND member_id <> ?",
                     (e.phone, e.member_id))
    exists = conn.execute("SELECT 1 FROM members WHERE member_id = ?",
                          (e.member_id,)).fetchone() is not None
    if exists:
        conn.execute(
            "UPDATE members SET phone = ?, name = ?, birthday = ?, tier = ?, tags = ?,"
            " remote_points = ?, remote_sv_principal = ?, remote_sv_bonus = ? WHERE member_id = ?",
            (e.phone, e.name, birthday, e.tier, json.dumps(e.tags, ensure_ascii=False), *remote,
             e.member_id))
    else:
        _insert(conn, ctx, e, e.phone, birthday, remote)
    # The member's shopping guide as merged at the hub (an older hub sends none: kept as is).
    if "guide_id" in e.model_fields_set:
        conn.execute("UPDATE members SET guide_id = ? WHERE member_id = ?",
                     (e.guide_id, e.member_id))
    # HQ's view for promotions and the POS (an older hub sends none: kept as is).
    if {"hq_tags", "segments", "rfm_group", "stage"} & e.model_fields_set:
        conn.execute(
            "UPDATE members SET hq_tags = ?, till_segments = ?, rfm_group = ?, stage = ?"
            " WHERE member_id = ?",
            (json.dumps(e.hq_tags, ensure_ascii=False),
             json.dumps([s.model_dump() for s in e.segments], ensure_ascii=False),
             e.rfm_group, e.stage, e.member_id))
    if "messages" in e.model_fields_set:
        _apply_messages(conn, e)
    if "card_states" in e.model_fields_set:
        _apply_cards(conn, e)
    else:  # a hub older than card states: its list is the active cards
        for uid in e.cards:
            conn.execute(
                "INSERT INTO cards(card_uid, member_id, bound_hlc) VALUES (?, ?, 0)"
                " ON CONFLICT(card_uid) DO UPDATE SET member_id = excluded.member_id",
                (uid, e.member_id))
    if "pin_hlc" in e.model_fields_set:
        # The hub's PIN (hash and lock) unless this store changed it since; a new hash or a
        # lifted lock starts the count of wrong PINs here again.
        conn.execute(
            "UPDATE members SET pin_failures = CASE WHEN pin_hash IS ? AND pin_locked = ?"
            " THEN pin_failures ELSE 0 END, pin_hash = ?, pin_locked = ?, pin_hlc = ?"
            " WHERE member_id = ? AND pin_hlc <= ?",
            (e.pin_hash, int(e.pin_locked), e.pin_hash, int(e.pin_locked), e.pin_hlc,
             e.member_id, e.pin_hlc))
    if e.birthday_gift_year:  # given at another store this year: not again here
        conn.execute("UPDATE members SET birthday_gift_year = ? WHERE member_id = ?"
                     " AND coalesce(birthday_gift_year, 0) < ?",
                     (e.birthday_gift_year, e.member_id, e.birthday_gift_year))
    # This store's allowance for the member: the hub's cumulative grant here, folded in so an
    # online grant applied before or after this entry makes no difference. An entry without one
    # (an older hub, or nothing granted here yet) leaves the configured default in force.
    for g in e.grants:
        if g.store_id == ctx.store_id:
            allowance.apply_hub_grant(conn, ctx, e.member_id, g.points_granted, g.sv_granted)
    _apply_coupons(conn, e)


def _apply_cards(conn: sqlite3.Connection, e: MemberEntry) -> None:
    """Each card's state as the hub merged it, unless this store changed the card since (its
    own stamp is newer). A card the hub lists for this member that a stale row here gives to
    another is this member's now (it was unbound and bound again)."""
    for c in e.card_states:
        conn.execute(
            "INSERT INTO cards(card_uid, member_id, bound_hlc, state, reason, state_hlc)"
            " VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT(card_uid) DO UPDATE SET"
            " member_id = excluded.member_id, state = excluded.state, reason = excluded.reason,"
            " state_hlc = excluded.state_hlc WHERE excluded.state_hlc >= cards.state_hlc",
            (c.card_uid, e.member_id, c.state, c.reason, c.hlc))


def _apply_coupons(conn: sqlite3.Connection, e: MemberEntry) -> None:
    """The member's open hub-issued coupons, single-use here like every coupon. A row learned
    from the hub keeps ``updated_hlc`` 0 until this store redeems it (as a card learned from
    the hub has ``bound_hlc`` 0); this store's own coupons never have 0. One the hub no longer
    lists was redeemed or voided in another store: retired here too, unless this store has used
    it itself (then its own state stands, and the hub arbitrates)."""
    for c in e.coupons:
        conn.execute(
            "INSERT INTO coupons(coupon_code, member_id, campaign_id, kind, value, min_spend,"
            " categories, expires_on, state, updated_hlc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'issued', 0)"
            " ON CONFLICT(coupon_code) DO UPDATE SET member_id = excluded.member_id",
            (c.coupon_code, e.member_id, c.campaign_id, c.kind, c.value, c.min_spend,
             json.dumps(c.categories), c.expires_on.isoformat() if c.expires_on else None))
    listed = [c.coupon_code for c in e.coupons]
    conn.execute(
        "UPDATE coupons SET state = 'redeemed' WHERE member_id = ? AND state = 'issued'"
        f" AND updated_hlc = 0 AND coupon_code NOT IN ({', '.join('?' * len(listed))})",
        (e.member_id, *listed))


def _insert(conn: sqlite3.Connection, ctx: StoreContext, e: MemberEntry, phone: str | None,
            birthday: str | None, remote: tuple[int, int, int]) -> None:
    conn.execute(
        "INSERT INTO members(member_id, member_code, phone, name, birthday, tier, tags,"
        " home_store, created_hlc, updated_hlc, remote_points, remote_sv_principal,"
        " remote_sv_bonus, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, 'hub')",
        (e.member_id, e.member_code, phone, e.name, birthday, e.tier,
         json.dumps(e.tags, ensure_ascii=False), e.home_store, *remote))


def apply_authorization(conn: sqlite3.Connection, ctx: StoreContext, member_id: str,
                        reply: RpcReply) -> None:
    """An online authorisation the hub granted for ``member_id``: the member's entry it
    carries first (it may tell of a merge this store has not heard of yet, whose escrow the
    totals now include: the merged id's allowance is folded in before they are taken, or the
    store would count that escrow twice), then the grant."""
    if reply.member is not None:
        apply_entry(conn, ctx, reply.member)
    allowance.grant(conn, ctx, member_id, reply.granted_points, reply.granted_stored_value,
                    points_total=reply.points_granted_total, sv_total=reply.sv_granted_total)


def _apply_messages(conn: sqlite3.Connection, e: MemberEntry) -> None:
    """The messages HQ leaves for the member now: new ones kept to show, ones HQ took back
    (printed at another till) dropped; those printed here stay with their sale (reprints)."""
    keys = [m.key for m in e.messages]
    marks = ", ".join("?" * len(keys))
    conn.execute(f"DELETE FROM till_messages WHERE member_id = ? AND shown_sale IS NULL"
                 f" AND key NOT IN ({marks})", (e.member_id, *keys))
    conn.executemany("INSERT INTO till_messages(member_id, key, text, coupon_code)"
                     " VALUES (?, ?, ?, ?) ON CONFLICT(member_id, key) DO NOTHING",
                     [(e.member_id, m.key, m.text, m.coupon_code) for m in e.messages])
