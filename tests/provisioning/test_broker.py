"""``membergate-provision broker`` against a real Mosquitto running the files it generated.

Each broker test starts a private Mosquitto on a free port whose whole configuration (listener,
``allow_anonymous false``, ``password_file``, ``acl_file``, ``use_username_as_clientid``) comes
from the generated ``membergate.conf``, included as an engineer would (``include_dir``).

Mosquitto accepts an unauthorised PUBLISH from an MQTT 3.1.1 client (PUBACK) and drops it, and
grants any SUBSCRIBE, filtering each message by the ACL. So "not delivered" is shown by order,
not by waiting: Mosquitto queues a PUBLISH to its subscribers before it answers it, and keeps the
order of one subscriber's messages. When a message sent *after* the forbidden one arrives first,
the forbidden one was dropped. A short quiet period afterwards only adds to that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import stat
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from paho.mqtt.client import Client, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

from edge import demo
from edge.config import EdgeConfig
from edge.errors import EdgeError
from edge.gateway import open_gateway
from edge.service import EdgeService
from hub.app import Hub
from hub.config import HubConfig
from protocol import signing, topics
from protocol.campaigns import CampaignBundle
from protocol.codec import DEFAULT_MAX_BYTES
from protocol.ids import uuid7
from protocol.mqtt import Message, MqttClient, MqttNotConnected, MqttSubscribeError
from protocol.sync import RpcRequest
from protocol.tls import TlsSettings, client_context
from provisioning import broker as provision
from provisioning import certs
from tests.edge.conftest import make_config, register, sell
from tests.hub.test_sync_e2e import wait_for
from tests.support.mosquitto import MOSQUITTO, Mosquitto, free_port

LIMIT = 10.0  # seconds: a safety net against hangs, never a performance claim
QUIET = 0.3  # after the ordered proof, how long nothing more may arrive
S003_PASSWORD = 'kept pass #1 "quoted" \\ ü'  # given in the fleet file, odd characters on purpose

FLEET = """
[broker]
host = "127.0.0.1"
port = {port}
bind = "127.0.0.1"
config_dir = "{config_dir}"

[hub]
username = "membergate-hub"

[[stores]]
store_id = "S001"
region = "east"
name = "Nanjing Road"

[[stores]]
store_id = "S002"
region = "west"
username = "store-S002"     # the username need not be the store id

[[stores]]
store_id = "S003"
region = "east"
password = {s003_password}
"""


def fleet_text(port: int = 1883, config_dir: str = "/etc/mosquitto/membergate",
               ca_path: str | None = None) -> str:
    """The fleet above; with ``ca_path`` its broker speaks TLS and the boxes keep the CA
    certificate there."""
    text = FLEET.format(port=port, config_dir=config_dir,
                        s003_password=provision._toml_str(S003_PASSWORD))
    if ca_path is not None:
        text = text.replace("[hub]", f'tls = true\nca_path = "{ca_path}"\n\n[hub]', 1)
    return text


def tls_fleet_text(ca_path: str = "/etc/membergate/broker-ca.crt") -> str:
    """The fleet with TLS and no port: the listener takes 8883."""
    return re.sub(r"\nport = \d+\n", "\n", fleet_text(ca_path=ca_path))


@dataclass
class Login:
    username: str
    password: str


@dataclass
class Provisioned:
    out: Path
    hub: Login
    stores: dict[str, Login]
    hub_broker: dict[str, Any]  # the [broker] table of hub/broker.toml
    sync: dict[str, dict[str, Any]]  # store id -> the [sync] table of stores/<id>.toml

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The client context the hub's snippet asks for (None: plain MQTT)."""
        table = self.hub_broker.get("tls")
        return client_context(TlsSettings.model_validate(table)) if table else None


def run_cli(tmp_path: Path, fleet: str, out: Path, *extra: str) -> int:
    path = tmp_path / "fleet.toml"
    path.write_text(fleet, encoding="utf-8")
    return provision.main(["broker", "--fleet", str(path), "--out", str(out), *extra])


def read_out(out: Path) -> Provisioned:
    hub = tomllib.loads((out / "hub" / "broker.toml").read_text(encoding="utf-8"))["broker"]
    sync = {p.stem: tomllib.loads(p.read_text(encoding="utf-8"))["sync"]
            for p in sorted((out / "stores").glob("*.toml"))}
    return Provisioned(out=out, hub=Login(hub["username"], hub["password"]),
                       stores={s: Login(v["username"], v["password"]) for s, v in sync.items()},
                       hub_broker=hub, sync=sync)


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


# -- the files ---------------------------------------------------------------------------------


def test_writes_the_broker_files_and_one_secret_file_per_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, fleet_text(), out) == 0
    printed = capsys.readouterr().out
    got = read_out(out)

    assert set(got.stores) == {"S001", "S002", "S003"}
    for path in [out / "broker" / "passwd", out / "broker" / "acl", out / "hub" / "broker.toml",
                 *(out / "stores" / f"{s}.toml" for s in got.stores)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert str(path) in printed, path
    assert str(out / "broker" / "membergate.conf") in printed

    # Passwords: generated ones are long, random and distinct; a given one is kept as given.
    logins = [got.hub, *got.stores.values()]
    assert [x.username for x in logins] == ["membergate-hub", "S001", "store-S002", "S003"]
    assert got.stores["S003"].password == S003_PASSWORD
    generated = [x.password for x in logins if x.password != S003_PASSWORD]
    assert len(set(generated)) == 3 and all(len(p) >= 32 for p in generated)

    # Each store's file holds its own password and nobody else's.
    for store_id in got.stores:
        text = (out / "stores" / f"{store_id}.toml").read_text(encoding="utf-8")
        others = [x for x in logins if x != got.stores[store_id]]
        assert not any(x.password in text for x in others), store_id

    # The snippets use the key names the edge and hub configurations take.
    for store_id, sync in got.sync.items():
        cfg = EdgeConfig.model_validate({"store": {"store_id": store_id}, "sync": sync})
        assert cfg.sync.username == got.stores[store_id].username
        assert (cfg.sync.broker_host, cfg.sync.broker_port) == ("127.0.0.1", 1883)
    hub_cfg = HubConfig.model_validate({"broker": got.hub_broker})
    assert (hub_cfg.broker.username, hub_cfg.broker.password) == (got.hub.username,
                                                                   got.hub.password)

    # mosquitto_passwd hashed every login; no password is in the clear.
    passwd = (out / "broker" / "passwd").read_text()
    assert [line.split(":")[0] for line in passwd.splitlines()] == [x.username for x in logins]
    assert all(re.match(r"^[^:]+:\$7\$", line) for line in passwd.splitlines())
    assert not any(x.password in passwd for x in logins)

    # One user block per login; no pattern lines.
    acl = (out / "broker" / "acl").read_text()
    assert "pattern" not in re.sub(r"#.*", "", acl)
    assert ("\nuser store-S002\ntopic write mg/v1/store/S002/up/events\n"
            "topic write mg/v1/store/S002/up/status\n") in acl
    assert "store/S002/up/#" not in acl  # the exact uplink topics, not the subtree
    conf = (out / "broker" / "membergate.conf").read_text()
    for line in ["listener 1883 127.0.0.1", "allow_anonymous false",
                 "password_file /etc/mosquitto/membergate/passwd",
                 "acl_file /etc/mosquitto/membergate/acl", "use_username_as_clientid true"]:
        assert f"\n{line}\n" in conf


BAD_STORES = {
    "duplicate store id": ('[[stores]]\nstore_id = "S001"\nregion = "east"\n'
                           '[[stores]]\nstore_id = "S001"\nregion = "west"\n',
                           "'S001' is already stores[0]"),
    "same id but for case": ('[[stores]]\nstore_id = "S001"\nregion = "east"\n'
                             '[[stores]]\nstore_id = "s001"\nregion = "east"\n',
                             "'s001' is already stores[0]"),
    "id with a slash": ('[[stores]]\nstore_id = "S/1"\nregion = "east"\n', "stores[0].store_id"),
    "id with a wildcard": ('[[stores]]\nstore_id = "+"\nregion = "east"\n', "stores[0].store_id"),
    "id too long": (f'[[stores]]\nstore_id = "{"S" * 33}"\nregion = "east"\n',
                    "stores[0].store_id"),
    "region with a wildcard": ('[[stores]]\nstore_id = "S001"\nregion = "#"\n',
                               "stores[0].region"),
    "no region": ('[[stores]]\nstore_id = "S001"\n', "stores[0].region"),
    "a misspelt key": ('[[stores]]\nstore_id = "S001"\nregoin = "east"\n', "stores[0].regoin"),
    "username of the hub": ('[[stores]]\nstore_id = "S001"\nregion = "e"\nusername = "hub"\n',
                            "username 'hub' is already used by the hub"),
    "username of another store": ('[[stores]]\nstore_id = "S001"\nregion = "e"\n'
                                  '[[stores]]\nstore_id = "S002"\nregion = "e"\n'
                                  'username = "S001"\n',
                                  "username 'S001' is already used by store S001"),
    "password with a colon": ('[[stores]]\nstore_id = "S001"\nregion = "e"\n'
                              'password = "long enough but a : colon"\n', "cannot contain ':'"),
    "short password": ('[[stores]]\nstore_id = "S001"\nregion = "e"\npassword = "short"\n',
                       "16 to 128 characters"),
    "newline in a name": ('[[stores]]\nstore_id = "S001"\nregion = "e"\n'
                          'name = "x\\nuser evil\\ntopic readwrite #"\n', "stores[0].name"),
    "no stores": ("", "stores: Field required"),
    "not TOML": ("[[stores]\n", "is not valid TOML"),
}


@pytest.mark.parametrize("case", list(BAD_STORES))
def test_a_bad_fleet_file_is_refused_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    stores, expected = BAD_STORES[case]
    out = tmp_path / "out"
    assert run_cli(tmp_path, f'[hub]\nusername = "hub"\n{stores}', out) == 2
    err = capsys.readouterr().err
    assert expected in err and "nothing was written" in err
    assert "enough but a" not in err  # a password is never echoed
    assert not out.exists()


def test_an_out_dir_with_files_is_refused_unless_forced_and_force_keeps_passwords(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_cli(tmp_path, fleet_text(), out) == 2
    assert "already holds files; use --force" in capsys.readouterr().err
    assert files_under(out) == {"notes.txt": b"mine"}

    assert run_cli(tmp_path, fleet_text(), out, "--force") == 0
    first = read_out(out)
    # Adding a store and running again: the logins already issued keep their passwords.
    more = fleet_text() + '[[stores]]\nstore_id = "S004"\nregion = "west"\n'
    assert run_cli(tmp_path, more, out, "--force") == 0
    assert "kept the passwords already issued to membergate-hub, S001, store-S002" in \
        capsys.readouterr().out
    second = read_out(out)
    assert {k: v for k, v in second.stores.items() if k != "S004"} == first.stores
    assert second.hub == first.hub and "S004" in second.stores
    # --rotate: new ones, except the one the fleet file gives.
    assert run_cli(tmp_path, fleet_text(), out, "--force", "--rotate") == 0
    printed = capsys.readouterr().out
    assert "S004.toml is not in this fleet any more" in printed
    third = read_out(out)
    assert third.hub.password != first.hub.password
    assert third.stores["S001"].password != first.stores["S001"].password
    assert third.stores["S003"].password == S003_PASSWORD
    assert (out / "notes.txt").read_text() == "mine"


def test_without_mosquitto_passwd_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, fleet_text(), out, "--mosquitto-passwd", "/nonexistent/mp") == 1
    assert "mosquitto_passwd not found" in capsys.readouterr().err
    assert not out.exists()


# -- TLS: the fleet's CA and the broker's certificate ------------------------------------------


def test_with_tls_the_broker_gets_a_certificate_from_the_fleets_ca_and_the_boxes_its_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, tls_fleet_text(), out) == 0
    printed = capsys.readouterr().out
    modes = {"ca/ca.key": 0o600, "ca/ca.crt": 0o644, "broker/server.key": 0o600,
             "broker/server.crt": 0o644, "broker/ca.crt": 0o644}
    for name, mode in modes.items():
        assert stat.S_IMODE((out / name).stat().st_mode) == mode, name
    assert (out / "broker" / "ca.crt").read_bytes() == (out / "ca" / "ca.crt").read_bytes()
    assert "made the fleet CA" in printed
    assert f"copy {out / 'ca' / 'ca.crt'} to /etc/membergate/broker-ca.crt" in printed

    # The server certificate names the host the boxes dial and was signed by the fleet's CA.
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "broker" / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert not ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length

    # The listener speaks TLS on 8883 (no port given); hub and stores dial 8883 with the CA.
    conf = (out / "broker" / "membergate.conf").read_text()
    d = "/etc/mosquitto/membergate"
    for line in ["listener 8883 127.0.0.1", f"cafile {d}/ca.crt", f"certfile {d}/server.crt",
                 f"keyfile {d}/server.key", "tls_version tlsv1.2"]:
        assert f"\n{line}\n" in conf
    assert "clear text" not in conf
    got = read_out(out)
    for store_id, sync in got.sync.items():
        cfg = EdgeConfig.model_validate({"store": {"store_id": store_id}, "sync": sync})
        assert cfg.sync.broker_port == 8883
        assert cfg.sync.tls == TlsSettings(ca_file=Path("/etc/membergate/broker-ca.crt"))
    hub_cfg = HubConfig.model_validate({"broker": got.hub_broker})
    assert hub_cfg.broker.port == 8883 and hub_cfg.broker.tls is not None
    # Nothing secret of the CA's went to a box.
    key = (out / "ca" / "ca.key").read_text()
    for path in [out / "hub" / "broker.toml", *(out / "stores").glob("*")]:
        assert "PRIVATE KEY" not in path.read_text(), path
    assert key not in (out / "broker" / "server.key").read_text()


def test_provisioning_again_keeps_the_ca_and_reissues_the_server_certificate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, tls_fleet_text(), out) == 0
    first = files_under(out)
    moved = tls_fleet_text().replace('host = "127.0.0.1"', 'host = "mqtt.example.internal"')
    assert run_cli(tmp_path, moved, out, "--force") == 0
    assert "kept the fleet CA" in capsys.readouterr().out
    second = files_under(out)
    for name in ("ca/ca.crt", "ca/ca.key", "broker/ca.crt"):
        assert second[name] == first[name], name  # the boxes need nothing new
    server = x509.load_pem_x509_certificate(second["broker/server.crt"])
    assert server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == ["mqtt.example.internal"]
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(second["ca/ca.crt"]))
    assert second["broker/server.key"] != first["broker/server.key"]


def test_an_unusable_kept_ca_stops_provisioning_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(tmp_path, tls_fleet_text(), out) == 0
    (out / "ca" / "ca.key").write_bytes(certs.new_ca("another").key_pem)  # not the cert's key
    before = files_under(out)
    assert run_cli(tmp_path, tls_fleet_text(), out, "--force", "--rotate") == 2
    err = capsys.readouterr().err
    assert "holds a CA that cannot be used" in err and "nothing was written" in err
    assert files_under(out) == before


def test_tls_without_a_host_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    text = '[broker]\ntls = true\n[hub]\nusername = "hub"\n' \
           '[[stores]]\nstore_id = "S001"\nregion = "east"\n'
    assert run_cli(tmp_path, text, out) == 2
    assert "tls = true needs host" in capsys.readouterr().err
    assert not out.exists()


# -- a real Mosquitto running the generated files ------------------------------------------------


@pytest.fixture(params=[False], ids=["plain"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path
          ) -> Iterator[tuple[Provisioned, Mosquitto]]:
    """The fleet provisioned and its broker running; ``True`` as the (indirect) parameter
    provisions it with TLS."""
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"{MOSQUITTO} not installed")
    out = tmp_path / "out"
    port = free_port()
    ca_path = str(out / "ca" / "ca.crt") if request.param else None
    assert run_cli(tmp_path, fleet_text(port, str(out / "broker"), ca_path), out) == 0
    with Mosquitto(tmp_path / "mosquitto", port=port, include_dir=out / "broker") as broker:
        yield read_out(out), broker


class Peer:
    """One login on the broker: a connected MqttClient and what it receives, in order."""

    def __init__(self, broker: Mosquitto, login: Login, client_id: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.client = MqttClient(broker.host, broker.port,
                                 client_id=client_id or f"test-{login.username}",
                                 username=login.username, password=login.password,
                                 clean_session=True, tls=tls)
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Peer:
        await self.client.__aenter__()
        await self.client.wait_connected(LIMIT)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _collect(self) -> None:
        async for message in self.client.messages():
            self.inbox.put_nowait(message)

    async def subscribe(self, *filters: str) -> None:
        for topic_filter in filters:
            # Mosquitto 2.0 grants the SUBSCRIBE and filters each message by the ACL; a broker
            # that refuses it outright is just as good here.
            with contextlib.suppress(MqttSubscribeError):
                await self.client.subscribe(topic_filter, qos=1)

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain, timeout=LIMIT)

    async def take(self, count: int) -> list[tuple[str, bytes]]:
        got = []
        for _ in range(count):
            m = await asyncio.wait_for(self.inbox.get(), LIMIT)
            got.append((m.topic, m.payload))
        return got

    async def quiet(self) -> list[tuple[str, bytes]]:
        await asyncio.sleep(QUIET)
        got = []
        while not self.inbox.empty():
            m = self.inbox.get_nowait()
            got.append((m.topic, m.payload))
        return got


BOTH = pytest.mark.parametrize("fleet", [False, True], ids=["plain", "tls"], indirect=True)


@BOTH
async def test_a_store_publishes_its_own_uplink_and_the_hub_receives_it(
        fleet: tuple[Provisioned, Mosquitto]) -> None:
    p, broker = fleet
    async with Peer(broker, p.hub, tls=p.tls) as hub, \
            Peer(broker, p.stores["S001"], tls=p.tls) as s1:
        await hub.subscribe(topics.HUB_UPLINK)
        for topic in provision.store_publishes("S001"):
            await s1.publish(topic, b"from S001")
        sent = provision.store_publishes("S001")
        assert await hub.take(len(sent)) == [(t, b"from S001") for t in sent]


async def test_a_store_writes_only_its_uplink_topics_and_nothing_oversized(
        fleet: tuple[Provisioned, Mosquitto]) -> None:
    """Nothing parked under a store's up/ beyond the topics it publishes (a retained
    message there would reach the hub on every reconnect), and nothing larger than the hub
    takes gets past the broker."""
    p, broker = fleet
    async with Peer(broker, p.hub) as hub:
        await hub.subscribe(topics.HUB_UPLINK)
        async with Peer(broker, p.stores["S001"]) as s1:
            await s1.publish(f"{topics.PREFIX}/store/S001/up/junk", b"parked", retain=True)
            await s1.publish(topics.events("S001"), b"x" * (DEFAULT_MAX_BYTES + 1))
            await s1.publish(topics.events("S001"), b"after")
        assert await hub.take(1) == [(topics.events("S001"), b"after")]
        assert await hub.quiet() == []
    # A new subscription (the hub after a restart) is handed nothing retained from the store.
    async with Peer(broker, p.hub) as again:
        await again.subscribe(topics.HUB_UPLINK)
        assert await again.quiet() == []
    assert f"message_size_limit {DEFAULT_MAX_BYTES}" in (p.out / "broker" / "membergate.conf"
                                                         ).read_text()


async def test_a_store_cannot_publish_on_another_stores_uplink(
        fleet: tuple[Provisioned, Mosquitto]) -> None:
    p, broker = fleet
    async with Peer(broker, p.hub) as hub:
        await hub.subscribe(topics.HUB_UPLINK)
        async with Peer(broker, p.stores["S001"]) as s1:
            for topic in provision.store_publishes("S002"):
                await s1.publish(topic, b"forged by S001")  # PUBACKed (3.1.1), then dropped
            await s1.publish(topics.events("S001"), b"after the forgeries")
        # Sent after the forgeries by the same connection: had one got through, it came first.
        assert await hub.take(1) == [(topics.events("S001"), b"after the forgeries")]
        # The topic itself is deliverable: with S002's own login the same publish arrives.
        async with Peer(broker, p.stores["S002"]) as s2:
            await s2.publish(topics.events("S002"), b"from S002")
        assert await hub.take(1) == [(topics.events("S002"), b"from S002")]
        assert await hub.quiet() == []


DOWNLINK = (topics.ack, topics.directory_page, topics.rpc_reply, topics.store_campaigns)


@pytest.mark.parametrize("style", ["wildcard", "explicit"])
async def test_a_store_does_not_receive_another_stores_downlink(
        fleet: tuple[Provisioned, Mosquitto], style: str) -> None:
    p, broker = fleet
    async with Peer(broker, p.hub) as hub, Peer(broker, p.stores["S001"]) as s1, \
            Peer(broker, p.stores["S002"]) as s2:
        if style == "wildcard":
            await s1.subscribe(f"{topics.PREFIX}/store/+/down/#")
        else:
            await s1.subscribe(*(down("S002") for down in DOWNLINK), topics.ack("S001"),
                               topics.directory_page("S001"), topics.rpc_reply("S001"),
                               topics.store_campaigns("S001"))
        await s2.subscribe(f"{topics.PREFIX}/store/S002/down/#")
        for store_id in ("S002", "S001"):  # S002's first: S001 gets its own after them
            for down in DOWNLINK:
                retain = down in (topics.ack, topics.store_campaigns)  # as the hub does
                await hub.publish(down(store_id), f"for {store_id}".encode(), retain=retain)
        assert await s1.take(4) == [(down("S001"), b"for S001") for down in DOWNLINK]
        assert await s2.take(4) == [(down("S002"), b"for S002") for down in DOWNLINK]
        assert await s1.quiet() == [] and await s2.quiet() == []

    # Retained: a new subscription is not handed S002's retained ack or campaigns either. S002's
    # subtree is subscribed first, so its retained messages would be queued before S001's own.
    async with Peer(broker, p.stores["S001"]) as s1:
        await s1.subscribe(f"{topics.PREFIX}/store/S002/down/#",
                           f"{topics.PREFIX}/store/S001/down/#")
        first = await s1.take(1) + await s1.quiet()
        assert sorted(first) == [(topics.ack("S001"), b"for S001"),
                                 (topics.store_campaigns("S001"), b"for S001")]


@pytest.mark.parametrize("style", ["wildcard", "explicit"])
async def test_a_store_receives_fleet_and_its_regions_campaigns_but_no_other_region(
        fleet: tuple[Provisioned, Mosquitto], style: str) -> None:
    p, broker = fleet
    filters = ([f"{topics.PREFIX}/fleet/#", f"{topics.PREFIX}/region/+/campaigns"]
               if style == "wildcard" else
               [topics.FLEET_CAMPAIGNS, topics.FLEET_DIRECTORY, topics.region_campaigns("east"),
                topics.region_campaigns("west")])
    west, east = topics.region_campaigns("west"), topics.region_campaigns("east")
    async with Peer(broker, p.hub) as hub, Peer(broker, p.stores["S001"]) as s1, \
            Peer(broker, p.stores["S002"]) as s2, Peer(broker, p.stores["S003"]) as s3:
        for peer in (s1, s2, s3):
            await peer.subscribe(*filters)
        await hub.publish(west, b"west v1", retain=True)
        await hub.publish(east, b"east v1", retain=True)
        await hub.publish(topics.FLEET_CAMPAIGNS, b"fleet v1", retain=True)
        await hub.publish(topics.FLEET_DIRECTORY, b"head 7", retain=True)
        fleet_wide = [(topics.FLEET_CAMPAIGNS, b"fleet v1"), (topics.FLEET_DIRECTORY, b"head 7")]
        assert await s1.take(3) == [(east, b"east v1"), *fleet_wide]  # S001 is in the east
        assert await s3.take(3) == [(east, b"east v1"), *fleet_wide]  # so is S003
        assert await s2.take(3) == [(west, b"west v1"), *fleet_wide]  # S002 is in the west
        for peer in (s1, s2, s3):
            assert await peer.quiet() == []


async def test_a_store_cannot_publish_campaigns_acks_or_directory_notices(
        fleet: tuple[Provisioned, Mosquitto]) -> None:
    p, broker = fleet
    async with Peer(broker, p.hub) as hub, Peer(broker, p.stores["S001"]) as s1, \
            Peer(broker, p.stores["S002"]) as s2:
        await s1.subscribe(f"{topics.PREFIX}/store/S001/down/#", topics.FLEET_CAMPAIGNS,
                           topics.FLEET_DIRECTORY, topics.region_campaigns("east"))
        await s2.subscribe(f"{topics.PREFIX}/store/S002/down/#", topics.FLEET_CAMPAIGNS,
                           topics.region_campaigns("west"))
        # S001 may read all of these, so a forgery that got through would come back to it too.
        for topic in (topics.ack("S001"), topics.store_campaigns("S001"), topics.rpc_reply("S001"),
                      topics.FLEET_CAMPAIGNS, topics.FLEET_DIRECTORY,
                      topics.region_campaigns("east"), topics.region_campaigns("west"),
                      topics.ack("S002"), topics.store_campaigns("S002")):
            await s1.publish(topic, b"forged", retain=True)
        await hub.publish(topics.FLEET_CAMPAIGNS, b"signed by the hub", retain=True)
        assert await s1.take(1) == [(topics.FLEET_CAMPAIGNS, b"signed by the hub")]
        assert await s2.take(1) == [(topics.FLEET_CAMPAIGNS, b"signed by the hub")]
        assert await s1.quiet() == [] and await s2.quiet() == []


def connack(broker: Mosquitto, username: str | None, password: str | None) -> str:
    """The broker's answer to a CONNECT with these credentials (paho, MQTT 3.1.1)."""
    answers: list[str] = []
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}",
                    protocol=MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, rc, _p: answers.append(str(rc))
    client.connect(broker.host, broker.port, keepalive=10)
    deadline = time.monotonic() + LIMIT
    try:
        while not answers and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    finally:
        client.disconnect()
    return answers[0] if answers else "no answer"


def test_wrong_passwords_unknown_users_and_anonymous_are_refused_at_connect(
        fleet: tuple[Provisioned, Mosquitto]) -> None:
    p, broker = fleet
    s1, s2, s3 = p.stores["S001"], p.stores["S002"], p.stores["S003"]
    # The right credentials connect (so the refusals below are about the credentials) ...
    for login in (p.hub, s1, s2, s3):
        assert connack(broker, login.username, login.password) == "Success", login.username
    # ... and anything else does not.
    assert connack(broker, s1.username, s1.password + "x") == "Not authorized"
    assert connack(broker, s1.username, s2.password) == "Not authorized"  # another's password
    assert connack(broker, "S002", s2.password) == "Not authorized"  # S002 logs in as store-S002
    assert connack(broker, "intruder", s1.password) == "Not authorized"
    assert connack(broker, s1.username, None) == "Not authorized"
    assert connack(broker, None, None) == "Not authorized"  # anonymous


async def test_a_store_cannot_take_over_the_hubs_session_by_client_id(
        fleet: tuple[Provisioned, Mosquitto]) -> None:
    p, broker = fleet
    async with Peer(broker, p.hub, client_id="membergate-hub") as hub:
        await hub.subscribe(topics.HUB_UPLINK)
        # Without use_username_as_clientid this CONNECT would close the hub's connection.
        async with Peer(broker, p.stores["S001"], client_id="membergate-hub") as s1:
            await s1.publish(topics.events("S001"), b"hello")
            assert await hub.take(1) == [(topics.events("S001"), b"hello")]
        assert hub.client.is_connected and hub.client.reconnects == 0
    assert "membergate-hub already connected" not in broker.log_text()


@pytest.mark.parametrize("fleet", [True], ids=["tls"], indirect=True)
async def test_at_a_tls_broker_plain_clients_and_other_cas_are_refused(
        fleet: tuple[Provisioned, Mosquitto], tmp_path: Path) -> None:
    p, broker = fleet
    other = certs.new_ca("not the fleet's")
    (tmp_path / "other.crt").write_bytes(other.cert_pem)
    wrong_ca = client_context(TlsSettings(ca_file=tmp_path / "other.crt"))
    for tls in (None, wrong_ca):
        c = MqttClient(broker.host, broker.port, client_id="S001", username="S001",
                       password=p.stores["S001"].password, reconnect_min=0.05, tls=tls)
        async with c:
            with pytest.raises(MqttNotConnected):
                await c.wait_connected(1.5)
    # The right login with the fleet's CA gets in (the same broker, the same moment).
    async with Peer(broker, p.stores["S001"], tls=p.tls):
        pass


# -- end to end: the hub and two stores through the ACL'd broker -------------------------------


@pytest.fixture
async def hub(tmp_path: Path, fleet: tuple[Provisioned, Mosquitto]) -> AsyncIterator[Hub]:
    p, _ = fleet
    cfg = HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub" / "hub.db"), "data_dir": str(tmp_path / "hub"),
                "validate_workers": 0},
        "broker": p.hub_broker,  # host, port, username and password as generated
    })
    async with Hub(cfg) as h:
        yield h


async def start_store(tmp_path: Path, p: Provisioned, store_id: str, number: int, region: str,
                      hub: Hub) -> EdgeService:
    (tmp_path / store_id).mkdir()
    cfg = make_config(tmp_path / store_id,
                      store={"store_id": store_id, "store_number": number, "region": region},
                      sync={**p.sync[store_id], "hub_public_key": signing.public_b64(hub.key),
                            "ack_timeout_s": 2.0})
    svc = await open_gateway(cfg)
    await svc.apply_bundle(demo.demo_bundle())
    return svc


@BOTH
async def test_end_to_end_a_hub_and_two_stores_sync_through_the_provisioned_broker(
        tmp_path: Path, fleet: tuple[Provisioned, Mosquitto], hub: Hub) -> None:
    p, broker = fleet
    a = await start_store(tmp_path, p, "S001", 1, "east", hub)
    b = await start_store(tmp_path, p, "S002", 2, "west", hub)
    try:
        # Uplink and acks: S001's events are merged and acknowledged, its outbox pruned.
        m = await register(a, "13700000001", card="04C0FFEE", name="王芳")
        mid = m["member_id"]
        for _ in range(3):
            await sell(a, [("A", "grocery", 2, 10_000)], member_id=mid)

        async def drained() -> bool:
            assert a.sync is not None
            s = await a.sync.status()
            return s.outbox_depth == 0 and s.acked_seq == s.last_seq > 0

        await wait_for(drained, "store S001 drained and acked")
        assert hub.pipeline.applied_events >= 4

        # Online lookup: S002 asks the hub on its rpc topic and gets the answer on its own.
        assert b.sync is not None
        await b.sync.mqtt.wait_connected(LIMIT)
        reply = await b.sync.rpc(RpcRequest(request_id=uuid7(), store_id="S002", kind="lookup",
                                            by="card_uid", value="04C0FFEE"), wait_s=LIMIT)
        assert reply.ok and reply.member is not None and reply.member.member_id == mid

        # Directory: the fleet notice, S002's page request and the page it is sent.
        async def b_has_points() -> bool:
            try:
                return bool((await b.member(mid))["points"] == 600)
            except EdgeError:  # not in S002's directory yet
                return False

        await wait_for(b_has_points, "S002 to hold the member's points from the directory")

        # Campaigns, signed and retained: fleet to both, a region's only to that region.
        issued = datetime(2026, 2, 1, tzinfo=UTC).isoformat()
        await hub.push_campaigns(CampaignBundle.model_validate(
            {"version": 1, "scope": "region", "scope_id": "east", "issued_at": issued}))
        await hub.push_campaigns(demo.demo_bundle().model_copy(update={"version": 2}))
        await hub.push_campaigns(CampaignBundle.model_validate(
            {"version": 1, "scope": "store", "scope_id": "S002", "issued_at": issued}))

        async def versions(svc: EdgeService) -> dict[str, int]:
            assert svc.sync is not None
            return (await svc.sync.status()).campaign_versions

        async def applied() -> bool:
            return (await versions(a) == {"fleet": 2, "region:east": 1}
                    and await versions(b) == {"fleet": 2, "store:S002": 1})

        await wait_for(applied, "the campaigns in the stores they are meant for")

        # Status went up from both stores; nothing was refused on either side.
        async def both_seen() -> bool:
            return {s["store_id"] for s in (await hub.status())["stores"]} == {"S001", "S002"}

        await wait_for(both_seen, "both stores' status at the hub")
        assert a.sync is not None and b.sync is not None
        assert hub.refusals.counts == {} and a.sync.refused == {} and b.sync.refused == {}
        assert "denied" not in broker.log_text().lower()
    finally:
        await a.close()
        await b.close()
