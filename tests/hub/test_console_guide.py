"""A shopping guide in the console: the same pages cut to their own members — they land on
member search (the one thing their role opens), find and open only the members assigned to
them, see personal data masked, and get a refusal page for the rest."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.demo_console import demo_console


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_a_guide_sees_their_own_members_only(tmp_path: Path) -> None:
    async with demo_console(tmp_path, "guide1") as demo:
        client = demo.client
        landing = await client.get("/console/")
        assert landing.status_code == 303
        assert landing.headers["location"] == "/console/members"
        page = await client.get("/console/members")
        menu = re.findall(r'<a href="/console/(\w+)"', page.text)
        assert "members" in menu and "dashboard" not in menu and "users" not in menu
        # M00000 is guide G01's (every fourth member is), M00001 G02's.
        mine = await client.get("/console/members", params={"phone": "+8613900000000"})
        assert "C00000" in mine.text and "+86139****0000" in mine.text
        theirs = await client.get("/console/members", params={"phone": "+8613900000001"})
        assert "C00001" not in theirs.text and "暂无数据" in _text(theirs.text)
        card = await client.get("/console/members/M00000")
        assert card.status_code == 200 and "+86139****0000" in card.text
        assert "+8613900000000" not in card.text
        other = await client.get("/console/members/M00001")
        assert other.status_code == 404 and "不在您的权限范围内" in _text(other.text)
        refused = await client.get("/console/dashboard")
        assert refused.status_code == 403 and "无权访问" in _text(refused.text)
        # A reader of segments previews counts; saving is for who may write them.
        segments = await client.get("/console/segments")
        assert 'id="segment-preview"' in segments.text
        assert 'id="segment-save"' not in segments.text
        await demo.sign_in("mkt")
        assert 'id="segment-save"' in (await client.get("/console/segments")).text


async def test_a_segments_members_export_from_its_page_for_who_may_export(tmp_path: Path
                                                                         ) -> None:
    async with demo_console(tmp_path, "mkt", members=60, days=240) as demo:
        await demo.hub.keeper.run()  # the segment's members, as the running hub keeps them
        page = (await demo.client.get("/console/segments")).text
        link = re.search(r'href="(/v1/segments/([^"/]+)/members\.csv)"', page)
        assert link, page[-2000:]
        got = await demo.client.get(link.group(1))
        lines = got.text.lstrip("\ufeff").strip().splitlines()
        assert got.status_code == 200 and lines[0] == "member_id,member_code,since"
        # Exactly the segment's members (the demo's: no purchase for 60 days or more).
        held = (await demo.client.get(f"/v1/segments/{link.group(2)}")).json()["members"]
        assert held > 0 and len(lines) - 1 == held
        await demo.sign_in("guide1")  # members.read only: no export
        assert "members.csv" not in (await demo.client.get("/console/segments")).text
