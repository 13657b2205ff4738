"""What a client can make the POS API hold: bodies, connections, slow requests, odd tokens, open
sales. A real uvicorn (built as `membergate-edge run` builds it) and raw sockets, so that chunked
bodies and half-sent heads reach the server as a misbehaving client sends them.

Timeouts here are safety limits only; nothing asserts that anything is fast.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from edge import demo
from edge.api import api_server
from edge.errors import EdgeError
from edge.gateway import StoreGateway
from edge.service import EdgeService
from protocol import logs
from tests.edge.conftest import TOKEN, key, make_config
from tests.support.serving import (  # noqa: F401 - json_logs is a fixture
    chunked,
    json_logs,
    raw_exchange,
    serving,
    status_and_error,
    uvicorn_lines_are_json,
)

LIMIT = 4096  # [limits] max_request_bytes in these tests


@contextlib.asynccontextmanager
async def _served(tmp_path: Path, **api: Any) -> AsyncIterator[tuple[EdgeService, int]]:
    config = make_config(tmp_path, api={"tokens": {"POS-1": TOKEN}, "port": 0, **api},
                         limits={"max_request_bytes": LIMIT})
    async with StoreGateway(config) as service, serving(api_server(service)) as port:
        yield service, port


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[EdgeService, int]]:
    async with _served(tmp_path, head_timeout_s=0.5, body_stall_timeout_s=0.5) as served:
        yield served


def _products(n: int) -> bytes:
    return json.dumps({"products": [
        {"sku": f"SKU-{i:05d}", "name": f"product {i}", "category": "grocery", "unit_price": 100}
        for i in range(n)]}).encode()


async def _product_count(service: EdgeService) -> int:
    count: int = await service.db.read(
        lambda conn: conn.execute("SELECT count(*) FROM products").fetchone()[0])
    return count


def _chunked_put(token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"PUT /v1/products HTTP/1.1\r\nHost: edge\r\n{auth}"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()


async def test_no_body_is_read_without_a_token(edge: tuple[EdgeService, int]) -> None:
    """The head alone, its chunked body never sent: the refusal comes without waiting for it."""
    service, port = edge
    for token in (None, "not-a-terminal-token"):
        response = await raw_exchange(port, _chunked_put(token))
        assert status_and_error(response) == (401, "unauthorized")
    assert await _product_count(service) == 0


async def test_a_chunked_body_is_counted_as_it_arrives(edge: tuple[EdgeService, int]) -> None:
    """Past the limit the answer is 413 at once, though the body has not ended and no length
    was declared; the same catalogue within the limit is taken."""
    service, port = edge
    too_many = _products(200)
    assert len(too_many) > 3 * LIMIT
    response = await raw_exchange(port, _chunked_put(TOKEN) + chunked(too_many[:LIMIT + 1]))
    assert status_and_error(response) == (413, "payload_too_large")
    # The whole body sent at once, the last chunk included: refused all the same.
    response = await raw_exchange(port, _chunked_put(TOKEN) + chunked(too_many) + b"0\r\n\r\n")
    assert status_and_error(response) == (413, "payload_too_large")
    assert await _product_count(service) == 0

    fits = _products(10)
    assert len(fits) < LIMIT
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async def stream() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            yield fits

        r = await http.put("/v1/products", content=stream(),
                           headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json() == {"upserted": 10}


async def test_a_stalled_head_or_body_is_closed(edge: tuple[EdgeService, int]) -> None:
    """A connection that sends nothing, half a request head, or half a body is closed (here
    after 0.5 s); a normal request is served meanwhile."""
    _, port = edge
    assert await raw_exchange(port, b"") == b""
    assert await raw_exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: edge\r\n") == b""
    head = (f"PUT /v1/products HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    assert await raw_exchange(port, head + b'{"products": [') == b""
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/v1/health")).status_code == 200


async def test_a_body_no_route_reads_is_not_waited_for(tmp_path: Path) -> None:
    """Answered before its body ended (an open route that reads none): the connection closes
    with the answer, though the client goes on trickling the body well within its stall
    deadline (which alone would let it hold the connection for ever)."""
    async with _served(tmp_path, body_stall_timeout_s=300) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: edge\r\nContent-Length: 1000\r\n\r\n")
        to_eof = asyncio.create_task(reader.read())
        for _ in range(50):  # at most 10 s of trickling
            if to_eof.done():
                break
            writer.write(b"x")
            await asyncio.sleep(0.2)
        writer.close()
        assert to_eof.done()
        assert to_eof.result().startswith(b"HTTP/1.1 200")


async def test_connections_beyond_the_cap_are_refused_until_others_go(tmp_path: Path) -> None:
    async with _served(tmp_path, max_connections=2) as (service, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        response = await raw_exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: edge\r\n\r\n")
        assert status_and_error(response) == (503, "too_many_connections")
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/events?token={TOKEN}"):
                pass
        assert refused.value.response.status_code == 503
        for _, writer in held:
            writer.close()
        async with httpx.AsyncClient() as http:  # the tills get back in once the others go
            for _ in range(500):
                r = await http.get(f"http://127.0.0.1:{port}/v1/health",
                                   headers={"Connection": "close"})
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.01)
            assert r.status_code == 200 and r.json()["store_id"] == service.config.store.store_id


async def test_a_token_outside_ascii_is_refused_not_a_crash(edge: tuple[EdgeService, int]) -> None:
    _, port = edge
    odd = "Bearer кассовый-токен-№1".encode()
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{port}/v1/status", headers={b"Authorization": odd})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    for url, headers in (
            (f"ws://127.0.0.1:{port}/v1/events?token=%D0%BA%D0%B0%D1%81%D1%81%D0%B0-1", {}),
            (f"ws://127.0.0.1:{port}/v1/events", {"Authorization": "Bearer caisse-été-0001"})):
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            async with websockets.connect(url, additional_headers=headers) as ws:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.usefixtures("json_logs")
async def test_uvicorn_logs_json_like_the_rest(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("INFO")
    async with _served(tmp_path) as (_, port):
        await uvicorn_lines_are_json(port, capsys)


async def test_a_terminal_holds_a_bounded_number_of_open_sales(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"max_open_sales_per_terminal": 3})
    async with StoreGateway(config) as service:
        await service.apply_bundle(demo.demo_bundle())
        sales = [(await service.open_sale("POS-1"))["sale_id"] for _ in range(3)]
        with pytest.raises(EdgeError) as refused:
            await service.open_sale("POS-1")
        assert (refused.value.code, refused.value.status) == ("too_many_open_sales", 409)
        assert "void" in refused.value.message and refused.value.details["open_sales"] == sales
        await service.open_sale("POS-2")  # another terminal's count is its own
        await service.void_sale(sales[0], "POS-1")
        await service.open_sale("POS-1")  # room again


async def test_a_sale_keeps_a_bounded_memory_of_its_changes(service: EdgeService) -> None:
    """Thousands of changes to one sale keep only the last keys, not every answer; a retry of
    a recent one changes nothing and answers the sale as it stands."""
    from edge import cart as cart_module

    sid = (await service.open_sale("POS-1"))["sale_id"]
    line = await service.add_line(sid, "POS-1", "add-1", sku="A", name="A", category="c",
                                  qty=1, unit_price=100)
    line_no = line["lines"][0]["line_no"]
    for qty in range(1, cart_module.KEYS_KEPT + 20):
        await service.set_qty(sid, "POS-1", f"qty-{qty}", line_no, qty)
    kept = service.carts.get_open(sid).done_keys
    assert len(kept) == cart_module.KEYS_KEPT
    last = f"qty-{cart_module.KEYS_KEPT + 20 - 1}"
    again = await service.set_qty(sid, "POS-1", last, line_no, 1)  # a retry: not applied
    assert again["lines"][0]["qty"] == cart_module.KEYS_KEPT + 20 - 1
    r = await service.add_line(sid, "POS-1", key(), sku="B", name="B", category="c", qty=1,
                               unit_price=100)
    assert len(r["lines"]) == 2


@pytest.mark.parametrize("unit", ["membergate-edge.service", "membergate-hub.service"])
def test_the_units_raise_the_open_file_limit(unit: str) -> None:
    """The default soft limit (1,024) is below what [api] max_connections and the rest of the
    process hold at once."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(Path(__file__).parents[2] / "systemd" / unit, encoding="utf-8")
    assert int(parser["Service"]["LimitNOFILE"]) >= 65536
