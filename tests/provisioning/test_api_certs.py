"""``membergate-provision broker`` with ``api_host`` on stores and the hub: a POS API certificate
per store and one for the HQ API from the fleet's CA, and the snippets serving those APIs over
HTTPS. The certificates are used for real: the snippets' [api] tables start a store's API and
the hub's HQ API that a client trusting only the fleet's CA reaches."""

from __future__ import annotations

import ssl
import stat
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from edge.api import api_server
from edge.config import EdgeConfig
from edge.gateway import StoreGateway
from hub.api.app import api_server as hub_api_server
from hub.app import Hub
from hub.config import HubConfig
from tests.provisioning.test_broker import files_under, run_cli
from tests.support.serving import serving

FLEET = """
[hub]
username = "membergate-hub"

[[stores]]
store_id = "S001"
region = "east"
api_host = "127.0.0.1"

[[stores]]
store_id = "S002"
region = "east"
api_host = "pos-s002.store.internal"

[[stores]]
store_id = "S003"
region = "west"
"""


def _trusting(out: Path) -> ssl.SSLContext:
    """A POS terminal's client context: the fleet's CA in ``out`` and nothing else."""
    return ssl.create_default_context(cafile=str(out / "ca" / "ca.crt"))


def _snippet(out: Path, store_id: str) -> dict[str, object]:
    return tomllib.loads((out / "stores" / f"{store_id}.toml").read_text(encoding="utf-8"))


def test_stores_with_an_api_host_get_a_certificate_and_an_https_api_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, FLEET, out) == 0  # the broker itself stays plain here
    printed = capsys.readouterr().out
    assert not (out / "broker" / "server.crt").exists()
    for name, mode in {"ca/ca.key": 0o600, "ca/ca.crt": 0o644, "pos-api/S001.key": 0o600,
                       "pos-api/S001.crt": 0o644, "pos-api/S002.key": 0o600,
                       "pos-api/S002.crt": 0o644}.items():
        assert stat.S_IMODE((out / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in (out / "pos-api").iterdir()) == [
        "S001.crt", "S001.key", "S002.crt", "S002.key"]  # none for S003, which has no api_host

    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())
    for store_id, kind, name in [("S001", x509.IPAddress, "127.0.0.1"),
                                 ("S002", x509.DNSName, "pos-s002.store.internal")]:
        cert = x509.load_pem_x509_certificate((out / "pos-api" / f"{store_id}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(v) for v in san.get_values_for_type(kind)] == [name]
        assert f"{out / 'pos-api' / store_id}.crt" in printed

    s001 = _snippet(out, "S001")
    api = EdgeConfig.model_validate({"api": s001["api"]}).api
    assert api.scheme == "https" and api.host == "0.0.0.0"
    assert api.tls_cert_file == Path("/etc/membergate/pos-api.crt")
    assert api.tls_key_file == Path("/etc/membergate/pos-api.key")
    assert "api" not in _snippet(out, "S003")  # its API stays as its edge.toml says
    assert "PRIVATE KEY" not in (out / "stores" / "S001.toml").read_text()
    assert f"the POS terminals trust {out / 'ca' / 'ca.crt'}" in printed


async def test_the_issued_certificate_serves_the_stores_api_to_clients_of_the_fleet_ca(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, FLEET, out) == 0
    table = dict(_snippet(out, "S001")["api"])  # type: ignore[call-overload]
    # As installed on the box: the files at the paths the snippet names (here under tmp_path),
    # and the loopback address instead of every interface, for the test only.
    table |= {"host": "127.0.0.1", "port": 0, "tls_cert_file": str(out / "pos-api" / "S001.crt"),
              "tls_key_file": str(out / "pos-api" / "S001.key"),
              "tokens": {"POS-1": "pos-1-token-for-the-test"}}
    config = EdgeConfig.model_validate({"store": {"store_id": "S001"}, "api": table,
                                        "database": {"path": str(tmp_path / "edge.db")}})
    async with StoreGateway(config) as service, serving(api_server(service)) as port:
        async with httpx.AsyncClient(verify=_trusting(out)) as c:
            r = await c.get(f"https://127.0.0.1:{port}/v1/status",
                            headers={"Authorization": "Bearer pos-1-token-for-the-test"})
            assert r.status_code == 200, r.text
        other = tmp_path / "other"  # another fleet's CA is not trusted for this store
        assert run_cli(tmp_path, FLEET, other) == 0
        async with httpx.AsyncClient(verify=_trusting(other)) as c:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.get(f"https://127.0.0.1:{port}/v1/health")


def test_provisioning_again_keeps_the_ca_and_reissues_or_retires_api_certificates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, FLEET, out) == 0
    first = files_under(out)
    capsys.readouterr()
    without_s002 = FLEET.replace('api_host = "pos-s002.store.internal"\n', "")
    assert run_cli(tmp_path, without_s002, out, "--force") == 0
    printed = capsys.readouterr().out
    second = files_under(out)
    assert second["ca/ca.crt"] == first["ca/ca.crt"] and second["ca/ca.key"] == first["ca/ca.key"]
    assert "kept the fleet CA" in printed
    assert second["pos-api/S001.key"] != first["pos-api/S001.key"]  # a new one every run
    x509.load_pem_x509_certificate(second["pos-api/S001.crt"]).verify_directly_issued_by(
        x509.load_pem_x509_certificate(second["ca/ca.crt"]))
    assert "api" not in _snippet(out, "S002")
    assert f"note: {out / 'pos-api' / 'S002.crt'} belongs to nothing" in printed
    assert f"note: {out / 'pos-api' / 'S002.key'} belongs to nothing" in printed


def test_a_bad_api_host_is_refused_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, FLEET.replace("127.0.0.1", "pos s001"), out) == 2
    err = capsys.readouterr().err
    assert "stores[0].api_host = 'pos s001'" in err and "nothing was written" in err
    assert not out.exists()


HQ_FLEET = FLEET.replace('username = "membergate-hub"\n',
                         'username = "membergate-hub"\napi_host = "127.0.0.1"\n')


def _hub_api(out: Path) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(
        (out / "hub" / "broker.toml").read_text(encoding="utf-8"))["api"]
    return table


async def test_the_hq_api_gets_a_certificate_and_a_token_and_serves_hq_over_https(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, HQ_FLEET, out) == 0
    printed = capsys.readouterr().out
    assert stat.S_IMODE((out / "hub" / "hq-api.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out / "hub" / "hq-api.crt").read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((out / "ca" / "ca.crt")
                                                                   .read_bytes()))
    table = _hub_api(out)
    api = HubConfig.model_validate({"api": table}).api
    assert api.scheme == "https" and api.host == "0.0.0.0" and len(api.token or "") >= 32
    assert api.tls_cert_file == Path("/etc/membergate/hq-api.crt")
    assert "made the HQ API token" in printed

    # As installed on the hub: the files at the snippet's paths (here under out/), loopback.
    table |= {"host": "127.0.0.1", "port": 0, "tls_cert_file": str(out / "hub" / "hq-api.crt"),
              "tls_key_file": str(out / "hub" / "hq-api.key")}
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0},
        "broker": {"embedded_port": 0}, "api": table})
    async with Hub(cfg) as hub, serving(hub_api_server(hub)) as port, \
            httpx.AsyncClient(verify=_trusting(out)) as c:
        url = f"https://127.0.0.1:{port}/v1/status"
        assert (await c.get(url)).status_code == 401  # the token is still needed
        r = await c.get(url, headers={"Authorization": f"Bearer {table['token']}"})
        assert r.status_code == 200 and "stores" in r.json()


def test_provisioning_again_keeps_the_hq_token_unless_rotated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, HQ_FLEET, out) == 0
    first = _hub_api(out)["token"]
    assert run_cli(tmp_path, HQ_FLEET, out, "--force") == 0
    assert _hub_api(out)["token"] == first
    assert "kept the HQ API token" in capsys.readouterr().out
    assert run_cli(tmp_path, HQ_FLEET, out, "--force", "--rotate") == 0
    assert _hub_api(out)["token"] != first
    capsys.readouterr()
    assert run_cli(tmp_path, FLEET, out, "--force") == 0  # no api_host for the hub any more
    assert "api" not in tomllib.loads((out / "hub" / "broker.toml").read_text(encoding="utf-8"))
    assert f"note: {out / 'hub' / 'hq-api.crt'} belongs to nothing" in capsys.readouterr().out
