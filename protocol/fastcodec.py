"""The hub's uplink validation at msgspec speed, with ``protocol.events`` as the only schema.

Why: validating uplink batches with pydantic (``protocol.codec.decode_batch``) is the hub's
largest CPU cost, about 45 µs an event. msgspec decodes and validates the same batches several
times faster, but a second, hand-written schema would drift from the pydantic models, and a
drift that loosens validation would let the hub store events it should refuse.

So the msgspec Struct types here are *compiled* from the pydantic models when this module is
imported. The compiler understands exactly the annotations and constraints the models use today
and raises ``RuntimeError`` naming the field for anything else (a ``multiple_of``, a validator,
an alias, a regex construct whose meaning differs between pydantic's Rust engine and Python's
``re``...): a model change can make this module fail to import, never make it quietly accept
more than pydantic does.

Where the two libraries differ, the compiled schema is made equal or stricter than pydantic,
never looser (each case is commented where it is handled). Stricter is safe because of the
fallback: whenever the fast path refuses a payload for any reason, ``decode_batch_fast`` asks
``protocol.codec.decode_batch``, which either raises the canonical ``CodecError`` (so errors are
today's errors by construction) or accepts, in which case the pydantic result is converted and
returned, counted in ``fallbacks`` and logged once per kind of refusal.
"""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Callable, Iterable
from datetime import date
from typing import Annotated, Any, Literal, NamedTuple, Union, cast, get_args, get_origin

import annotated_types as at
import msgspec
from pydantic import BaseModel, Strict, StringConstraints
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from protocol import codec
from protocol.codec import DEFAULT_MAX_BYTES, InvalidMessage, PayloadTooLarge
from protocol.events import BODY_TYPES, Event, EventBatch

log = logging.getLogger("membergate.protocol.fastcodec")

# ``codec.unpack`` refuses longer arrays and larger maps before pydantic sees them; msgspec has
# no such limits. Every compiled list is capped at the array limit; for maps see
# ``_LIMITS_CHECKED_FROM``. ``tests/protocol/test_fastcodec.py`` pins both to the codec's.
CODEC_MAX_ARRAY_LEN = codec.MAX_ARRAY_LEN
CODEC_MAX_MAP_LEN = codec.MAX_MAP_LEN

# Batches the fast path refused and pydantic accepted: each cost a second, slow decode.
fallbacks = 0
_warned: set[str] = set()
_MAX_WARNED_KINDS = 100  # refusal kinds come from the payload: a sender must not grow this


# --- compiling pydantic models to msgspec Structs -------------------------------------------


class _Constraints:
    """What the metadata of one annotation asks for, gathered before the type is known."""

    def __init__(self) -> None:
        self.ge: int | None = None
        self.le: int | None = None
        self.min_length: int | None = None
        self.max_length: int | None = None
        self.pattern: str | None = None
        self.strict = False

    def copy(self) -> _Constraints:
        out = _Constraints()
        vars(out).update(vars(self))
        return out


def _int_bound(value: Any, where: str) -> int:
    if type(value) is not int:
        raise RuntimeError(f"{where}: bound {value!r} is not an int; fastcodec cannot compile it")
    return value


def _tighter(old: int | None, new: int, pick: Callable[[int, int], int]) -> int:
    return new if old is None else pick(old, new)


def _gather(metadata: Iterable[Any], c: _Constraints, where: str) -> None:
    for m in metadata:
        if isinstance(m, StringConstraints):
            if (m.strip_whitespace or m.to_upper or m.to_lower
                    or getattr(m, "ascii_only", None)):
                raise RuntimeError(f"{where}: fastcodec cannot compile {m!r} (it changes or "
                                   "restricts strings in ways it does not model)")
            # ``strict`` is ignored: msgspec never coerces, so it is at least as strict.
            if m.min_length is not None:
                c.min_length = _tighter(c.min_length, _int_bound(m.min_length, where), max)
            if m.max_length is not None:
                c.max_length = _tighter(c.max_length, _int_bound(m.max_length, where), min)
            if m.pattern is not None:
                _set_pattern(c, m.pattern, where)
        elif isinstance(m, Strict):
            # msgspec never coerces (no bool or float for an int, no bytes for a str); a bool
            # compiles only strict, as pydantic's lax one takes 1, "yes" and "on" as well.
            c.strict = c.strict or m.strict
        # Integer bounds become inclusive ones, which is exact for ints: msgspec takes either
        # kind but not both of a pair, and several constraints may stack.
        elif isinstance(m, at.Ge):
            c.ge = _tighter(c.ge, _int_bound(m.ge, where), max)
        elif isinstance(m, at.Gt):
            c.ge = _tighter(c.ge, _int_bound(m.gt, where) + 1, max)
        elif isinstance(m, at.Le):
            c.le = _tighter(c.le, _int_bound(m.le, where), min)
        elif isinstance(m, at.Lt):
            c.le = _tighter(c.le, _int_bound(m.lt, where) - 1, min)
        elif isinstance(m, at.MinLen):
            c.min_length = _tighter(c.min_length, _int_bound(m.min_length, where), max)
        elif isinstance(m, at.MaxLen):
            c.max_length = _tighter(c.max_length, _int_bound(m.max_length, where), min)
        elif isinstance(m, FieldInfo):
            # ``Annotated[int, Field(...)]`` nested in another type keeps its FieldInfo.
            _check_field_info(m, where, nested=True)
            _gather(m.metadata, c, where)
        elif type(m).__name__ == "_PydanticGeneralMetadata":
            # ``Field(pattern=...)`` and other pydantic-only options land here.
            options = dict(vars(m))
            pattern = options.pop("pattern", None)
            options.pop("strict", None)
            if options:
                raise RuntimeError(f"{where}: fastcodec cannot compile field options {options}")
            if pattern is not None:
                _set_pattern(c, pattern, where)
        elif isinstance(m, at.GroupedMetadata) and type(m) in (at.Interval, at.Len):
            _gather(m, c, where)
        else:
            raise RuntimeError(f"{where}: fastcodec cannot compile the constraint {m!r}")


def _set_pattern(c: _Constraints, pattern: Any, where: str) -> None:
    if not isinstance(pattern, str):
        raise RuntimeError(f"{where}: fastcodec cannot compile the compiled pattern {pattern!r}")
    if c.pattern is not None:
        raise RuntimeError(f"{where}: fastcodec cannot compile two patterns on one string")
    c.pattern = python_pattern(pattern, where)


_META_ESCAPES = frozenset("\\.+*?()|[]{}^$-/")
_CLASS_OPERATORS = ("&&", "--", "~~")
_QUANTIFIER = re.compile(r"\{[0-9]+(,[0-9]*)?\}")


def python_pattern(pattern: str, where: str = "pattern") -> str:
    """``pattern`` as pydantic's Rust regex engine reads it, for Python's ``re.search``.

    Both engines search (a match anywhere), but ``$`` differs: Python's also matches before a
    final newline, so ``^[A-Z]{3}$`` accepts ``"CNY\\n"`` in ``re`` and not in pydantic. Every
    ``$`` becomes ``\\Z``. Only a small subset whose meaning is the same in both engines is
    accepted (ASCII literals, ``.``, plain groups, ``|``, quantifiers, character classes of
    ASCII literals and ranges, escaped metacharacters); anything else raises: ``\\d``/``\\w`` and
    ``\\b`` differ in Unicode handling, Rust classes have set operators (``&&``, ``--``) and
    nesting that ``re`` reads as literals, ``(?...)`` flags and ``\\<`` differ too.
    """
    out: list[str] = []
    i = 0
    quantified = ""  # "" after an atom, "q" after a quantifier, "lazy" after its ``?``

    def refuse(why: str) -> RuntimeError:
        return RuntimeError(f"{where}: fastcodec cannot compile the pattern {pattern!r}: {why}")

    while i < len(pattern):
        ch = pattern[i]
        if ch in "*+?{" and (quantified == "lazy" or (quantified == "q" and ch != "?")):
            # ``a*+`` is possessive in Python 3.11 and an error in Rust; only one ``?`` (lazy)
            # means the same after a quantifier in both.
            raise refuse("a quantifier after a quantifier")
        quantified = ("lazy" if quantified == "q" else "q") if ch in "*+?{" else ""
        if ch == "[":
            end = i + 1
            if pattern.startswith("^", end):
                end += 1
            first = end
            while end < len(pattern) and pattern[end] != "]":
                end += 1
            if end >= len(pattern) or end == first:
                raise refuse("an unclosed or empty character class")
            body = pattern[first:end]
            if any(op in body for op in _CLASS_OPERATORS) or "[" in body or "\\" in body:
                raise refuse("a character class with nesting, escapes or set operators")
            if not all(c.isascii() and c.isprintable() for c in body):
                raise refuse("a character class with non-ASCII or unprintable characters")
            out.append(pattern[i:end + 1])
            i = end + 1
            continue
        if ch == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt not in _META_ESCAPES or not nxt:
                raise refuse(f"the escape \\{nxt}")
            out.append("\\" + nxt)
            i += 2
            continue
        if ch == "{":
            quant = _QUANTIFIER.match(pattern, i)
            if quant is None:
                raise refuse("a brace that is not a quantifier")
            out.append(quant.group())
            i = quant.end()
            continue
        if ch == "(" and pattern.startswith("(?", i):
            raise refuse("a (?...) group")
        if ch == "$":
            out.append(r"\Z")
        elif ch in "^.|()*+?" or (ch.isascii() and (ch.isalnum() or ch in " _-:/,@#%&=<>!~'\";")):
            out.append(ch)
        else:
            raise refuse(f"the character {ch!r}")
        i += 1
    translated = "".join(out)
    try:
        re.compile(translated)
    except re.error as exc:
        raise refuse(str(exc)) from exc
    return translated


def _check_field_info(info: FieldInfo, where: str, *, nested: bool = False) -> None:
    for attr in ("alias", "validation_alias", "serialization_alias", "exclude_if"):
        if getattr(info, attr, None) is not None:
            raise RuntimeError(f"{where}: fastcodec cannot compile a field with {attr}")
    if info.exclude:
        raise RuntimeError(f"{where}: fastcodec cannot compile an excluded field")
    if info.validate_default:
        # msgspec never validates defaults; pydantic would, and could refuse a missing field.
        raise RuntimeError(f"{where}: fastcodec cannot compile validate_default")
    if nested and (info.default is not PydanticUndefined or info.default_factory is not None
                   or info.discriminator is not None):
        raise RuntimeError(f"{where}: fastcodec cannot compile a nested Field with a default "
                           "or discriminator")


# Config keys that change nothing the compiled Struct must model; any other key (an alias
# generator, str_strip_whitespace, regex_engine, ...) makes the compiler refuse.
_HARMLESS_CONFIG = frozenset({"extra", "frozen", "strict", "title"})


def _check_model(model: type[BaseModel]) -> None:
    name = model.__name__
    unknown = set(model.model_config) - _HARMLESS_CONFIG
    if unknown:
        raise RuntimeError(f"{name}: fastcodec cannot compile model_config keys {sorted(unknown)}")
    if model.model_config.get("extra", "ignore") not in ("forbid", "ignore"):
        raise RuntimeError(f"{name}: fastcodec cannot compile extra="
                           f"{model.model_config.get('extra')!r}")
    decorators = model.__pydantic_decorators__
    for kind in ("validators", "field_validators", "root_validators", "field_serializers",
                 "model_serializers", "model_validators", "computed_fields"):
        if getattr(decorators, kind):
            raise RuntimeError(f"{name}: fastcodec cannot compile {kind} "
                               f"{sorted(getattr(decorators, kind))}")
    if model.__pydantic_post_init__ is not None or getattr(model, "__pydantic_root_model__", False):
        raise RuntimeError(f"{name}: fastcodec cannot compile model_post_init or a RootModel")


class _Compiler:
    """One compilation: ``replace`` swaps nested models for other msgspec types (the batch
    envelope keeps its events as ``msgspec.Raw``)."""

    def __init__(self, cache: dict[tuple[type[BaseModel], str | None], Any],
                 replace: dict[type[BaseModel], Any] | None = None) -> None:
        self.cache = cache
        self.replace = replace or {}

    def struct(self, model: type[BaseModel], *, tag: str | None = None,
               name: str | None = None, required: bool = False,
               override: dict[str, Any] | None = None) -> Any:
        """``name`` makes a variant outside the cache: ``required`` drops every default and
        ``override`` gives some fields another type."""
        key = (model, tag)
        if name is None and key in self.cache:
            return self.cache[key]
        _check_model(model)
        fields: list[tuple[str, Any, Any]] = []
        for field_name, info in model.model_fields.items():
            where = f"{model.__name__}.{field_name}"
            _check_field_info(info, where)
            if tag is not None and field_name == "type":
                continue  # the tag: msgspec reads and writes it, the class attribute holds it
            constraints = _Constraints()
            _gather(info.metadata, constraints, where)
            ftype = self.type(info.annotation, constraints, where, info.discriminator)
            if override and field_name in override:
                ftype = override[field_name]
            if info.default_factory is not None and not required:
                if getattr(info, "default_factory_takes_data", False):
                    raise RuntimeError(f"{where}: fastcodec cannot compile a default_factory "
                                       "that takes data")
                factory = cast(Callable[[], Any], info.default_factory)
                fields.append((field_name, ftype, msgspec.field(default_factory=factory)))
            elif info.default is not PydanticUndefined and not required:
                fields.append((field_name, ftype, info.default))
            else:
                fields.append((field_name, ftype, msgspec.NODEFAULT))
        options: dict[str, Any] = {}
        if tag is not None:
            options.update(tag_field="type", tag=tag, namespace={"type": tag})
        struct = msgspec.defstruct(
            name or model.__name__,
            [(n, t) if d is msgspec.NODEFAULT else (n, t, d) for n, t, d in fields],
            module=__name__, kw_only=True, frozen=True,
            # No reference cycles are possible in decoded events; skipping GC tracking saves
            # the collector walking every event of every batch.
            gc=False,
            forbid_unknown_fields=model.model_config.get("extra") == "forbid", **options)
        if name is None:
            self.cache[key] = struct
        return struct

    def type(self, tp: Any, c: _Constraints, where: str, discriminator: Any = None) -> Any:
        origin = get_origin(tp)
        if origin is Annotated:
            base, *metadata = get_args(tp)
            c = c.copy()
            _gather(metadata, c, where)
            return self.type(base, c, where, discriminator)
        if origin in (Union, types.UnionType):
            members = get_args(tp)
            others = [m for m in members if m is not type(None)]
            if discriminator is None and len(others) == 1 and len(members) == 2:
                # pydantic applies a constraint on ``X | None`` to X (e.g. ``max_length`` on
                # ``list[Text] | None``).
                return self.type(others[0], c, where) | None
            if discriminator == "type" and len(others) == len(members):
                return self.tagged_union(others, c, where)
            raise RuntimeError(f"{where}: fastcodec cannot compile the union {tp!r}")
        if discriminator is not None:
            raise RuntimeError(f"{where}: fastcodec cannot compile discriminator "
                               f"{discriminator!r} on {tp!r}")
        if origin is list:
            (item,) = get_args(tp)
            meta = self.meta(c, where, "min_length", "max_length")
            # ``codec.unpack`` refuses arrays longer than this before validation.
            cap = min(meta.pop("max_length", CODEC_MAX_ARRAY_LEN), CODEC_MAX_ARRAY_LEN)
            item_type = self.type(item, _Constraints(), where)
            return self.annotated(types.GenericAlias(list, (item_type,)),
                                  {"max_length": cap, **meta})
        if origin is Literal:
            values = get_args(tp)
            if not all(type(v) in (str, int) for v in values):
                raise RuntimeError(f"{where}: fastcodec compiles str and int Literals only, "
                                   f"not {tp!r}")
            self.meta(c, where)
            return tp
        if tp is bool and c.strict:  # true and false only, in msgspec and strict pydantic
            self.meta(c, where)
            return bool
        if tp is int:
            return self.annotated(int, self.meta(c, where, "ge", "le"))
        if tp is str:
            return self.annotated(str, self.meta(c, where, "min_length", "max_length",
                                                 "pattern"))
        if tp is date:
            self.meta(c, where)
            return date
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.meta(c, where)
            if tp in self.replace:
                return self.replace[tp]
            return self.struct(tp)
        raise RuntimeError(f"{where}: fastcodec cannot compile the type {tp!r}")

    def tagged_union(self, members: list[Any], c: _Constraints, where: str) -> Any:
        self.meta(c, where)
        structs = []
        for m in members:
            if not (isinstance(m, type) and issubclass(m, BaseModel)) or "type" not in (
                    m.model_fields):
                raise RuntimeError(f"{where}: fastcodec cannot compile union member {m!r}")
            info = m.model_fields["type"]
            tag = info.default
            if get_args(info.annotation) != (tag,) or not isinstance(tag, str):
                raise RuntimeError(f"{where}: {m.__name__}.type must be Literal[<its default>]")
            structs.append(self.struct(m, tag=tag))
        return Union[tuple(structs)]  # noqa: UP007 (built from a runtime list)

    @staticmethod
    def meta(c: _Constraints, where: str, *allowed: str) -> dict[str, Any]:
        given = {k: v for k, v in vars(c).items() if v is not None and k != "strict"}
        extra = set(given) - set(allowed)
        if extra:
            raise RuntimeError(f"{where}: fastcodec cannot apply {sorted(extra)} here")
        return given

    @staticmethod
    def annotated(tp: Any, meta: dict[str, Any]) -> Any:
        return Annotated[tp, msgspec.Meta(**meta)] if meta else tp


def compile_model(model: type[BaseModel]) -> Any:
    """A msgspec Struct type that decodes exactly what ``model`` validates, or stricter."""
    return _Compiler({}).struct(model)


# --- the compiled protocol -------------------------------------------------------------------

_cache: dict[tuple[type[BaseModel], str | None], Any] = {}
EventStruct: Any = _Compiler(_cache).struct(Event)
BatchStruct: Any = _Compiler(_cache).struct(EventBatch)
BODY_STRUCTS: dict[str, Any] = {tag: _cache[(model, tag)] for tag, model in BODY_TYPES.items()}


def _field_type(struct: Any, name: str) -> Any:
    (field,) = (f for f in msgspec.structs.fields(struct) if f.name == name)
    return field.type


def _same_type(a: Any, b: Any) -> bool:
    return bool(msgspec.inspect.type_info(a) == msgspec.inspect.type_info(b))


# The envelope keeps its events as raw bytes, each decoded on its own, because the hub stores
# every event exactly as received: one pass cuts and validates. Every field is required so that
# a map of exactly as many entries as fields (checked on the first byte) holds each key once:
# msgspec keeps the last of repeated keys, as msgpack does, but ``codec.event_bytes`` would cut
# the events of every "events" key and pydantic validate only the last.
_Envelope: Any = _Compiler(_cache, replace={Event: msgspec.Raw}).struct(
    EventBatch, name="BatchEnvelope", required=True)
if len(EventBatch.model_fields) > 15:
    raise RuntimeError("fastcodec checks the batch map's size on its first byte: at most 15 keys")
_ENVELOPE_HEADER = 0x80 | len(EventBatch.model_fields)  # a msgpack fixmap of that many entries

# A batch's events must each carry the batch's store_id (the post-check below), and the batch's
# store_id has passed the pattern already, so matching the same regex again on every event
# changes nothing but costs a regex call per event: the events of a batch skip it, unless the
# two fields are not constrained alike (then an event's check could refuse what the batch's
# allows).
if _same_type(_field_type(EventStruct, "store_id"), _field_type(_Envelope, "store_id")):
    BatchEventStruct: Any = _Compiler(_cache).struct(
        Event, name="BatchEvent", override={"store_id": str})
else:  # pragma: no cover - only if protocol.events changes the two fields apart
    BatchEventStruct = EventStruct

# pydantic model -> the Struct a fallback builds from it.
_TARGETS: dict[type[BaseModel], Any] = {m: s for (m, _), s in _cache.items()}
_TARGETS[Event] = BatchEventStruct
if len(_TARGETS) != len(_cache):
    raise RuntimeError("fastcodec compiled a model both as a body and as a plain struct")

_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
_event_decoder = msgspec.msgpack.Decoder(BatchEventStruct)

# A map has at most as many distinct keys as its Struct has fields, but msgspec, like msgpack,
# takes repeated keys (the last one wins), so a body map could hold more entries than
# ``codec.unpack`` allows. Each entry takes at least two bytes (a key and a value): only an
# event this large can break the limit, and only such an event (a sale of hundreds of lines,
# say) is unpacked once more, by ``codec.unpack`` itself.
_LIMITS_CHECKED_FROM = 2 * CODEC_MAX_MAP_LEN


# --- decoding ----------------------------------------------------------------------------------


class FastBatch(NamedTuple):
    store_id: str
    epoch: int
    events: list[Any]  # BatchEventStruct: event_id, store_id, epoch, seq, hlc, body
    raw: list[bytes]  # each event's bytes as received (``codec.event_bytes``)
    slow: bool = False  # only the pydantic fallback accepted it (a slow decode; counted)


def body_type(body: Any) -> str:
    """The ``type`` of a compiled body, as ``body.type`` of a pydantic one."""
    tag: str = body.type
    return tag


def decode_batch_fast(payload: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> FastBatch:
    """``codec.decode_batch`` plus ``codec.event_bytes``, in a fraction of the time.

    Accepts exactly what ``decode_batch`` accepts with equal values, and raises exactly its
    ``CodecError`` for anything else (it is what raises: every refusal is decided again by
    ``decode_batch``)."""
    try:
        return decode_fast_only(payload, max_bytes=max_bytes)
    except Exception as exc:  # any refusal at all: pydantic has the final word
        refused = exc
    batch = codec.decode_batch(payload, max_bytes=max_bytes)
    _note_fallback(refused, len(batch.events))
    return FastBatch(batch.store_id, batch.epoch, [_struct_of(ev) for ev in batch.events],
                     codec.event_bytes(payload), slow=True)


def decode_fast_only(payload: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> FastBatch:
    """The fast path alone: raises on anything it does not accept, without asking pydantic.

    Its errors are not the canonical ones; ``decode_batch_fast`` is the API."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError("payload is not bytes")
    if len(payload) > max_bytes:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    if payload[0] != _ENVELOPE_HEADER:
        raise ValueError("not a batch map of one entry per field")
    envelope = _envelope_decoder.decode(payload)
    store_id, epoch = envelope.store_id, envelope.epoch
    decode = _event_decoder.decode
    events: list[Any] = []
    raw: list[bytes] = []
    for piece in envelope.events:
        cut = bytes(piece)
        event = decode(cut)
        if len(cut) >= _LIMITS_CHECKED_FROM:
            codec.unpack(cut, max_bytes=len(cut))
        if event.store_id != store_id or event.epoch != epoch:
            raise InvalidMessage("an event's store or epoch differs from its batch")
        events.append(event)
        raw.append(cut)
    first = events[0].seq
    for i, event in enumerate(events):
        if event.seq != first + i:
            raise InvalidMessage("batch sequence numbers are not consecutive")
    return FastBatch(store_id, epoch, events, raw)


def _struct_of(value: Any) -> Any:
    # Built without validation on purpose: pydantic has accepted the value, and the fast
    # schema (stricter somewhere, or we would not be here) must not refuse it now.
    if isinstance(value, BaseModel):
        target = _TARGETS[type(value)]
        return target(**{name: _struct_of(getattr(value, name))
                         for name in target.__struct_fields__})
    if isinstance(value, list):
        return [_struct_of(item) for item in value]
    return value


def _note_fallback(refused: Exception, events: int) -> None:
    global fallbacks
    fallbacks += 1
    # One warning per kind of refusal: list positions and quoted values vary per payload.
    kind = f"{type(refused).__name__}: {refused}"
    kind = re.sub(r"\[\d+\]", "[]", re.sub(r"'[^']*'", "'…'", kind))[:300]
    if kind in _warned or len(_warned) >= _MAX_WARNED_KINDS:
        return
    _warned.add(kind)
    log.warning("the fast uplink decoder refused a batch of %d events that pydantic accepts "
                "(%s); such batches take the slow path. protocol.fastcodec is stricter than "
                "protocol.events here", events, kind)
