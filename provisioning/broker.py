"""``membergate-provision broker``: Mosquitto credentials and an ACL for a fleet of stores.

From a fleet file (TOML, below) it writes, into ``--out DIR``::

    broker/passwd           Mosquitto password file, hashed by the real ``mosquitto_passwd``  0600
    broker/acl              Mosquitto ACL file: one ``user`` block per MQTT username          0600
    broker/membergate.conf  the mosquitto.conf lines to include (listener, no anonymous, files)
    hub/broker.toml         the hub's ``[broker]`` username and password                      0600
    stores/<store_id>.toml  one per store: its ``[sync]`` username and password               0600

and with ``tls = true`` also::

    ca/ca.crt, ca/ca.key    the fleet's private CA (made once, kept by later runs; key 0600)
    broker/ca.crt, broker/server.crt, broker/server.key   the listener's certificate for
                            ``host``, signed by that CA (a new one on every run; key 0600)

and with the hub's ``api_host`` (the name HQ dials for the HQ API)::

    hub/hq-api.crt, hub/hq-api.key   the HQ API's certificate for that name, from the same CA
                            (new on every run; key 0600); the hub's snippet then serves the API
                            over HTTPS with a bearer token (kept by later runs, unless --rotate)

and for each store with an ``api_host`` (the name its POS terminals dial)::

    pos-api/<store_id>.crt, pos-api/<store_id>.key   the store's POS API certificate for that
                            name, from the same CA (new on every run; key 0600); the store's
                            snippet then serves the API on the LAN over HTTPS ([api])

so that each store box is given only its own files (and, with TLS, the CA certificate). The
fleet file::

    [broker]                            # all optional
    host = "hub.example.internal"       # what stores and hub dial; written into their snippets
    port = 8883                         # the listener's port (default 1883, with tls 8883)
    bind = "0.0.0.0"                    # the listener's address; unset: every interface
    config_dir = "/etc/mosquitto/membergate"  # where passwd and acl will live on the broker
    tls = true                          # TLS listener; needs host (the certificate names it)
    ca_path = "/etc/membergate/broker-ca.crt"  # where the boxes keep ca.crt ([tls] ca_file)

    [hub]
    username = "membergate-hub"         # required
    # password = "..."                  # optional: a password to keep; otherwise a new one
    # api_host = "hq-api.example.internal"  # optional: HTTPS and a token for the HQ API
    # api_cert_path = "/etc/membergate/hq-api.crt"   api_key_path = "/etc/membergate/hq-api.key"
    public_key = "..."                  # the hub's campaign signing key, as `membergate-hub init`
                                        # prints it (or --hub-public-key): into every store's
                                        # [sync] hub_public_key; without it stores refuse campaigns

    [[stores]]
    store_id = "S001"                   # as in the store's edge.toml [store] store_id
    region = "east"                     # as in its [store] region: the region campaigns it reads
    # name = "Nanjing Road"             # optional, a comment in the output
    # username = "S001"                 # optional: the MQTT username (default: the store id)
    # password = "..."                  # optional, as for the hub
    # api_host = "pos-s001.store.internal"  # optional: HTTPS for its POS API, certified for this
    # timezone = "Asia/Urumqi"          # optional: its calendar, for the hub (default: the chain's)
    # legal_entity = "…"                # optional: who issues its stored value (the hub's default)

    [pos_api]                           # all optional; where a store box keeps its API files
    cert_path = "/etc/membergate/pos-api.crt"
    key_path = "/etc/membergate/pos-api.key"

Generated passwords are 32 characters from ``secrets.token_urlsafe`` (192 bits). Passwords given
in the file must be 16 to 128 printable characters without ``:`` (``mosquitto_passwd -U`` ends a
password at the first ``:``) and without surrounding spaces. With ``--force`` into a directory
made before, the passwords already issued there (read from ``hub/broker.toml`` and
``stores/*.toml``) are kept for the same usernames, so adding a store does not lock out the
others; ``--rotate`` issues new ones to everybody whose password is not in the fleet file.

Design choices:

* **Explicit ``user`` blocks, no ``pattern`` lines.** A ``pattern`` rule with ``%u`` would force
  username == store id, and it cannot express the one per-store fact the ACL needs beyond the id:
  the store's region (a store may read ``mg/v1/region/<its region>/campaigns`` and no other region).
  With one block per username, the username is free (``S001``, ``store-S001``, a new name when
  credentials are replaced) while the topics still follow the store id; a pattern line would
  also apply to every login, the hub's included. Each block says exactly what that login may do,
  which is what one audits. The price: adding a store means regenerating the ACL and reloading
  Mosquitto (SIGHUP) — which a new password needs anyway.
* The hub may read every store's uplink and write every store's downlink, the fleet campaign and
  directory topics, and the campaign topic of each region in the fleet. A store may write only
  under ``mg/v1/store/<its id>/up/`` and read only its own ``down/`` subtree, the fleet topics and
  its region's campaigns. Nobody is granted ``$SYS`` or anything else.
* ``use_username_as_clientid true``: Mosquitto lets a new connection with a client id that is
  in use take over that session (the old connection is closed). Without this, any store could
  connect with the hub's client id and keep knocking the hub off the broker. With it, the
  client id is the username, so a login can only ever displace itself (and a client without a
  username is refused, whatever ``allow_anonymous`` says). The consequence: one
  connection per username at a time (the hub already uses one fixed client id, so a
  ``membergate-hub push-campaigns`` beside a running hub displaced it before too).
* ``tls = true`` is off by default only so that a fleet provisioned before keeps working when
  it is provisioned again; without it MQTT passwords cross the listener in clear text, and the
  listener belongs on a private network or VPN. With it, a private CA rather than a public one:
  the broker's name is often internal, and the boxes then trust exactly one issuer for it
  (``protocol.tls`` loads only ``ca_file``, not the system's CAs).

This is for an external Mosquitto (the hub's ``[broker] host`` set); the hub's embedded amqtt
broker has no per-store credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocol import signing, topics
from protocol.codec import DEFAULT_MAX_BYTES
from protocol.zones import Zone
from provisioning import certs

# The same rule as ``edge.config.StoreSection.store_id`` and ``protocol.topics`` (store ids and
# regions are topic levels).
TOPIC_ID = r"^[A-Za-z0-9_-]{1,32}$"
USERNAME = r"^[A-Za-z0-9_.-]{1,64}$"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
PASSWORD_CHARS = 24  # bytes of randomness: 32 characters of token_urlsafe
API_TOKEN_MIN = 32  # characters: a kept HQ API token shorter than a generated one is replaced

CONF_NAME = "membergate.conf"
DEFAULT_CA_PATH = "/etc/membergate/broker-ca.crt"
DEFAULT_API_CERT_PATH = "/etc/membergate/pos-api.crt"
DEFAULT_API_KEY_PATH = "/etc/membergate/pos-api.key"
DEFAULT_HQ_CERT_PATH = "/etc/membergate/hq-api.crt"
DEFAULT_HQ_KEY_PATH = "/etc/membergate/hq-api.key"
SECRET_MODE = 0o600
DIR_MODE = 0o700
PLAIN_MODE = 0o644


class FleetError(ValueError):
    """The fleet file or the output directory is not usable; nothing has been written."""


class ProvisionError(RuntimeError):
    """Generating failed (``mosquitto_passwd`` missing or failing); nothing has been written."""


def _check_password(v: str | None) -> str | None:
    if v is None:
        return v
    if not 16 <= len(v) <= 128:
        raise ValueError("a password must have 16 to 128 characters")
    if ":" in v:
        raise ValueError("a password cannot contain ':' (mosquitto_passwd -U would cut it there)")
    if v != v.strip() or not v.isprintable():
        raise ValueError("a password must be printable, without surrounding spaces")
    return v


def _check_public_key(v: str | None) -> str | None:
    if v is not None:
        signing.load_public_b64(v)  # a SignatureError (a ValueError) says what is wrong
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerEntry(_Model):
    host: str | None = Field(None, pattern=r"^[^\s\"\\]+$")
    port: int | None = Field(None, ge=1, le=65535)  # default 1883, with tls 8883
    bind: str | None = Field(None, pattern=r"^[^\s#]+$")
    config_dir: str = Field("/etc/mosquitto/membergate", pattern=r"^/[^\s#]*$")
    # TLS on the listener, with a certificate for ``host`` from the fleet's private CA.
    tls: bool = False
    # Where the hub's and every store's box keep the CA certificate (their [tls] ca_file).
    ca_path: str = Field(DEFAULT_CA_PATH, pattern=r"^/[^\s\"\\#]*$")
    # The largest message the broker passes on: the hub's [hub] max_payload_bytes (keep the
    # two equal). Larger ones are dropped at the broker, before they reach the hub's memory.
    message_size_limit: int = Field(DEFAULT_MAX_BYTES, ge=1024, le=256 * 1024 * 1024)

    @model_validator(mode="after")
    def _tls_needs_host(self) -> BrokerEntry:
        if self.tls and self.host is None:
            raise ValueError("tls = true needs host: the broker's certificate is made for the"
                             " name the stores dial")
        return self

    @property
    def listen_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls else 1883)


class HubEntry(_Model):
    username: str = Field(pattern=USERNAME)
    password: str | None = None
    # The name (or IP) HQ dials for the hub's HQ API: it gets a certificate for it, a bearer
    # token, and is served over HTTPS (the token crosses the network in every request).
    api_host: str | None = Field(None, pattern=r"^[^\s\"\\]+$")
    api_cert_path: str = Field(DEFAULT_HQ_CERT_PATH, pattern=r"^/[^\s\"\\#]*$")
    api_key_path: str = Field(DEFAULT_HQ_KEY_PATH, pattern=r"^/[^\s\"\\#]*$")
    # The hub's Ed25519 public key (base64), written into every store's [sync]: a store without
    # it refuses every campaign bundle.
    public_key: str | None = None

    _password = field_validator("password")(_check_password)
    _public_key = field_validator("public_key")(_check_public_key)


class StoreEntry(_Model):
    store_id: str = Field(pattern=TOPIC_ID)
    region: str = Field(pattern=TOPIC_ID)
    name: str | None = Field(None, max_length=200)
    username: str | None = Field(None, pattern=USERNAME)
    password: str | None = None
    # The name (or IP) the store's POS terminals dial: its POS API gets a certificate for it
    # and is served to the LAN over HTTPS, since every request carries a terminal's token.
    api_host: str | None = Field(None, pattern=r"^[^\s\"\\]+$")
    # For the hub's store registry (``membergate-hub stores load`` reads this file): the
    # store's calendar (IANA zone; unset: the chain's) and the legal entity issuing its
    # stored value (unset: the chain's).
    timezone: Zone | None = Field(None, max_length=64)
    legal_entity: str | None = Field(None, max_length=200)

    _password = field_validator("password")(_check_password)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not v.isprintable():
            raise ValueError("a name must be printable (it becomes a comment line in the ACL)")
        return v

    @property
    def user(self) -> str:
        return self.username or self.store_id


class PosApiEntry(_Model):
    """Where a store's box keeps its POS API certificate and key (its [api] tls_*_file)."""

    cert_path: str = Field(DEFAULT_API_CERT_PATH, pattern=r"^/[^\s\"\\#]*$")
    key_path: str = Field(DEFAULT_API_KEY_PATH, pattern=r"^/[^\s\"\\#]*$")


class Fleet(_Model):
    broker: BrokerEntry = Field(default_factory=BrokerEntry)
    hub: HubEntry
    stores: list[StoreEntry] = Field(min_length=1)
    pos_api: PosApiEntry = Field(default_factory=PosApiEntry)

    @property
    def needs_ca(self) -> bool:
        """The broker's TLS listener, the HQ API or a store's POS API needs the fleet's CA."""
        return (self.broker.tls or self.hub.api_host is not None
                or any(s.api_host is not None for s in self.stores))

    @property
    def regions(self) -> list[str]:
        return sorted({s.region for s in self.stores})


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def parse_fleet(data: dict[str, Any]) -> Fleet:
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        # The value is shown, unless it is a password.
        lines = [f"  {_where(e['loc'])}"
                 + (f" = {e['input']!r}" if isinstance(e["input"], str | int)
                    and e["loc"][-1:] != ("password",) else "")
                 + f": {e['msg']}" for e in exc.errors()]
        raise FleetError("invalid fleet file:\n" + "\n".join(lines)) from None
    problems: list[str] = []
    seen: dict[str, int] = {}
    duplicates: set[int] = set()
    for i, store in enumerate(fleet.stores):
        # Case-insensitively: S001 and s001 are surely a typo, and would share one snippet file
        # on a case-insensitive file system.
        key = store.store_id.lower()
        if key in seen:
            problems.append(f"  stores[{i}].store_id: {store.store_id!r} is already"
                            f" stores[{seen[key]}]")
            duplicates.add(i)
        else:
            seen[key] = i
    users: dict[str, str] = {fleet.hub.username: "the hub"}
    for i, store in enumerate(fleet.stores):
        if i in duplicates:
            continue
        if store.user in users:
            problems.append(f"  stores[{i}]: username {store.user!r} is already used by"
                            f" {users[store.user]}")
        else:
            users[store.user] = f"store {store.store_id}"
    if problems:
        raise FleetError("invalid fleet file:\n" + "\n".join(problems))
    return fleet


def load_fleet(path: Path) -> Fleet:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise FleetError(f"cannot read the fleet file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{path} is not valid TOML: {exc}") from None
    return parse_fleet(data)


# -- what each login may do --------------------------------------------------------------------


def _subtree(topic: str, level: str) -> str:
    """``mg/v1/store/S001/up/#`` from ``mg/v1/store/S001/up/events`` and ``up``."""
    head, sep, _ = topic.partition(f"/{level}/")
    if not sep:
        raise ValueError(f"{topic} has no /{level}/ level")
    return f"{head}/{level}/#"


def hub_rules(fleet: Fleet) -> list[tuple[str, str]]:
    rules = [("read", topics.HUB_UPLINK),
             ("write", f"{topics.PREFIX}/store/+/down/#"),
             ("write", topics.FLEET_CAMPAIGNS),
             ("write", topics.FLEET_DIRECTORY)]
    rules += [("write", topics.region_campaigns(region)) for region in fleet.regions]
    return rules


def store_rules(store: StoreEntry) -> list[tuple[str, str]]:
    sid = store.store_id
    # Write on exactly the topics a store publishes, not its whole up/ subtree: anything else
    # (a retained message parked under up/, say) the hub would be handed on every reconnect.
    return [*(("write", t) for t in store_publishes(sid)),
            ("read", _subtree(topics.ack(sid), "down")),
            ("read", topics.FLEET_CAMPAIGNS),
            ("read", topics.FLEET_DIRECTORY),
            ("read", topics.region_campaigns(store.region))]


def store_publishes(store_id: str) -> list[str]:
    """Every topic ``edge.sync`` publishes on."""
    return [topics.events(store_id), topics.status(store_id),
            topics.directory_request(store_id), topics.rpc_request(store_id),
            topics.recovery_request(store_id)]


def store_subscribes(store_id: str, region: str) -> list[str]:
    """Every topic ``edge.sync`` subscribes to."""
    return [topics.ack(store_id), topics.directory_page(store_id), topics.rpc_reply(store_id),
            topics.recovery_page(store_id), topics.FLEET_CAMPAIGNS, topics.region_campaigns(region),
            topics.store_campaigns(store_id), topics.FLEET_DIRECTORY]


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest), for the self-checks below."""
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


def _self_check(fleet: Fleet) -> None:
    """Every topic the edge and the hub use is granted to the one that uses it: a protocol change
    that moved a topic out of these subtrees fails here, not silently at the broker."""
    hub = hub_rules(fleet)

    def allowed(rules: list[tuple[str, str]], access: str, topic: str) -> bool:
        return any(a == access and matches(f, topic) for a, f in rules)

    for store in fleet.stores:
        own = store_rules(store)
        sid = store.store_id
        wrong = [t for t in store_publishes(sid)
                 if not (allowed(own, "write", t) and allowed(hub, "read", t))]
        wrong += [t for t in store_subscribes(sid, store.region)
                  if not (allowed(own, "read", t) and allowed(hub, "write", t))]
        for other in fleet.stores:
            if other.store_id != sid:
                wrong += [t for t in (topics.events(other.store_id),)
                          if allowed(own, "write", t)]
                wrong += [t for t in (topics.ack(other.store_id),) if allowed(own, "read", t)]
        if wrong:
            raise ProvisionError(f"the ACL rules do not fit the topics of store {sid}: {wrong}")


# -- the files ---------------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    # JSON's escapes are a subset of TOML basic strings' (control characters are refused above).
    return json.dumps(value)


def acl_text(fleet: Fleet, source: str = "the fleet file") -> str:
    source = source if source.isprintable() else "the fleet file"
    lines = [
        f"# membergate broker ACL, made by `membergate-provision broker` from {source}.",
        "# One `user` block per MQTT login; nothing is granted to anyone else.",
        "# Regenerate it from the fleet file instead of editing it; reload Mosquitto (SIGHUP).",
        "",
        "# the hub: every store's uplink in, every store's downlink and the fleet topics out",
        f"user {fleet.hub.username}",
        *(f"topic {access} {topic}" for access, topic in hub_rules(fleet)),
    ]
    for store in fleet.stores:
        name = f" {store.name}" if store.name else ""
        lines += ["", f"# store {store.store_id}{name} (region {store.region})",
                  f"user {store.user}",
                  *(f"topic {access} {topic}" for access, topic in store_rules(store))]
    return "\n".join(lines) + "\n"


def conf_text(fleet: Fleet) -> str:
    b = fleet.broker
    d = b.config_dir.rstrip("/") or ""
    listener = f"listener {b.listen_port}" + (f" {b.bind}" if b.bind else "")
    return "\n".join([
        "# membergate: Mosquitto settings, made by `membergate-provision broker`.",
        "# Install: this file into Mosquitto's include_dir",
        f"# (Debian: /etc/mosquitto/conf.d/{CONF_NAME}),",
        f"# passwd and acl into {d}/, readable by the user Mosquitto runs as:",
        f"#   install -d -m 0750 -o mosquitto {d}",
        f"#   install -m 0600 -o mosquitto passwd acl{' server.key' if b.tls else ''} {d}/",
        *([f"#   install -m 0644 ca.crt server.crt {d}/"] if b.tls else []),
        "# then restart Mosquitto. After regenerating passwd or acl, SIGHUP reloads them.",
        *(["# TLS: the certificate is for the host the stores dial; clients verify it against",
           "# the fleet's CA (ca.crt). TLS 1.2 or newer."] if b.tls else
          ["# Passwords cross this listener in clear text: keep it on a private network or VPN",
           "# (or provision with tls = true)."]),
        listener,
        *([f"cafile {d}/ca.crt", f"certfile {d}/server.crt", f"keyfile {d}/server.key",
           "tls_version tlsv1.2"] if b.tls else []),
        "allow_anonymous false",
        "# The hub's [hub] max_payload_bytes: a larger message is dropped here, not at the hub.",
        f"message_size_limit {b.message_size_limit}",
        f"password_file {d}/passwd",
        f"acl_file {d}/acl",
        "# The client id is the username: a store cannot take over (and so disconnect) the hub's",
        "# session, or another store's, by sending its client id.",
        "use_username_as_clientid true",
        "",
    ])


def store_snippet(fleet: Fleet, store: StoreEntry, password: str) -> str:
    b = fleet.broker
    lines = [
        f"# membergate store {store.store_id}: broker credentials for this box only (keep 0600).",
        "# Merge these tables into the store's edge.toml. Its [store] must say",
        f"# store_id = {_toml_str(store.store_id)} and region = {_toml_str(store.region)}:"
        " the broker's ACL is written for them.",
        "[sync]",
    ]
    if b.host is not None:
        lines.append(f"broker_host = {_toml_str(b.host)}")
    lines += [f"broker_port = {b.listen_port}",
              f"username = {_toml_str(store.user)}",
              f"password = {_toml_str(password)}"]
    if fleet.hub.public_key is not None:
        lines += ["# the hub's campaign signing key: bundles not signed by it are refused",
                  f"hub_public_key = {_toml_str(fleet.hub.public_key)}"]
    lines += _tls_table(fleet, "sync")
    if store.api_host is not None:
        api = fleet.pos_api
        lines += ["", "[api]",
                  f"# every interface: the POS terminals dial https://{store.api_host}:<port>"
                  " and trust the fleet's CA (ca/ca.crt)",
                  'host = "0.0.0.0"',
                  f"# pos-api/{store.store_id}.crt and .key, copied to this box",
                  f"tls_cert_file = {_toml_str(api.cert_path)}",
                  f"tls_key_file = {_toml_str(api.key_path)}"]
    return "\n".join(lines) + "\n"


def hub_snippet(fleet: Fleet, password: str, api_token: str | None = None) -> str:
    b = fleet.broker
    lines = [
        "# membergate hub: broker credentials (keep 0600). Merge these tables into hub.toml.",
        "[broker]",
    ]
    if b.host is not None:
        lines.append(f"host = {_toml_str(b.host)}")
    else:
        lines.append('# host = "..."  # set it: with no host the hub starts its own broker')
    lines += [f"port = {b.listen_port}",
              f"username = {_toml_str(fleet.hub.username)}",
              f"password = {_toml_str(password)}",
              *_tls_table(fleet, "broker")]
    hub = fleet.hub
    if hub.api_host is not None and api_token is not None:
        lines += ["", "[api]",
                  f"# every interface: HQ dials https://{hub.api_host}:<port> with this token"
                  " and trusts the fleet's CA (ca/ca.crt)",
                  'host = "0.0.0.0"',
                  f"token = {_toml_str(api_token)}",
                  "# hub/hq-api.crt and .key, copied to this box",
                  f"tls_cert_file = {_toml_str(hub.api_cert_path)}",
                  f"tls_key_file = {_toml_str(hub.api_key_path)}"]
    return "\n".join(lines) + "\n"


def _tls_table(fleet: Fleet, table: str) -> list[str]:
    if not fleet.broker.tls:
        return []
    return ["", f"[{table}.tls]", "# the fleet's CA certificate (ca/ca.crt), copied to this box",
            f"ca_file = {_toml_str(fleet.broker.ca_path)}"]


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_CHARS)


def issued_api_token(out: Path) -> str | None:
    """The HQ API token a previous run wrote into ``out`` (``hub/broker.toml`` [api])."""
    try:
        section = tomllib.loads((out / "hub" / "broker.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    token = section.get("api", {}).get("token")
    return token if isinstance(token, str) and len(token) >= API_TOKEN_MIN else None


def issued_passwords(out: Path) -> dict[str, str]:
    """Username -> password from the snippets a previous run wrote into ``out``."""
    found: dict[str, str] = {}
    sources = [(out / "hub" / "broker.toml", "broker")]
    stores = out / "stores"
    if stores.is_dir():
        sources += [(p, "sync") for p in sorted(stores.glob("*.toml"))]
    for path, table in sources:
        try:
            section = tomllib.loads(path.read_text(encoding="utf-8")).get(table, {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        user, password = section.get("username"), section.get("password")
        if isinstance(user, str) and isinstance(password, str):
            try:
                found[user] = _check_password(password) or ""
            except ValueError:
                continue
    return found


def hash_passwords(passwords: dict[str, str], tool: str) -> bytes:
    """A Mosquitto password file for ``passwords``, made by ``mosquitto_passwd -U``: the plain
    text goes through a 0600 file in a private temporary directory, never through argv."""
    with tempfile.TemporaryDirectory(prefix="membergate-passwd-") as tmp:
        plain = Path(tmp) / "passwd"
        _write(plain, "".join(f"{u}:{p}\n" for u, p in passwords.items()).encode(), SECRET_MODE)
        try:
            done = subprocess.run([tool, "-U", str(plain)], capture_output=True, text=True,
                                  timeout=60, check=False)
        except OSError as exc:
            raise ProvisionError(f"cannot run {tool}: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise ProvisionError(f"{tool} -U did not finish in 60 s") from None
        if done.returncode != 0:
            raise ProvisionError(f"{tool} -U failed ({done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()}")
        hashed = plain.read_bytes()
    users = []
    for line in hashed.decode().splitlines():
        user, _, digest = line.partition(":")
        if not re.match(r"^\$\d+\$", digest):
            raise ProvisionError(f"{tool} left an unhashed line for {user!r}")
        users.append(user)
    if users != list(passwords):
        raise ProvisionError(f"{tool} wrote users {users}, expected {list(passwords)}")
    return hashed


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically: a temporary file made with ``mode`` (never wider), then renamed."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; a 0644 file is meant to be 0644
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Provisioned:
    out: Path
    passwd: Path
    acl: Path
    conf: Path
    hub: Path
    stores: dict[str, Path]
    users: list[str]
    kept: list[str] = field(default_factory=list)  # usernames whose issued password was kept
    stale: list[Path] = field(default_factory=list)  # snippets of stores no longer in the fleet
    ca_cert: Path | None = None  # tls: the CA certificate every box is given
    new_ca: bool = False  # tls: the CA was made by this run (not kept from an earlier one)
    api_certs: dict[str, Path] = field(default_factory=dict)  # store id -> its POS API .crt
    hq_api_cert: Path | None = None  # the HQ API's .crt, with the hub's api_host
    hq_token_kept: bool = False  # the HQ API token of an earlier run was kept


@dataclass(frozen=True)
class TlsMaterial:
    ca: certs.Issued
    new_ca: bool
    server: certs.Issued | None  # the broker's, with ``tls = true``
    api: dict[str, certs.Issued]  # store id -> its POS API's, for stores with an api_host
    hq_api: certs.Issued | None  # the hub's HQ API's, with the hub's api_host


def tls_material(fleet: Fleet, out: Path) -> TlsMaterial:
    """The fleet's CA (kept from an earlier run into ``out``, else a new one), a new server
    certificate for the broker's host (with ``tls = true``) and one for each store's
    ``api_host``. A CA the boxes already trust is never replaced silently: if its files are
    there but unusable, provisioning stops."""
    cert_path, key_path = out / "ca" / "ca.crt", out / "ca" / "ca.key"
    if cert_path.exists() or key_path.exists():
        try:
            ca = certs.load(cert_path.read_bytes(), key_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise FleetError(
                f"{cert_path.parent} holds a CA that cannot be used ({exc}); restore ca.crt and"
                " ca.key, or remove both to make a new CA (every box then needs the new"
                " ca.crt)") from None
        new = False
    else:
        host = fleet.broker.host
        ca = certs.new_ca(f"membergate fleet CA for {host}" if host else "membergate fleet CA")
        new = True
    server = (certs.server_cert(ca, fleet.broker.host)
              if fleet.broker.tls and fleet.broker.host is not None else None)
    api = {s.store_id: certs.server_cert(ca, s.api_host) for s in fleet.stores
           if s.api_host is not None}
    hq = fleet.hub.api_host
    return TlsMaterial(ca, new, server, api, certs.server_cert(ca, hq) if hq else None)


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FleetError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FleetError(f"{out} already holds files; use --force to write over them"
                         " (passwords issued there are kept unless --rotate)")


def find_mosquitto_passwd(given: str | None = None) -> str:
    tool = given or shutil.which("mosquitto_passwd") or MOSQUITTO_PASSWD
    if not (os.path.isfile(tool) and os.access(tool, os.X_OK)):
        raise ProvisionError(f"mosquitto_passwd not found at {tool} (apt install mosquitto)")
    return tool


def provision(fleet: Fleet, out: Path, *, force: bool = False, rotate: bool = False,
              tool: str | None = None, source: str = "the fleet file") -> Provisioned:
    """Write the broker files and the per-store snippets into ``out``; on any error before the
    first file is written (a bad out dir, no ``mosquitto_passwd``), nothing is written."""
    check_out_dir(out, force)
    passwd_tool = find_mosquitto_passwd(tool)
    _self_check(fleet)
    issued = issued_passwords(out) if out.is_dir() and not rotate else {}
    kept_token = issued_api_token(out) if out.is_dir() and not rotate else None
    api_token = (kept_token or secrets.token_urlsafe(PASSWORD_CHARS)
                 if fleet.hub.api_host is not None else None)

    passwords: dict[str, str] = {}
    kept: list[str] = []
    for user, given in [(fleet.hub.username, fleet.hub.password),
                        *((s.user, s.password) for s in fleet.stores)]:
        if given is not None:
            passwords[user] = given
        elif user in issued:
            passwords[user] = issued[user]
            kept.append(user)
        else:
            passwords[user] = new_password()
    hashed = hash_passwords(passwords, passwd_tool)  # before anything is written
    tls = tls_material(fleet, out) if fleet.needs_ca else None

    for sub in (out, out / "broker", out / "hub", out / "stores",
                *([out / "ca"] if tls is not None else []),
                *([out / "pos-api"] if tls is not None and tls.api else [])):
        if not sub.exists():
            sub.mkdir(mode=DIR_MODE, parents=True)
    result = Provisioned(out=out, passwd=out / "broker" / "passwd", acl=out / "broker" / "acl",
                         conf=out / "broker" / CONF_NAME, hub=out / "hub" / "broker.toml",
                         stores={}, users=list(passwords), kept=kept)
    if tls is not None:
        # The CA first: should a later write fail, a rerun finds and keeps the same CA.
        if tls.new_ca:
            _write(out / "ca" / "ca.key", tls.ca.key_pem, SECRET_MODE)
            _write(out / "ca" / "ca.crt", tls.ca.cert_pem, PLAIN_MODE)
        if tls.server is not None:
            _write(out / "broker" / "ca.crt", tls.ca.cert_pem, PLAIN_MODE)
            _write(out / "broker" / "server.key", tls.server.key_pem, SECRET_MODE)
            _write(out / "broker" / "server.crt", tls.server.cert_pem, PLAIN_MODE)
        for store_id, api_cert in tls.api.items():
            _write(out / "pos-api" / f"{store_id}.key", api_cert.key_pem, SECRET_MODE)
            _write(out / "pos-api" / f"{store_id}.crt", api_cert.cert_pem, PLAIN_MODE)
            result.api_certs[store_id] = out / "pos-api" / f"{store_id}.crt"
        if tls.hq_api is not None:
            _write(out / "hub" / "hq-api.key", tls.hq_api.key_pem, SECRET_MODE)
            _write(out / "hub" / "hq-api.crt", tls.hq_api.cert_pem, PLAIN_MODE)
            result.hq_api_cert = out / "hub" / "hq-api.crt"
        result.ca_cert, result.new_ca = out / "ca" / "ca.crt", tls.new_ca
    _write(result.passwd, hashed, SECRET_MODE)
    _write(result.acl, acl_text(fleet, source).encode(), SECRET_MODE)
    _write(result.conf, conf_text(fleet).encode(), PLAIN_MODE)
    _write(result.hub, hub_snippet(fleet, passwords[fleet.hub.username], api_token).encode(),
           SECRET_MODE)
    result.hq_token_kept = api_token is not None and api_token == kept_token
    for store in fleet.stores:
        path = out / "stores" / f"{store.store_id}.toml"
        _write(path, store_snippet(fleet, store, passwords[store.user]).encode(), SECRET_MODE)
        result.stores[store.store_id] = path
    written = set(result.stores.values())
    result.stale = [p for p in sorted((out / "stores").glob("*.toml")) if p not in written]
    if (out / "pos-api").is_dir():  # a store gone, or no api_host any more
        result.stale += [p for p in sorted((out / "pos-api").iterdir())
                         if p.stem not in result.api_certs]
    if result.hq_api_cert is None:  # the hub has no api_host any more
        result.stale += [p for p in (out / "hub" / "hq-api.crt", out / "hub" / "hq-api.key")
                         if p.exists()]
    return result


# -- the command -------------------------------------------------------------------------------


def _broker_command(args: argparse.Namespace) -> int:
    fleet_path, out = Path(args.fleet), Path(args.out).absolute()
    fleet = load_fleet(fleet_path)
    if args.hub_public_key is not None:
        try:
            _check_public_key(args.hub_public_key)
        except ValueError as exc:
            raise FleetError(f"--hub-public-key: {exc}") from None
        fleet.hub.public_key = args.hub_public_key
    done = provision(fleet, out, force=args.force, rotate=args.rotate, tool=args.mosquitto_passwd,
                     source=fleet_path.name)
    users = ", ".join(done.users)
    print(f"wrote {done.passwd}  (0600; {len(done.users)} logins: {users})")
    print(f"wrote {done.acl}  (0600; one user block per login)")
    print(f"wrote {done.conf}  (include it in mosquitto.conf; it says where passwd and acl go)")
    print(f"wrote {done.hub}  (0600; the hub's [broker] username and password)")
    print("per-store secrets (0600; give each box only its own, merged into its edge.toml [sync]):")
    width = max(len(s) for s in done.stores)
    for store_id, path in done.stores.items():
        print(f"  {store_id.ljust(width)}  {path}")
    if done.ca_cert is not None:
        b = fleet.broker
        if b.tls:
            print(f"wrote {out / 'broker'}/server.crt and server.key (0600) for {b.host}, signed"
                  f" by the fleet CA; install them beside passwd and acl")
        print(f"{'made' if done.new_ca else 'kept'} the fleet CA in {done.ca_cert.parent}"
              f" (ca.key 0600: keep it off the boxes; it signs the next server certificate)")
        if b.tls:
            print(f"copy {done.ca_cert} to {b.ca_path} on the hub and on every store box")
    if done.api_certs:
        api = fleet.pos_api
        print(f"POS API certificates (key 0600), one per store with an api_host; copy each to"
              f" {api.cert_path} and {api.key_path} on its box:")
        hosts = {s.store_id: s.api_host for s in fleet.stores}
        for store_id, crt in done.api_certs.items():
            print(f"  {store_id}  {crt} and {crt.with_suffix('.key')}  for {hosts[store_id]}")
        print(f"the POS terminals trust {done.ca_cert} for https:// and wss://")
    if done.hq_api_cert is not None:
        hub = fleet.hub
        print(f"wrote {done.hq_api_cert} and {done.hq_api_cert.with_suffix('.key')} (0600) for"
              f" the HQ API at {hub.api_host}; copy them to {hub.api_cert_path} and"
              f" {hub.api_key_path} on the hub")
        print(f"{'kept' if done.hq_token_kept else 'made'} the HQ API token (in {done.hub});"
              f" HQ trusts {done.ca_cert} for https://")
    if done.kept:
        print(f"kept the passwords already issued to {', '.join(done.kept)} (--rotate: new ones)")
    if fleet.hub.public_key is None:
        print("warning: no hub public key ([hub] public_key or --hub-public-key, as"
              " `membergate-hub init` prints it): the store snippets have no hub_public_key,"
              " and a store without it refuses every campaign bundle", file=sys.stderr)
    for path in done.stale:
        if path.suffix == ".toml":
            print(f"note: {path} is not in this fleet any more; its login is gone from passwd"
                  " and acl (delete the file)")
        else:
            print(f"note: {path} belongs to nothing with an api_host now (delete the file)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="membergate-provision",
        description="Provision the fleet: broker credentials, ACLs and certificates.")
    sub = parser.add_subparsers(dest="command", required=True)
    broker = sub.add_parser(
        "broker", help="Mosquitto password file, ACL and conf lines, per-store credentials",
        description=(__doc__ or "").split("Design choices:")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    broker.add_argument("--fleet", required=True, help="the fleet description (TOML)")
    broker.add_argument("--out", required=True, help="directory to write into (made if absent)")
    broker.add_argument("--force", action="store_true",
                        help="write into a directory that already holds files")
    broker.add_argument("--rotate", action="store_true",
                        help="with --force: new passwords instead of keeping those issued there")
    broker.add_argument("--hub-public-key", default=None,
                        help="the hub's campaign signing key (base64, `membergate-hub init`"
                             " prints it); overrides [hub] public_key")
    broker.add_argument("--mosquitto-passwd", default=None,
                        help="the mosquitto_passwd binary"
                             f" (default: on PATH, or {MOSQUITTO_PASSWD})")
    args = parser.parse_args(argv)
    try:
        if args.command == "broker":
            return _broker_command(args)
    except FleetError as exc:
        print(f"membergate-provision: error: {exc}", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 2
    except ProvisionError as exc:
        print(f"membergate-provision: error: {exc}", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 1
    except OSError as exc:  # while writing: some files may be written, none half-written
        print(f"membergate-provision: error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
