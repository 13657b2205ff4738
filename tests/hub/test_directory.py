"""The directory page a store is sent is built from plain data: it must be, byte for byte, what
the validated models encode — for every kind of member (merged, with cards, tags, birthday,
shares and grants), every page boundary, and the empty page."""

from __future__ import annotations

from hub.bench import make_workload
from hub.config import HubConfig
from hub.core.db import HubDatabase, Tx
from hub.ledger.apply import apply_batch, apply_facts
from hub.ledger.facts import decode
from hub.members import directory
from protocol.codec import DEFAULT_MAX_BYTES, encode
from protocol.events import (
    CardBound,
    Event,
    EventBatch,
    MemberProfileChanged,
    MemberRegistered,
)


async def test_the_page_sent_is_what_the_models_encode(hub_db: HubDatabase) -> None:
    cfg = HubConfig()
    work = make_workload(3, 1_500, batch_events=250)
    for payload in work.payloads:
        batch = decode(payload, max_bytes=DEFAULT_MAX_BYTES)
        await hub_db.transaction(lambda tx, b=batch: apply_facts(tx, b, 1, cfg.tiers,
                                                                 cfg.allowance))
    # A member registered in two stores (merged: an alias and a survivor), with a card bound
    # later, a profile change with tags and a birthday, and the empty profile of the alias.
    hlc = 1 << 40
    bodies = [
        ("S101", MemberRegistered(member_id="m-a", member_code="A1", phone="+8613900001111",
                                  name="王伟", card_uid="04AA")),
        ("S102", MemberRegistered(member_id="m-b", member_code="B1", phone="+8613900001111",
                                  card_uid="04BB")),
        ("S101", CardBound(member_id="m-a", card_uid="04AC")),
        ("S101", MemberProfileChanged(member_id="m-a", name="王伟伟", birthday="1990-02-28",
                                      tags=["vip", "早鸟"], changed=["name", "birthday", "tags"])),
    ]
    seqs: dict[str, int] = {}
    for store, body in bodies:
        seq = seqs[store] = seqs.get(store, 0) + 1
        hlc += 1
        batch = EventBatch(store_id=store, epoch=1, events=[Event(
            event_id=f"e-{store}-{seq}", store_id=store, epoch=1, seq=seq, hlc=hlc, body=body)])
        await hub_db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))

    def pages(tx: Tx) -> list[tuple[bytes, bytes]]:
        top = directory.head(tx)
        out = []
        for after, limit in ((0, 5_000), (0, 7), (13, 50), (top - 3, 10), (top, 10)):
            out.append((directory.page_payload(tx, "r1", after, limit),
                        encode(directory.page(tx, "r1", after, limit))))
        return out

    compared = await hub_db.transaction(pages)
    for sent, modelled in compared:
        assert sent == modelled
    full = await hub_db.transaction(lambda tx: directory.page(tx, "r1", 0, 5_000))
    kinds = {m.member_id: m for m in full.members}
    assert kinds["m-b"].merged_into == "m-a" and kinds["m-a"].aliases == ["m-b"]
    assert kinds["m-a"].cards == ["04AA", "04AC", "04BB"] and kinds["m-a"].tags == ["vip", "早鸟"]
    assert str(kinds["m-a"].birthday) == "1990-02-28"
    assert any(m.grants for m in full.members) and any(m.shares for m in full.members)
    assert len(full.members) == work.members + 2
