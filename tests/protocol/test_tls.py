"""MqttClient over TLS against a real Mosquitto with a TLS-only listener, and the client
context's checks (``protocol.tls``). Certificates come from ``provisioning.certs``, as a fleet's
would; ``test_broker.py`` covers the provisioned files end to end.

Timeouts here are safety limits only; nothing asserts that anything is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol.mqtt import MqttClient, MqttNotConnected
from protocol.tls import TlsError, TlsSettings, client_context
from provisioning import certs
from tests.protocol.test_mqtt import LIMIT, receive, wait_until
from tests.support.mosquitto import MOSQUITTO, Mosquitto

REFUSED_WITHIN = 1.5  # how long a refused client is given to (wrongly) connect


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


def write_pki(d: Path, host: str, name: str = "test fleet CA") -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca = certs.new_ca(name)
    server = certs.server_cert(ca, host)
    pki = Pki(d / "ca.crt", d / "server.crt", d / "server.key")
    pki.ca.write_bytes(ca.cert_pem)
    pki.cert.write_bytes(server.cert_pem)
    pki.key.write_bytes(server.key_pem)
    return pki


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Pki]]:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"{MOSQUITTO} not installed")
    pki = write_pki(tmp_path / "pki", "127.0.0.1")
    with Mosquitto(tmp_path / "mosquitto", tls=(pki.ca, pki.cert, pki.key)) as broker:
        yield broker, pki


def client(host: str, port: int, name: str, ca: Path | None, **kwargs: object) -> MqttClient:
    context = client_context(TlsSettings(ca_file=ca)) if ca is not None else None
    return MqttClient(host, port, client_id=f"{name}-{uuid.uuid4().hex[:8]}", tls=context,
                      reconnect_min=0.05, reconnect_max=0.5, **kwargs)  # type: ignore[arg-type]


async def test_large_and_many_messages_cross_a_tls_connection_intact(
        tls_broker: tuple[Mosquitto, Pki]) -> None:
    broker, pki = tls_broker
    # Sizes around TLS's 16 KiB records and far beyond, so messages straddle records.
    sizes = [0, 1, 16_383, 16_384, 16_385, 100_000, 600_000, *range(1, 4000, 97)]
    payloads = [os.urandom(n) for n in sizes]
    async with client(broker.host, broker.port, "sub", pki.ca) as sub, \
            client(broker.host, broker.port, "pub", pki.ca) as pub:
        await sub.wait_connected(LIMIT)
        await sub.subscribe("t/tls/#")
        await pub.wait_connected(LIMIT)
        for i, payload in enumerate(payloads):
            await pub.publish(f"t/tls/{i}", payload, timeout=LIMIT)
        got = await receive(sub, len(payloads))
    assert [(m.topic, m.payload) for m in got] == [
        (f"t/tls/{i}", p) for i, p in enumerate(payloads)]


async def test_a_slow_consumer_over_tls_gets_backpressure_not_loss(
        tls_broker: tuple[Mosquitto, Pki]) -> None:
    broker, pki = tls_broker
    sub = client(broker.host, broker.port, "slow", pki.ca, max_queued_incoming=3)
    async with sub, client(broker.host, broker.port, "pub", pki.ca) as pub:
        await sub.wait_connected(LIMIT)
        await sub.subscribe("t/flood")
        await pub.wait_connected(LIMIT)
        for i in range(200):
            await pub.publish("t/flood", str(i).encode(), timeout=LIMIT)
        await wait_until(lambda: sub.queued_incoming >= 3)
        got = await receive(sub, 200)
    assert [m.payload for m in got] == [str(i).encode() for i in range(200)]


def _publish_packet(topic: str, payload: bytes) -> bytes:
    body = struct.pack(">H", len(topic)) + topic.encode() + payload  # QoS 0: no packet id
    assert len(body) < 128
    return bytes([0x30, len(body)]) + body


async def test_messages_sharing_a_tls_record_are_all_read_across_pauses(
        tmp_path: Path) -> None:
    """Mosquitto writes each packet in a TLS record of its own; other brokers put many small
    packets into one. paho reads a packet at a time, so the rest of such a record waits,
    decrypted, inside the SSL object, where the socket's readiness never announces it: the
    client must read on while bytes are pending, and again when a paused reader resumes. This
    broker sends 60 messages in one write (one record) and then nothing at all."""
    pki = write_pki(tmp_path, "127.0.0.1")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki.cert, pki.key)
    burst = b"".join(_publish_packet("t/burst", str(i).encode()) for i in range(60))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)  # CONNECT's fixed header (its length fits in one byte)
        writer.write(b"\x20\x02\x00\x00" + burst)  # CONNACK accepted, then the burst
        with contextlib.suppress(ConnectionError):
            await reader.read()  # hold the connection open, silent, until the client leaves
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        sub = client("127.0.0.1", port, "burst", pki.ca, max_queued_incoming=3,
                     keepalive=60)  # no PINGRESP comes to wake the reader within the limit
        async with sub:
            await sub.wait_connected(LIMIT)
            got = await receive(sub, 60)
    finally:
        server.close()
    assert [m.payload for m in got] == [str(i).encode() for i in range(60)]


async def never_connects(c: MqttClient) -> None:
    async with c:
        with pytest.raises(MqttNotConnected):
            await c.wait_connected(REFUSED_WITHIN)


async def test_a_broker_signed_by_another_ca_is_refused(
        tls_broker: tuple[Mosquitto, Pki], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    broker, _ = tls_broker
    other = write_pki(tmp_path / "other", "127.0.0.1", "somebody else's CA")
    with caplog.at_level(logging.INFO, logger="protocol.mqtt"):
        await never_connects(client(broker.host, broker.port, "mitm", other.ca))
    assert "certificate verify failed" in caplog.text


async def test_a_broker_whose_certificate_names_another_host_is_refused(
        tls_broker: tuple[Mosquitto, Pki], caplog: pytest.LogCaptureFixture) -> None:
    broker, pki = tls_broker
    # The certificate is for 127.0.0.1; "localhost" reaches the same listener by another name.
    with caplog.at_level(logging.INFO, logger="protocol.mqtt"):
        await never_connects(client("localhost", broker.port, "byname", pki.ca))
    assert "certificate verify failed" in caplog.text
    assert "localhost" in caplog.text


async def test_plain_mqtt_to_a_tls_listener_never_connects(
        tls_broker: tuple[Mosquitto, Pki]) -> None:
    broker, _ = tls_broker
    await never_connects(client(broker.host, broker.port, "plain", None))


def test_the_context_verifies_and_refuses_old_protocols(tmp_path: Path) -> None:
    pki = write_pki(tmp_path, "hub.example")
    context = client_context(TlsSettings(ca_file=pki.ca))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    system = client_context(TlsSettings())  # a broker with a public certificate
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    assert system.minimum_version == ssl.TLSVersion.TLSv1_2
    # Only the fleet's CA: not the system's.
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("organizationName", "membergate"),), (("commonName", "test fleet CA"),))]


def test_unusable_tls_files_are_named_in_the_error(tmp_path: Path) -> None:
    pki = write_pki(tmp_path, "hub.example")
    with pytest.raises(TlsError, match=r"ca_file .*missing\.crt: no such file"):
        client_context(TlsSettings(ca_file=tmp_path / "missing.crt"))
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"junk\.crt: not a PEM certificate"):
        client_context(TlsSettings(ca_file=tmp_path / "junk.crt"))
    # A client certificate with a key that is not its own.
    other = write_pki(tmp_path / "other", "hub.example")
    with pytest.raises(TlsError, match="not a certificate and key that belong together"):
        client_context(TlsSettings(ca_file=pki.ca, cert_file=pki.cert, key_file=other.key))
    with pytest.raises(ValidationError, match="key_file is given without cert_file"):
        TlsSettings(key_file=pki.key)
    # The matching pair is taken.
    client_context(TlsSettings(ca_file=pki.ca, cert_file=pki.cert, key_file=pki.key))


async def test_connect_to_tls_broker_survives_broker_restart(
        tls_broker: tuple[Mosquitto, Pki]) -> None:
    broker, pki = tls_broker
    async with client(broker.host, broker.port, "sub", pki.ca) as sub, \
            client(broker.host, broker.port, "pub", pki.ca) as pub:
        await sub.wait_connected(LIMIT)
        await sub.subscribe("t/again")
        broker.kill()
        await wait_until(lambda: not sub.is_connected)
        broker.start()
        await sub.wait_connected(LIMIT)
        await pub.wait_connected(LIMIT)
        assert sub.reconnects == 1  # connected is set only once the subscription is made again
        await pub.publish("t/again", b"after restart", timeout=LIMIT)
        got = await receive(sub, 1)
    assert got[0].payload == b"after restart"


# -- the commands: an unusable TLS file stops the start, named, and the process ends ---------

START_LIMIT = 60  # seconds: a process that hangs instead of exiting fails here


def _command(tmp_path: Path, module: str, config: str, *args: str
             ) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{module}.toml"
    path.write_text(config, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", module, "--config", str(path), "run", *args],
                          capture_output=True, text=True, timeout=START_LIMIT, cwd=tmp_path,
                          check=False)


@pytest.mark.parametrize("module", ["edge.cli", "hub.cli"])
def test_a_missing_ca_file_stops_the_start_with_the_setting_named(
        tmp_path: Path, module: str) -> None:
    missing = tmp_path / "nowhere" / "ca.crt"
    if module == "edge.cli":
        config = (f'[store]\nstore_id = "S001"\n[sync]\nbroker_host = "127.0.0.1"\n'
                  f'[sync.tls]\nca_file = "{missing}"\n')
        done = _command(tmp_path, module, config, "--db", str(tmp_path / "edge.db"),
                        "--port", "0", "--seconds", "30")
    else:
        config = (f'[hub]\ndatabase = "{tmp_path / "hub.db"}"\ndata_dir = "{tmp_path}"\n'
                  f'[broker]\nhost = "127.0.0.1"\n[broker.tls]\nca_file = "{missing}"\n')
        done = _command(tmp_path, module, config, "--seconds", "30")
    assert done.returncode == 2, done.stderr
    assert f"cannot start: tls.ca_file {missing}: no such file" in done.stderr
    assert "Traceback" not in done.stderr
