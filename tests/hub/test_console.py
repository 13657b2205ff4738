"""The HQ console in a real browser: Debian's Chromium, driven by Playwright, against a real hub
process (``membergate-hub run``) over a chain's demo history (``provisioning.demo_history``).

Every request the browser makes to anything but the hub is cut and recorded, so each test also
shows the console works with the network to the outside cut; every console error or uncaught
page error fails the test that caused it. Screenshots of the main pages and each page's load
time (navigation start to the load event, charts included: they are inline SVG) are written to
``tests/.screenshots/``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import queue
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, Page, Route, sync_playwright

from edge.sync import open_manifest
from hub.auth.tokens import PREFIX as TOKEN_PREFIX
from hub.campaigns.bundles import KEY_FILE
from hub.core.db import HubDatabase
from hub.core.schema import migrate
from protocol import signing, topics
from provisioning import demo_history
from provisioning.demo_history import PASSWORD, Chain

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "tests" / ".screenshots"
CHROMIUM = "/usr/bin/chromium"
LOCAL = {"127.0.0.1", "localhost"}


@dataclass
class Demo:
    base: str  # http://127.0.0.1:port
    chain: Chain
    broker_port: int  # the hub's embedded MQTT broker, as the hub printed it
    data_dir: Path  # the hub's, where its signing key is


@dataclass
class Watch:
    """What the browser did that a test must not let pass: errors, requests to elsewhere."""

    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    refusals: set[int] = field(default_factory=set)  # statuses a test asked for

    def clean(self) -> None:
        """No error but the browser's note of each refusal the test asked for."""
        asked = tuple(f"the server responded with a status of {s} " for s in self.refusals)
        unexpected = [e for e in self.errors
                      if not (e.startswith("Failed to load resource") and any(
                          a in e for a in asked))]
        assert unexpected == [], unexpected
        assert self.outside == [], self.outside


async def _seed(db_path: Path) -> Chain:
    async with HubDatabase(f"sqlite:///{db_path}") as db:
        await db.transaction(migrate)
        return await demo_history.seed(db)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("console")
    db_path = root / "hub.db"
    chain = asyncio.run(_seed(db_path))
    cfg = root / "hub.toml"
    cfg.write_text(f"""
[hub]
database = "{db_path}"
data_dir = "{root}"
validate_workers = 0
[broker]
embedded_port = 0
[api]
port = 0
""", encoding="utf-8")
    log = (root / "hub.log").open("w", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "--config", str(cfg), "run"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    try:
        base = broker = None
        for line in proc.stdout:
            up = re.search(r"hub is up: broker 127\.0\.0\.1:(\d+)", line)
            if up:
                broker = int(up.group(1))
            found = re.search(r"HQ console: (http://\S+)/console/", line)
            if found:
                base = found.group(1)
                break
        assert base and broker, (root / "hub.log").read_text()[-3000:]
        yield Demo(base, chain, broker, root)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # Root in CI: Chromium's sandbox needs a user namespace it cannot have there.
        found = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield found
        found.close()


@pytest.fixture(scope="module")
def loads() -> Iterator[dict[str, list[float]]]:
    """Each page's load times over the module, written out (figures, not assertions)."""
    times: dict[str, list[float]] = {}
    yield times
    out = {}
    for page, ms in sorted(times.items()):
        ms = sorted(ms)
        out[page] = {"loads": len(ms), "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
                     "max_ms": ms[-1]}
    (SHOTS / "page_load.json").write_text(json.dumps(out, indent=1), encoding="utf-8")


def _page(browser: Browser, watch: Watch) -> Page:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900},
                                  accept_downloads=True)

    def only_the_hub(route: Route) -> None:
        if urlparse(route.request.url).hostname in LOCAL:
            route.continue_()
        else:  # the network to the outside is cut
            watch.outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_hub)
    page = context.new_page()
    page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.errors.append(str(e)))
    return page


def _sign_in(page: Page, demo: Demo, username: str) -> None:
    page.goto(f"{demo.base}/console/dashboard")
    page.wait_for_url("**/console/sign-in**")  # no session yet: sent to sign in
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#sign-in button[type=submit]")
    page.wait_for_url("**/console/dashboard")


def _open(page: Page, url: str, loads: dict[str, list[float]], name: str,
          status: int = 200, watch: Watch | None = None) -> None:
    if watch is not None:
        watch.refusals.add(status)
    response = page.goto(url)
    assert response is not None and response.status == status, (url, response and
                                                                 response.status)
    page.wait_for_function("document.body.dataset.ready === '1'")
    took = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    loads.setdefault(name, []).append(float(took))


def _net(chain: Chain, start: date, end: date, stores: set[str]) -> int:
    """Net sales (sales less refunds) of ``stores`` over the period, from what was written."""
    sold = sum(total for s, d, total, _m in chain.sales if s in stores and start <= d <= end)
    back = sum(amount for s, d, amount in chain.refunds if s in stores and start <= d <= end)
    return sold - back


def _yuan(text: str) -> int:
    whole, _, frac = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 100 + int((frac + "00")[:2]))


def test_every_page_renders_with_data_in_chinese_with_no_errors(
        demo: Demo, browser: Browser, loads: dict[str, list[float]]) -> None:
    watch = Watch()
    page = _page(browser, watch)
    _sign_in(page, demo, "admin")
    member = sorted(demo.chain.members)[1]
    main = {"dashboard": "/console/dashboard", "sales_trend": "/console/reports/sales_trend",
            "member_structure": "/console/reports/member_structure",
            "points": "/console/reports/points", "member": f"/console/members/{member}",
            "segments": "/console/segments", "rfm": "/console/rfm",
            "campaigns": "/console/campaigns", "fleet": "/console/fleet"}
    others = {"reports": "/console/reports", "users": "/console/users",
              "audit": "/console/audit", "journeys": "/console/journeys",
              "members": "/console/members?member_code=C00001",
              **{f"report_{k}": f"/console/reports/{k}" for k in (
                  "categories", "profile", "products", "staff", "member_activity", "funnel",
                  "top_up_loyalty", "stored_value", "settlement")}}
    for name, path in {**main, **others}.items():
        _open(page, demo.base + path, loads, name)
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        assert page.locator("nav.side a.here").count() == 1 or name == "member", name
        if name in main:
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    # Pages with data show it: a report's tables have rows and the dashboard draws charts.
    _open(page, demo.base + "/console/dashboard", loads, "dashboard")
    assert page.locator("svg.chart").count() >= 1
    assert page.locator("table.data tbody tr").count() > 1
    _open(page, demo.base + "/console/rfm", loads, "rfm")
    grid = [int(c.replace(",", "")) for c in page.locator("#rf-grid td").all_inner_texts()]
    assert len(grid) == 25 and sum(grid) > 0
    # A journey's effect, from the journeys page (the demo's birthday gift holds 20 % out).
    _open(page, demo.base + "/console/journeys", loads, "journeys")
    assert "生日礼" in page.locator("#journeys").inner_text()
    page.click("#journeys a:has-text('效果')")
    page.wait_for_url("**/effect")
    assert page.locator("#effect dl.kv").count() >= 1
    # The English console is one click away, and remembered.
    page.click("header a.lang")
    assert page.locator("nav.side a.here").inner_text() == "Journeys"
    page.goto(demo.base + "/console/fleet")
    assert "Stores and devices" in page.locator("h1").inner_text()
    watch.clean()


def test_a_segment_is_built_and_its_count_shown(demo: Demo, browser: Browser,
                                               loads: dict[str, list[float]]) -> None:
    watch = Watch()
    page = _page(browser, watch)
    _sign_in(page, demo, "mkt")
    _open(page, demo.base + "/console/segments", loads, "segments")
    tree = {"all": [{"field": "registered_store", "in": ["S002"]},
                    {"field": "visited_store", "in": ["S005"]}]}
    page.fill("#segment-definition", json.dumps(tree))
    page.click("#segment-preview")
    page.wait_for_function("document.getElementById('segment-count').dataset.members"
                           " !== undefined")
    shown = int(page.locator("#segment-count").get_attribute("data-members") or "-1")
    expected = {m for s, _d, _t, m in demo.chain.sales
                if s == "S005" and m is not None and demo.chain.members[m] == "S002"}
    assert shown == len(expected) > 0
    # A definition naming a field that does not exist is refused with the part named.
    page.fill("#segment-definition", '{"field": "shoe_size", "gte": 40}')
    page.click("#segment-preview")
    page.wait_for_function("document.getElementById('segment-error').textContent !== ''")
    assert "shoe_size" in page.locator("#segment-error").inner_text()
    # Saved, it is listed.
    page.fill("#segment-definition", json.dumps(tree))
    page.fill("#segment-name", "徐家汇会员去过福田")
    page.click("#segment-save")
    page.wait_for_selector("#segments td:has-text('徐家汇会员去过福田')")
    watch.refusals.add(422)  # the refused preview's answer, noted by the browser
    watch.clean()


def test_a_report_is_filtered_drilled_into_and_exported(
        demo: Demo, browser: Browser, loads: dict[str, list[float]]) -> None:
    watch = Watch()
    page = _page(browser, watch)
    _sign_in(page, demo, "admin")
    end = demo.chain.today
    start = end - timedelta(days=59)
    _open(page, f"{demo.base}/console/reports/sales_trend?start={start}&end={end}&grain=week",
          loads, "sales_trend")
    # Chain -> region: the region's row links to the report filtered to it ...
    page.click("table.data a.drill[href*='region=east']")
    page.wait_for_url("**region=east**")
    assert page.locator("select[name=region]").input_value() == "east"
    # ... -> store.
    page.click("table.data a.drill[href*='store_id=S002']")
    page.wait_for_url("**store_id=S002**")
    assert page.locator("select[name=store_id]").input_value() == "S002"
    # ... -> member: the store's most loyal member by top-ups, to their card.
    year = f"start={end - timedelta(days=399)}&end={end}"
    _open(page, f"{demo.base}/console/reports/top_up_loyalty?store_id=S002&{year}", loads,
          "report_top_up_loyalty")
    page.click("table.data a.drill.member >> nth=0")
    page.wait_for_url("**/console/members?member_code=**")
    page.click("#found a")
    page.wait_for_url("**/console/members/M*")
    assert demo.chain.members[page.url.rsplit("/", 1)[-1]] == "S002"  # topped up at home
    page.go_back()
    page.go_back()
    page.go_back()
    page.wait_for_url("**store_id=S002**")
    with page.expect_download() as got:
        page.click("#export-csv")
    text = Path(got.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert "净销售额" in header
    net = sum(_yuan(r[header.index("净销售额")]) for r in rows[1:] if r[0])
    assert net == _net(demo.chain, start, end, {"S002"})
    with page.expect_download() as got:
        page.click("#export-xlsx")
    assert Path(got.value.path()).read_bytes()[:2] == b"PK"  # a zip: an XLSX workbook
    watch.clean()


def test_a_store_manager_sees_their_store_only(demo: Demo, browser: Browser,
                                              loads: dict[str, list[float]]) -> None:
    watch = Watch()
    page = _page(browser, watch)
    _sign_in(page, demo, "s001")
    chain = demo.chain
    at_s001 = {m for s, _d, _t, m in chain.sales if s == "S001" and m is not None}
    elsewhere = sorted(m for m, home in chain.members.items()
                       if home != "S001" and m not in at_s001)[0]
    own = sorted(m for m, home in chain.members.items() if home == "S001")[0]
    # Another store's member by URL: not found, as for no member at all.
    _open(page, f"{demo.base}/console/members/{elsewhere}", loads, "member_refused", 404,
          watch)
    assert page.locator("#refusal").get_attribute("data-code") == "member_not_found"
    # Their own member: shown, masked.
    _open(page, f"{demo.base}/console/members/{own}", loads, "member")
    assert "****" in page.locator("#member-phone").inner_text()
    # A report filtered to another store: refused, saying why.
    _open(page, f"{demo.base}/console/reports/sales_trend?store_id=S004", loads,
          "report_refused", 403, watch)
    assert "超出了您的数据权限范围" in page.locator("#refusal").inner_text()
    # Their report covers their store alone, and the menu has no users or audit pages.
    _open(page, f"{demo.base}/console/reports/sales_trend", loads, "sales_trend")
    stores = page.locator("select[name=store_id] option").all_inner_texts()
    assert [s.split()[0] for s in stores[1:]] == ["S001"]
    assert page.locator("nav.side a[href$='/users']").count() == 0
    assert page.locator("nav.side a[href$='/audit']").count() == 0
    _open(page, f"{demo.base}/console/users", loads, "users_refused", 403, watch)
    watch.clean()


def test_bad_filters_get_a_clear_message_and_change_nothing(
        demo: Demo, browser: Browser, loads: dict[str, list[float]]) -> None:
    watch = Watch()
    page = _page(browser, watch)
    _sign_in(page, demo, "admin")
    cases: list[tuple[str, int, str]] = [
        ("start=2026-03-01&end=2026-01-01", 422, "结束日期早于开始日期"),
        ("start=2020-01-01&end=2026-01-01", 422, "查询期间过长"),
        ("store_id=S999", 404, "没有这个门店"),
        ("region=north", 404, "没有这个区域"),
        ("start=2026-13-01&end=2026-12-31", 422, "日期格式有误，应为 年-月-日。（开始日期）"),
    ]
    for query, status, says in cases:
        _open(page, f"{demo.base}/console/reports/sales_trend?{query}", loads, "refused",
              status, watch)
        assert says in page.locator("#refusal").inner_text(), query
    watch.clean()


def test_the_console_needs_nothing_from_outside(demo: Demo, browser: Browser,
                                                loads: dict[str, list[float]]) -> None:
    """Every script, style, image and font a page names is the hub's own (the routes above
    abort anything else; this reads what the pages ask for)."""
    watch = Watch()
    page = _page(browser, watch)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    _sign_in(page, demo, "admin")
    for path in ("/console/dashboard", "/console/reports/profile"):
        _open(page, demo.base + path, loads, path.rsplit("/", 1)[-1])
        page.wait_for_load_state("networkidle")
    page.goto(demo.base + "/docs")  # the API's docs page, its Swagger UI served locally
    page.wait_for_load_state("networkidle")
    assert asked and all(urlparse(u).hostname in LOCAL or u.startswith("data:")
                         for u in asked), [u for u in asked if urlparse(u).hostname not in LOCAL]
    watch.clean()


def _retained(port: int, topic: str, timeout: float = 15.0) -> bytes:
    """The message the broker retains on ``topic``, as a store subscribing now gets it
    (paho-mqtt, outside the browser and the hub)."""
    got: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="console-test-store")
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, message: got.put(message.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        return got.get(timeout=timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def _textarea_json(page: Page, selector: str) -> dict[str, object]:
    found: dict[str, object] = json.loads(page.locator(selector).input_value())
    return found


def test_a_campaign_bundle_is_written_previewed_and_published_to_a_region(
        demo: Demo, browser: Browser, loads: dict[str, list[float]]) -> None:
    watch = Watch()
    page = _page(browser, watch)
    _sign_in(page, demo, "mkt")
    _open(page, f"{demo.base}/console/campaigns", loads, "campaigns")
    page.click("#edit-bundle")
    page.wait_for_url("**/console/campaigns/edit")
    page.select_option("#bundle-target", label="区域 east")
    page.wait_for_url("**scope=region&scope_id=east")
    page.wait_for_function("document.body.dataset.ready === '1'")
    draft = _textarea_json(page, "#bundle-json")
    assert (draft["scope"], draft["scope_id"], draft["version"], draft["campaigns"]) == (
        "region", "east", 1, [])  # nothing held for east yet: version 1, no campaigns
    page.click("[data-template=spend_threshold_off]")
    page.click("[data-template=earn_points]")
    bundle = _textarea_json(page, "#bundle-json")
    assert [c["campaign_id"] for c in bundle["campaigns"]] == [  # type: ignore[attr-defined]
        "mj-300-30", "earn-base"]
    # A discount above its threshold: refused, naming the part, in Chinese; nothing published.
    broken = json.loads(json.dumps(bundle))
    broken["campaigns"][0]["rule"]["off"] = 40_000
    page.fill("#bundle-json", json.dumps(broken, ensure_ascii=False))
    page.click("#bundle-preview")
    page.wait_for_function("document.getElementById('bundle-error').textContent !== ''")
    said = page.locator("#bundle-error").inner_text()
    assert "内容有误" in said and "campaigns.0.rule.spend_threshold_off" in said, said
    page.fill("#bundle-json", json.dumps(bundle, ensure_ascii=False))
    page.click("#bundle-preview")
    page.wait_for_selector("#bundle-outcome:not([hidden])")
    east = sorted(s for s, _name, region in demo_history.STORES if region == "east")
    assert page.locator("#bundle-outcome").get_attribute("data-stores") == ",".join(east)
    assert page.locator("#preview-added").inner_text() == "earn-base, mj-300-30"
    assert page.locator("#preview-next").inner_text() == "1"
    page.screenshot(path=str(SHOTS / "bundle_edit.png"), full_page=True)
    page.click("#bundle-publish")
    page.wait_for_selector("#bundle-published[data-topic]")
    topic = page.locator("#bundle-published").get_attribute("data-topic")
    assert topic == topics.region_campaigns("east")
    # What a store of the region gets from the broker verifies with the hub's public key,
    # as the edge checks it (its own function), and is the bundle written here.
    key = signing.load_private_pem((demo.data_dir / KEY_FILE).read_bytes())
    provisioned = signing.load_public_b64(signing.public_b64(key))  # as `hub init` prints it
    got = open_manifest(topic, _retained(demo.broker_port, topic), provisioned)
    assert (got.scope, got.scope_id, got.version) == ("region", "east", 1)
    assert [c.campaign_id for c in got.campaigns] == ["mj-300-30", "earn-base"]
    # Published again unchanged: refused as stale, said so, and nothing changes.
    page.click("#bundle-publish")
    page.wait_for_function("document.getElementById('bundle-error').textContent !== ''")
    assert "版本号不比已发布的新" in page.locator("#bundle-error").inner_text()
    # The list of bundles shows it; the editor opens it again at the next version.
    _open(page, f"{demo.base}/console/campaigns/bundles", loads, "bundles")
    held = page.locator("section.bundle[data-scope=region][data-scope-id=east]")
    assert held.get_attribute("data-version") == "1"
    assert held.locator("tr[data-campaign=mj-300-30]").count() == 1
    held.locator("a.edit").click()
    page.wait_for_url("**scope=region&scope_id=east")
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert _textarea_json(page, "#bundle-json")["version"] == 2
    watch.refusals.update({409, 422})  # the refused preview and push, noted by the browser
    watch.clean()


def test_journeys_and_users_are_authored_and_refused_where_the_role_may_not(
        demo: Demo, browser: Browser, loads: dict[str, list[float]]) -> None:
    watch = Watch()
    page = _page(browser, watch)
    _sign_in(page, demo, "mkt")
    _open(page, f"{demo.base}/console/journeys", loads, "journeys")
    page.click("#new-journey")
    page.wait_for_url("**/console/journeys/new")
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.click("[data-journey-template=wake_up]")
    page.click("#journey-preview")
    page.wait_for_selector("#journey-outcome:not([hidden])")
    assert "进入生命周期阶段" in page.locator("#journey-trigger").inner_text()
    assert page.locator("#journey-steps li").count() == 4
    page.screenshot(path=str(SHOTS / "journey_edit.png"), full_page=True)
    page.click("#journey-save")
    page.wait_for_url("**/console/journeys")
    row = page.locator("#journeys tr:has(td.name:text-is('沉睡唤醒'))")
    assert row.get_attribute("data-state") == "active"
    row.locator("[data-journey-state=paused]").click()
    page.wait_for_selector("#journeys tr[data-state=paused]:has(td.name:text-is('沉睡唤醒'))")
    assert row.locator("td.state").inner_text() == "已暂停"
    # As admin: a store manager of S003 is added, and sees S003 alone once signed in.
    admin = _page(browser, watch)
    _sign_in(admin, demo, "admin")
    _open(admin, f"{demo.base}/console/users", loads, "users")
    form = admin.locator("#user-add")
    form.locator("[name=username]").fill("s003.mgr")
    form.locator("[name=display_name]").fill("西湖店长")
    form.locator("[name=role]").select_option("store_manager")
    form.locator("[name=stores]").select_option("S003")
    form.locator("[name=password]").fill(PASSWORD)
    admin.click("#user-add-save")
    admin.wait_for_selector("#users tr[data-user='s003.mgr']")
    assert admin.locator("#users tr[data-user='s003.mgr']").inner_text().count("S003") == 1
    # An API token for them, shown once; then revoked.
    added = admin.locator("#users tr[data-user='s003.mgr']")
    added.locator(".token-name").fill("西湖 BI")
    added.locator("[data-user-token]").click()
    admin.wait_for_selector("#token-issued:not([hidden])")
    assert admin.locator("#token-secret").inner_text().startswith(TOKEN_PREFIX)
    _open(admin, f"{demo.base}/console/users", loads, "users")
    admin.locator("#tokens tr:has-text('西湖 BI') [data-token-revoke]").click()
    admin.wait_for_selector("#tokens tr:has-text('西湖 BI'):has-text('已吊销')")
    admin.screenshot(path=str(SHOTS / "users.png"), full_page=True)
    manager = _page(browser, watch)
    _sign_in(manager, demo, "s003.mgr")
    _open(manager, f"{demo.base}/console/reports/sales_trend", loads, "sales_trend")
    stores = manager.locator("select[name=store_id] option").all_inner_texts()
    assert [s.split()[0] for s in stores[1:]] == ["S003"]
    # A store manager may not write bundles: the editor is a refusal, saying why.
    _open(manager, f"{demo.base}/console/campaigns/edit", loads, "bundle_refused", 403, watch)
    assert manager.locator("#refusal").get_attribute("data-code") == "forbidden"
    watch.clean()
