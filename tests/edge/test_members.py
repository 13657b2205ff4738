from __future__ import annotations

from datetime import date

import pytest

from edge.errors import EdgeError
from edge.service import EdgeService
from protocol.ids import is_member_code, member_qr
from tests.edge import invariants
from tests.edge.conftest import key, register


async def test_register_by_phone_normalises_and_mints_a_valid_code(service: EdgeService) -> None:
    m = await register(service, "138 0013 8000", birthday=date(1990, 5, 17))
    assert m["phone"] == "+8613800138000"
    assert is_member_code(m["member_code"])
    assert m["member_code"].startswith("0001")  # store number prefix
    assert m["points"] == 0 and m["stored_value"]["total"] == 0
    events = invariants.outbox_events(service.config.database.path)
    assert [e.body.type for e in events] == ["member.registered"]
    assert events[0].body.member_id == m["member_id"]  # type: ignore[union-attr]


@pytest.mark.parametrize("same", ["+86 138-0013-8000", "008613800138000", "13800138000"])
async def test_same_phone_in_another_format_is_refused(service: EdgeService, same: str) -> None:
    await register(service, "13800138000")
    before = invariants.snapshot(service.config.database.path)
    with pytest.raises(EdgeError) as exc:
        await register(service, same)
    assert exc.value.code == "phone_taken"
    assert invariants.snapshot(service.config.database.path) == before


async def test_a_taken_phone_or_card_tells_nothing_of_whose_it_is(service: EdgeService) -> None:
    """Uniqueness says "taken" and no more: not the member, their code, name or store (HQ.md
    principle 6: probing by registering must not find out who or where)."""
    m = await register(service, "13800138000", card="04C0FFEE", name="王芳")
    for phone, card in (("13800138000", None), ("13900139000", "04C0FFEE")):
        with pytest.raises(EdgeError) as exc:
            await register(service, phone, card=card)
        told = repr(exc.value.as_dict())
        for secret in (m["member_id"], m["member_code"], "王芳", service.context.store_id):
            assert secret not in told, (exc.value.code, secret)


async def test_identify_by_card_code_phone_and_qr(service: EdgeService) -> None:
    m = await register(service, "13900139000", card="04:a1:b2:c3")
    mid = m["member_id"]
    assert m["cards"] == ["04A1B2C3"]
    assert await service.find_member_id("card_uid", "04a1b2c3") == mid
    assert await service.find_member_id("member_code", m["member_code"]) == mid
    assert await service.find_member_id("phone", "+86 139 0013 9000") == mid
    assert await service.find_member_id("qr", member_qr(m["member_code"])) == mid


@pytest.mark.parametrize(
    ("by", "value", "code"),
    [
        ("card_uid", "DEADBEEF", "unknown_card"),
        ("card_uid", "zz", "invalid_card_uid"),
        ("member_code", "000100000010", "invalid_member_code"),  # Luhn check fails
        ("phone", "12345", "invalid_phone"),
        ("phone", "13700137000", "member_not_found"),
        ("qr", "MGC:ABCDEFGHJKMN", "invalid_qr"),
    ],
)
async def test_unknown_or_invalid_identifiers(service: EdgeService, by: str, value: str,
                                              code: str) -> None:
    await register(service, "13900139000", card="04A1B2C3")
    with pytest.raises(EdgeError) as exc:
        await service.find_member_id(by, value)  # type: ignore[arg-type]
    assert exc.value.code == code
    assert exc.value.status in (404, 422)


async def test_card_bound_to_one_member_only(service: EdgeService) -> None:
    a = await register(service, "13900139001", card="04A1B2C3")
    b = await register(service, "13900139002")
    with pytest.raises(EdgeError) as exc:
        await service.bind_card(terminal_id="POS-1", idem_key=key(), member_id=b["member_id"],
                                card_uid="04a1b2c3")
    assert exc.value.code == "card_taken"
    view = await service.bind_card(terminal_id="POS-1", idem_key=key(),
                                   member_id=b["member_id"], card_uid="04A1B2C3D4E5F6")
    assert view["cards"] == ["04A1B2C3D4E5F6"]
    assert (await service.member(a["member_id"]))["cards"] == ["04A1B2C3"]


async def test_profile_change_is_recorded_for_the_hub(service: EdgeService) -> None:
    m = await register(service, "13900139003")
    view = await service.update_profile(terminal_id="POS-1", idem_key=key(),
                                        member_id=m["member_id"],
                                        changes={"name": "韩梅梅", "tags": ["vip", "vip"]})
    assert view["name"] == "韩梅梅" and view["tags"] == ["vip"]
    last = invariants.outbox_events(service.config.database.path)[-1]
    assert last.body.type == "member.profile_changed"
    assert last.body.changed == ["name", "tags"]  # type: ignore[union-attr]


async def test_register_retry_with_same_key_gives_same_member(service: EdgeService) -> None:
    a = await service.register_member(terminal_id="POS-1", idem_key="reg-1", phone="13900139004")
    b = await service.register_member(terminal_id="POS-1", idem_key="reg-1", phone="13900139004")
    assert a == b
    with pytest.raises(EdgeError) as exc:
        await service.register_member(terminal_id="POS-1", idem_key="reg-1", phone="13900139005")
    assert exc.value.code == "idempotency_key_reused"
    assert invariants.check(service.config.database.path)["members"] == 1


async def test_member_needs_phone_or_card_and_sane_birthday(service: EdgeService) -> None:
    with pytest.raises(EdgeError) as exc:
        await service.register_member(terminal_id="POS-1", idem_key=key(), phone=None)
    assert exc.value.code == "phone_or_card_required"
    with pytest.raises(EdgeError) as exc:
        await register(service, "13900139006", birthday=date(2999, 1, 1))
    assert exc.value.code == "invalid_birthday"
