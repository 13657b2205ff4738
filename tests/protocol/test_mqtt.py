"""MqttClient against a real Mosquitto (private, free port), a scripted fake broker, and amqtt.

Timeouts here are safety limits only; nothing asserts that anything is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hub.sync.broker import EmbeddedBroker
from protocol.mqtt import (
    Message,
    MqttClient,
    MqttNotConnected,
    MqttPublishTimeout,
    backoff_delay,
)
from tests.support.mosquitto import Mosquitto, free_port, mosquitto_fixture  # noqa: F401

LIMIT = 10.0  # seconds; a safety net against hangs, never a performance claim


def new_client(port: int, name: str, **kwargs: object) -> MqttClient:
    return MqttClient("127.0.0.1", port, client_id=f"{name}-{uuid.uuid4().hex[:8]}",
                      reconnect_min=0.05, reconnect_max=0.5, **kwargs)  # type: ignore[arg-type]


async def receive(client: MqttClient, count: int) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(LIMIT), contextlib.aclosing(client.messages()) as stream:
        async for message in stream:
            got.append(message)
            if len(got) == count:
                break
    return got


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(LIMIT):
        while not predicate():  # noqa: ASYNC110 - polling plain state kept by the client
            await asyncio.sleep(0.01)


# -- against Mosquitto --------------------------------------------------------------------------


async def test_binary_roundtrip(mosquitto: Mosquitto) -> None:
    payloads = [bytes(range(256)), b"\x00", b"\xff\xfe\x00\x01" * 1000, b""]
    async with new_client(mosquitto.port, "sub") as sub, new_client(mosquitto.port, "pub") as pub:
        await sub.wait_connected(LIMIT)
        await sub.subscribe("t/bin/#", qos=1)
        await pub.wait_connected(LIMIT)
        for i, payload in enumerate(payloads):
            await pub.publish(f"t/bin/{i}", payload, qos=1, timeout=LIMIT)
        got = await receive(sub, len(payloads))
    assert [m.payload for m in got] == payloads
    assert [m.topic for m in got] == [f"t/bin/{i}" for i in range(len(payloads))]
    assert all(m.qos == 1 and not m.retain for m in got)
    assert pub.published == len(payloads)
    assert sub.received == len(payloads)


async def test_retained_message_reaches_late_subscriber(mosquitto: Mosquitto) -> None:
    async with new_client(mosquitto.port, "pub") as pub:
        await pub.wait_connected(LIMIT)
        await pub.publish("t/manifest", b"v1", retain=True, timeout=LIMIT)
    async with new_client(mosquitto.port, "late") as late:
        await late.wait_connected(LIMIT)
        await late.subscribe("t/manifest")
        [message] = await receive(late, 1)
    assert message == Message("t/manifest", b"v1", retain=True, qos=1)


async def test_publish_counts_acknowledged_messages(mosquitto: Mosquitto) -> None:
    async with new_client(mosquitto.port, "pub") as pub:
        await pub.wait_connected(LIMIT)
        await asyncio.gather(*(pub.publish("t/count", b"x", timeout=LIMIT) for _ in range(50)))
        await pub.publish("t/count", b"q0", qos=0, timeout=LIMIT)
        assert pub.published == 51


async def test_slow_consumer_gets_backpressure_not_loss(mosquitto: Mosquitto) -> None:
    sub = new_client(mosquitto.port, "slow", max_queued_incoming=5)
    async with sub, new_client(mosquitto.port, "pub") as pub:
        await sub.wait_connected(LIMIT)
        await sub.subscribe("t/flood")
        await pub.wait_connected(LIMIT)
        for i in range(50):
            await pub.publish("t/flood", str(i).encode(), timeout=LIMIT)
        await wait_until(lambda: sub.queued_incoming >= 5)
        await asyncio.sleep(0.3)  # room for a wrong client to keep reading; not a speed claim
        assert sub.queued_incoming == 5  # reading paused: the rest waits in TCP and the broker
        got = await receive(sub, 50)
    assert [m.payload for m in got] == [str(i).encode() for i in range(50)]


async def test_publish_without_connection_raises() -> None:
    nobody = free_port()  # nothing listens here
    async with new_client(nobody, "lonely") as client:
        with pytest.raises(MqttNotConnected):
            await client.publish("t/x", b"data")
        with pytest.raises(MqttNotConnected):
            await client.wait_connected(0.2)
        assert client.published == 0


async def test_publish_after_broker_died_raises(mosquitto: Mosquitto) -> None:
    async with new_client(mosquitto.port, "pub") as pub:
        await pub.wait_connected(LIMIT)
        mosquitto.kill()
        await wait_until(lambda: not pub.connected.is_set())
        with pytest.raises(MqttNotConnected):
            await pub.publish("t/x", b"data")


async def test_reconnects_and_resubscribes_after_broker_restart(mosquitto: Mosquitto) -> None:
    connects = 0
    reconnected = asyncio.Event()

    async def on_connect() -> None:
        nonlocal connects
        connects += 1
        if connects == 2:
            reconnected.set()

    async with new_client(mosquitto.port, "store") as store:
        store.on_connect.append(on_connect)
        await store.subscribe("t/down/#")
        await store.wait_connected(LIMIT)
        await wait_until(lambda: connects == 1)

        mosquitto.kill()  # no persistence: the restarted broker knows no session or subscription
        await wait_until(lambda: not store.connected.is_set())
        mosquitto.start()  # same port
        async with asyncio.timeout(LIMIT):
            await reconnected.wait()
        assert store.reconnects == 1

        async with new_client(mosquitto.port, "hub") as hub:
            await hub.wait_connected(LIMIT)
            await hub.publish("t/down/ack", b"after restart", timeout=LIMIT)
        [message] = await receive(store, 1)
    assert message.payload == b"after restart"


# -- publish semantics against a scripted broker -----------------------------------------------


class FakeBroker:
    """Accepts one MQTT 3.1.1 client, answers CONNACK, and PUBACKs only when told to."""

    def __init__(self) -> None:
        self.publishes: asyncio.Queue[int] = asyncio.Queue()  # packet ids received
        self.writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self.writer is not None:
            self.writer.close()

    @staticmethod
    async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        kind = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return kind, await reader.readexactly(length)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            kind, _ = await self._packet(reader)
            assert kind >> 4 == 1  # CONNECT
            writer.write(b"\x20\x02\x00\x00")  # CONNACK accepted
            while True:
                kind, body = await self._packet(reader)
                if kind >> 4 == 3 and (kind >> 1) & 3:  # PUBLISH with QoS > 0
                    end = 2 + struct.unpack(">H", body[:2])[0]  # topic, then packet id
                    self.publishes.put_nowait(struct.unpack(">H", body[end:end + 2])[0])

    def puback(self, packet_id: int) -> None:
        assert self.writer is not None
        self.writer.write(b"\x40\x02" + struct.pack(">H", packet_id))


async def test_publish_returns_only_after_puback() -> None:
    async with FakeBroker() as broker, new_client(broker.port, "pub") as pub:
        await pub.wait_connected(LIMIT)
        # Without PUBACK the publish cannot complete, whatever the timeout.
        with pytest.raises(MqttPublishTimeout):
            await pub.publish("t/a", b"1", timeout=0.3)
        await broker.publishes.get()  # it did reach the broker
        assert pub.published == 0

        sending = asyncio.create_task(pub.publish("t/a", b"2", timeout=LIMIT))
        async with asyncio.timeout(LIMIT):
            packet_id = await broker.publishes.get()
        assert not sending.done()
        broker.puback(packet_id)
        await sending
        assert pub.published == 1


async def test_connection_lost_while_waiting_for_puback_raises() -> None:
    async with FakeBroker() as broker, new_client(broker.port, "pub") as pub:
        await pub.wait_connected(LIMIT)
        sending = asyncio.create_task(pub.publish("t/a", b"1", timeout=LIMIT))
        async with asyncio.timeout(LIMIT):
            await broker.publishes.get()
        assert broker.writer is not None
        broker.writer.transport.abort()
        with pytest.raises(MqttNotConnected):
            await sending


# -- back-off ------------------------------------------------------------------------------------


def test_backoff_has_jitter_and_bounds() -> None:
    a = [backoff_delay(n, 0.5, 30.0, random.Random(1)) for n in range(12)]
    b = [backoff_delay(n, 0.5, 30.0, random.Random(2)) for n in range(12)]
    assert a != b  # two clients do not retry in lockstep
    assert a == [backoff_delay(n, 0.5, 30.0, random.Random(1)) for n in range(12)]
    for n, delay in enumerate(a + b):
        ceiling = min(30.0, 0.5 * 2 ** (n % 12))
        assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(10_000, 0.5, 30.0, random.Random(3)) <= 30.0  # no overflow


def test_two_clients_back_off_differently() -> None:
    one = MqttClient("127.0.0.1", 1, client_id="one", rng=random.Random(11))
    two = MqttClient("127.0.0.1", 1, client_id="two", rng=random.Random(12))
    assert [one.backoff_delay(n) for n in range(6)] != [two.backoff_delay(n) for n in range(6)]


# -- embedded amqtt broker -----------------------------------------------------------------------


async def test_embedded_amqtt_broker_roundtrip() -> None:
    async with EmbeddedBroker() as broker:
        assert broker.port > 0
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        async with new_client(broker.port, "sub") as sub, new_client(broker.port, "pub") as pub:
            await sub.wait_connected(LIMIT)
            await sub.subscribe("mg/v1/hub/#", qos=1)
            await pub.wait_connected(LIMIT)
            await pub.publish("mg/v1/hub/x", b"\x01\x02", qos=1, timeout=LIMIT)
            [message] = await receive(sub, 1)
        assert message.payload == b"\x01\x02"
        assert pub.published == 1
        port = broker.port
    with pytest.raises(ConnectionRefusedError):  # the listener is really gone
        socket.create_connection(("127.0.0.1", port), timeout=LIMIT).close()


async def test_a_broker_that_will_not_stop_does_not_hold_the_hub(
        caplog: pytest.LogCaptureFixture) -> None:
    """amqtt's shutdown waiting forever (seen once under load) costs the hub's exit the
    bound, not the rest of its life: stop returns, says so, and the broker's own shutdown is
    cancelled."""
    broker = EmbeddedBroker()
    await broker.start()
    inner = broker._broker
    real = inner.shutdown
    stuck = asyncio.Event()

    async def never_done() -> None:
        stuck.set()
        await asyncio.Event().wait()

    inner.shutdown = never_done  # the one misbehaviour no real peer can be made to show
    started = asyncio.get_running_loop().time()
    await broker.stop(within_s=0.5)
    assert stuck.is_set() and asyncio.get_running_loop().time() - started < LIMIT
    assert "did not stop within" in caplog.text
    await real()  # the test's own cleanup: the listener really closed


# -- ACL -----------------------------------------------------------------------------------------


@pytest.fixture
def acl_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    with Mosquitto(
        tmp_path / "acl",
        passwords={"S001": "pw-1", "S002": "pw-2", "hub": "pw-hub"},
        acl=[
            "pattern write mg/v1/store/%u/up/#",
            "user hub",
            "topic read mg/v1/store/+/up/#",
        ],
    ) as broker:
        yield broker  # type: ignore[misc]


async def test_acl_store_may_only_publish_its_own_topics(acl_broker: Mosquitto) -> None:
    port = acl_broker.port
    async with (
        new_client(port, "hub", username="hub", password="pw-hub") as hub,
        new_client(port, "S001", username="S001", password="pw-1") as store,
    ):
        await hub.wait_connected(LIMIT)
        await hub.subscribe("mg/v1/store/+/up/#")
        await store.wait_connected(LIMIT)
        # MQTT 3.1.1 has no way to say "denied": Mosquitto PUBACKs and drops the message.
        await store.publish("mg/v1/store/S002/up/events", b"forged", timeout=LIMIT)
        await store.publish("mg/v1/store/S001/up/events", b"mine", timeout=LIMIT)
        # Same publisher, same subscription: the forged one would have arrived first.
        [message] = await receive(hub, 1)
    assert message.topic == "mg/v1/store/S001/up/events"
    assert message.payload == b"mine"
    assert store.published == 2
    assert "Denied PUBLISH" in acl_broker.log_text()


async def test_acl_wrong_password_never_connects(acl_broker: Mosquitto) -> None:
    async with new_client(acl_broker.port, "S001", username="S001", password="nope") as store:
        with pytest.raises(MqttNotConnected):
            await store.wait_connected(1.0)
    assert store.reconnects == 0
