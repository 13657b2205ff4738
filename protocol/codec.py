"""msgpack on the wire, validated strictly on the way in.

Decoding never trusts its input: the size is checked before unpacking, msgpack limits stop
pathological nesting, the event type and version are checked before pydantic sees the body, and
every failure is a ``CodecError`` whose ``code`` a caller can count and log.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from protocol.events import SUPPORTED_VERSIONS, Event, EventBatch

DEFAULT_MAX_BYTES = 1024 * 1024  # one uplink batch; Mosquitto's default message limit is far larger

M = TypeVar("M", bound=BaseModel)

# Before validation, ``unpack`` refuses longer arrays and larger maps (pathological payloads).
MAX_ARRAY_LEN = 100_000
MAX_MAP_LEN = 10_000


class CodecError(ValueError):
    code = "malformed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedPayload(CodecError):
    code = "malformed"


class PayloadTooLarge(CodecError):
    code = "oversized"


class UnknownVersion(CodecError):
    code = "unknown_version"


class InvalidMessage(CodecError):
    code = "invalid"


def encode(model: BaseModel) -> bytes:
    data = model.model_dump(mode="json", exclude_none=False)
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(payload: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise MalformedPayload("payload is not bytes")
    if len(payload) > max_bytes:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
        )
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise MalformedPayload(f"not valid msgpack: {exc}") from exc
    except Exception as exc:  # msgpack raises a handful of types on garbage; all mean the same
        raise MalformedPayload(f"not valid msgpack: {type(exc).__name__}: {exc}") from exc


def _is_version(value: Any, supported: frozenset[int]) -> bool:
    # ``type(...) is int``: True and 1.0 equal 1 (and hash like it) but are not a version, and
    # an unhashable value (a list, a map) must not reach the ``in``.
    return type(value) is int and value in supported


def _check_versions(data: Any) -> None:
    """Refuse an unknown type or version with its own error, before generic validation."""
    events = data.get("events") if isinstance(data, dict) else None
    batch = isinstance(data, dict) and "v" in data and events is not None
    if batch and not _is_version(data["v"], frozenset({1})):
        raise UnknownVersion(f"batch version {data['v']!r} is not supported")
    for ev in events if isinstance(events, list) else [data]:
        body = ev.get("body") if isinstance(ev, dict) else None
        if not isinstance(body, dict):
            continue
        kind, version = body.get("type"), body.get("v", 1)
        if isinstance(kind, str) and kind in SUPPORTED_VERSIONS:
            if not _is_version(version, SUPPORTED_VERSIONS[kind]):
                raise UnknownVersion(f"{kind} version {version!r} is not supported")
        elif isinstance(kind, str):
            raise UnknownVersion(f"unknown event type {kind!r}")


def decode(payload: bytes, model: type[M], *, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    data = unpack(payload, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise MalformedPayload(f"expected a map, got {type(data).__name__}")
    if model in (Event, EventBatch):
        _check_versions(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidMessage(
            f"{model.__name__} invalid at {where or 'top'}: {first['msg']}"
        ) from exc


def decode_batch(payload: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> EventBatch:
    batch = decode(payload, EventBatch, max_bytes=max_bytes)
    for ev in batch.events:
        if ev.store_id != batch.store_id or ev.epoch != batch.epoch:
            raise InvalidMessage("an event's store or epoch differs from its batch")
    seqs = [ev.seq for ev in batch.events]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise InvalidMessage("batch sequence numbers are not consecutive")
    return batch


def event_bytes(payload: bytes) -> list[bytes]:
    """The bytes of each event of a batch payload already accepted by ``decode_batch``, cut out
    as received: the hub stores them as its event log without encoding each event again."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(payload) + 1)
    unpacker.feed(payload)
    out: list[bytes] = []
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key != "events":
            unpacker.skip()
            continue
        # A repeated key: msgpack keeps the last one, so the events validated are the last
        # list's, and their bytes must be too.
        out = []
        for _ in range(unpacker.read_array_header()):
            start = unpacker.tell()
            unpacker.skip()
            out.append(bytes(payload[start:unpacker.tell()]))
    return out
