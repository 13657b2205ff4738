"""Directory pages applied a step at a time (``edge.directory.apply_in_steps``): checked whole
before anything is written, applied in short transactions with the checkpoint last, and a page
cut short by a crash and applied again ends as if applied once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest

from edge import demo, directory
from edge.bench import directory_pages
from edge.gateway import StoreGateway
from protocol.codec import CodecError, unpack
from protocol.sync import DirectoryPage
from tests.edge.conftest import make_config

TABLES = ("members", "cards", "coupons", "allowances")


def _state(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}
        return {t: sorted(tuple(r) for r in conn.execute(f"SELECT * FROM {t}"))
                for t in TABLES if t in tables}
    finally:
        conn.close()


async def test_a_page_cut_short_and_applied_again_ends_as_applied_once(tmp_path: Path) -> None:
    paths = []
    after = 0  # both stores are new
    [(request_id, payload)] = directory_pages(2, 1, 35, 35, after)
    for name, cut in (("once", False), ("cut", True)):
        cfg = make_config(tmp_path / name)
        (tmp_path / name).mkdir()
        async with StoreGateway(cfg) as svc:
            await svc.apply_bundle(demo.demo_bundle())
            assert await svc.db.read(directory.checkpoint) == after
            if cut:  # the first step written, then the box died before the next
                header, raw = directory.open_page(payload, request_id) or (None, [])
                assert header is not None
                first = directory.check_entries(raw, 0)
                assert await svc.db.write(lambda conn, h=header, f=first: directory._apply_step(
                    conn, svc.context, h, f, last=False)) is None
                assert await svc.db.read(directory.checkpoint) == after  # not ahead of data
            done = await directory.apply_in_steps(svc.db, svc.context, payload, request_id)
            assert done == (after + 35, False)
            # Answering a request given up on: nothing applied.
            assert await directory.apply_in_steps(svc.db, svc.context, payload, "other") is None
        paths.append(cfg.database.path)
    once, cut = (_state(p) for p in paths)
    assert len(once["members"]) == 35 and len(once["allowances"]) > 0
    assert once == cut


async def test_a_malformed_entry_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with StoreGateway(cfg) as svc:
        after = await svc.db.read(directory.checkpoint)
        [(request_id, payload)] = directory_pages(2, 1, 40, 40, after)
        data = unpack(payload)
        del data["members"][23]["member_code"]
        bad = msgpack.packb(data, use_bin_type=True)
        before = _state(cfg.database.path)
        with pytest.raises(CodecError, match=r"members\.23\.member_code"):
            await directory.apply_in_steps(svc.db, svc.context, bad, request_id)
        assert _state(cfg.database.path) == before
        assert await svc.db.read(directory.checkpoint) == after
        # A stale page (not from our checkpoint) changes nothing either.
        [(rid, stale)] = directory_pages(2, 100, 5, 5, after + 7)
        assert await directory.apply_in_steps(svc.db, svc.context, stale, rid) == (after, False)
        assert _state(cfg.database.path) == before
        with pytest.raises(CodecError, match="at most"):
            small = {"member_id": "m", "member_code": "c", "home_store": "S002"}
            too_many = {**data, "members": [small] * 5001}
            await directory.apply_in_steps(
                svc.db, svc.context, msgpack.packb(too_many, use_bin_type=True), request_id)
        assert DirectoryPage.model_fields["members"].metadata[0].max_length == 5000


async def test_a_page_is_unpacked_with_the_tills_served_and_read_as_a_whole_would_be() -> None:
    """``open_page_stepwise`` gives what ``open_page`` gives — the same header and entries, the
    same error for a malformed page — and lets the loop turn every ``UNPACK_STEP`` entries
    while it reads (a page of 1,000 entries held the loop for tens of ms in one go)."""
    request_id, payload = directory_pages(2, 1, 1000, 1000, 0)[0]
    turns = 0
    reading = True

    async def till() -> None:
        nonlocal turns
        while reading:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(till())
    await asyncio.sleep(0)
    opened = await directory.open_page_stepwise(payload, request_id)
    reading = False
    await other
    assert opened is not None and opened == directory.open_page(payload, request_id)
    assert turns >= 1000 // directory.UNPACK_STEP - 1
    assert await directory.open_page_stepwise(payload, "another") is None
    for bad in (payload[:-5], payload + b"\x01", msgpack.packb([1, 2]), b"\xc1",
                msgpack.packb({"members": 3, "request_id": request_id})):
        with pytest.raises(CodecError) as stepwise:
            await directory.open_page_stepwise(bad, request_id)
        with pytest.raises(CodecError) as whole:
            directory.open_page(bad, request_id)
        assert (type(stepwise.value), str(stepwise.value)) == (type(whole.value),
                                                               str(whole.value))
