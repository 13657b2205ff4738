"""The POS API over HTTPS and wss: a real uvicorn with a certificate from a fleet CA, a real
HTTP client and a real WebSocket client that trust only that CA."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import httpx
import pytest
import websockets
from pydantic import ValidationError

from edge import cli
from edge.api import api_server
from edge.config import EdgeConfig
from edge.gateway import StoreGateway
from edge.service import EdgeService
from protocol.tls import TlsError
from provisioning import certs
from tests.edge.conftest import TOKEN, key, make_config
from tests.support.serving import refuses_plain_http_and_public_trust, serving


def _tls_config(tmp_path: Path, host: str = "127.0.0.1") -> EdgeConfig:
    ca = certs.new_ca("store test CA")
    issued = certs.server_cert(ca, host)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "api.crt").write_bytes(issued.cert_pem)
    (tmp_path / "api.key").write_bytes(issued.key_pem)
    return make_config(tmp_path, api={
        "tokens": {"POS-1": TOKEN}, "host": host, "port": 0,
        "tls_cert_file": str(tmp_path / "api.crt"), "tls_key_file": str(tmp_path / "api.key")})


async def test_the_pos_api_speaks_https_and_wss_only(tmp_path: Path) -> None:
    config = _tls_config(tmp_path)
    assert config.api.scheme == "https"
    async with StoreGateway(config) as service, serving(api_server(service)) as port:
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with websockets.connect(f"wss://127.0.0.1:{port}/v1/events?token={TOKEN}",
                                      ssl=trust) as ws, \
                httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trust,
                                  headers=auth) as http:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert hello["type"] == "hello" and hello["terminal_id"] == "POS-1"
            r = await http.post("/v1/members", json={"phone": "13900139001", "name": "李雷"},
                                headers={"Idempotency-Key": key()})
            assert r.status_code == 201, r.text
            event = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert event["type"] == "member.registered"
            assert event["member_id"] == r.json()["member_id"]
        await refuses_plain_http_and_public_trust(port, "/v1/status", auth)


def test_certificate_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        make_config(tmp_path, api={"tls_cert_file": "api.crt"})
    with pytest.raises(ValidationError, match="go together"):
        make_config(tmp_path, api={"tls_key_file": "api.key"})


def test_an_unusable_certificate_stops_the_box_before_it_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing is opened (not even the database) when the API cannot be served as configured."""
    (tmp_path / "api.crt").write_text("not a certificate")
    (tmp_path / "edge.toml").write_text(
        f'[database]\npath = "{tmp_path / "edge.db"}"\n'
        f'[api]\nport = 0\ntls_cert_file = "{tmp_path / "api.crt"}"\n'
        f'tls_key_file = "{tmp_path / "api.key"}"\n', encoding="utf-8")
    code = cli.main(["--config", str(tmp_path / "edge.toml"), "run", "--seconds", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot start" in err and "[api] tls_cert_file" in err and "api.crt" in err
    assert not (tmp_path / "edge.db").exists()
    service = EdgeService(make_config(tmp_path, api={  # the same check, without the CLI
        "tls_cert_file": str(tmp_path / "api.crt"), "tls_key_file": str(tmp_path / "api.key")}))
    with pytest.raises(TlsError, match=r"\[api\] tls_cert_file .*api\.crt.*cannot be used"):
        api_server(service)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("192.168.1.20", False), ("pos-gateway.local", False), ("::", False)])
def test_which_hosts_keep_tokens_on_the_box(tmp_path: Path, host: str, loopback: bool) -> None:
    assert make_config(tmp_path, api={"host": host}).api.loopback is loopback


def test_serving_the_lan_in_clear_text_is_warned_about(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store engineer who opens the API to the LAN without a certificate is told what it
    costs; on 127.0.0.1 (the default) nothing is said."""
    def run(host: str) -> str:
        (tmp_path / "edge.toml").write_text(
            f'[database]\npath = "{tmp_path / "edge.db"}"\n[api]\nport = 0\nhost = "{host}"\n'
            f'[api.tokens]\nPOS-1 = "{TOKEN}"\n', encoding="utf-8")
        assert cli.main(["--config", str(tmp_path / "edge.toml"), "run", "--seconds", "0.3"]) == 0
        captured = capsys.readouterr()
        return captured.out + captured.err

    assert "clear text" in run("0.0.0.0")
    assert "clear text" not in run("127.0.0.1")


@pytest.mark.parametrize("tokens", [
    "",  # the default: the demo token
    '[api.tokens]\nPOS-1 = "demo-token-pos-1"\n',
    f'[api.tokens]\nPOS-2 = "demo-token-pos-1"\nPOS-3 = "{TOKEN}"\n',  # one of them public
    "[api.tokens]\n"])  # none at all
def test_the_public_demo_token_is_never_served_to_the_network(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tokens: str) -> None:
    """Off this box, the demo token (printed in the README) or no token at all is refused
    before anything is made; `run --demo` on loopback keeps working with it."""
    config = tmp_path / "edge.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "edge.db"}"\n'
                      f'[api]\nport = 0\nhost = "0.0.0.0"\n{tokens}', encoding="utf-8")
    assert cli.main(["--config", str(config), "run", "--seconds", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "cannot start" in err and "[api.tokens]" in err and "'0.0.0.0'" in err
    assert not (tmp_path / "edge.db").exists()
    if tokens == "":
        assert cli.main(["--config", str(config), "run", "--demo", "--host", "127.0.0.1",
                         "--seconds", "0.3"]) == 0
        assert "token demo-token-pos-1" in capsys.readouterr().out
