"""The fleet page: which stores are online, what waits to be sent, which devices need someone
at the store, what was refused — from what each store last reported (the demo chain reports one
store cut off for two days, a printer low on paper and a scanner unplugged), and the report
pages saying that store's figures are not complete."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from hub.api.console import fleet_view
from tests.support.demo_console import demo_console


def _row(html: str, store: str) -> str:
    found = re.search(rf'<tr class="([^"]*)" data-store="{store}">(.*?)</tr>', html, re.S)
    assert found, store
    return found.group(1) + "|" + found.group(2)


async def test_the_fleet_page_shows_who_is_offline_and_what_needs_a_hand(tmp_path: Path
                                                                        ) -> None:
    async with demo_console(tmp_path, "admin") as demo:
        client, chain = demo.client, demo.chain
        page = await client.get("/console/fleet")
        assert page.status_code == 200
        html = page.text
        summary = dict(re.findall(r"<dt>([^<]+)</dt><dd[^>]*>(\d+)</dd>", html))
        assert summary == {"在线门店": "5", "离线门店": "1", "待上传事件": "340",
                           "设备异常": "2"}
        offline = _row(html, "S006")
        assert offline.startswith("stale|") and "2 天前" in offline and ">340<" in offline
        assert "小票打印机: 纸将用完" in _row(html, "S003")
        assert "扫码枪: 未连接" in _row(html, "S005")
        assert "stale_version 1" in _row(html, "S002")
        healthy = _row(html, "S001")
        assert healthy.startswith("|") and "4 · 正常" in healthy and "分钟前" in healthy
        english = await client.get("/console/fleet", params={"lang": "en"})
        assert "receipt printer: paper low" in _row(english.text, "S003")
        # A report up to yesterday says the cut-off store has not sent everything.
        report = (await client.get("/v1/reports/sales_trend", params={
            "start": str(chain.today - timedelta(days=7)),
            "end": str(chain.today - timedelta(days=1))})).json()
        assert report["completeness"]["incomplete_stores"] == ["S006"]


def test_how_long_ago_reads() -> None:
    assert fleet_view.ago("zh", None) == "从未"
    assert fleet_view.ago("zh", 59.9) == "59 秒前"
    assert fleet_view.ago("en", 60) == "1 min ago"
    assert fleet_view.ago("zh", 2 * 3600 + 5) == "2 小时前"
    assert fleet_view.ago("en", 2 * 86_400 + 1) == "2 days ago"
