"""Campaign bundles at the hub: validated with the protocol's rule language, signed, stored, and
published as retained manifests for the fleet, a region or one store."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.core.db import Tx
from protocol import signing, topics
from protocol.campaigns import MAX_BUNDLE_VERSION, CampaignBundle
from protocol.codec import encode
from protocol.private_files import write_private
from protocol.sync import CampaignManifest

KEY_FILE = "hub_signing_key.pem"


class StaleBundle(ValueError):
    code = "stale_version"


class VersionJump(StaleBundle):
    code = "version_jump"


# The most a new version may exceed the one held: a slip of the keyboard (a timestamp, a
# version with extra digits) would otherwise leave the scope near the largest version, with
# nowhere for the next bundle to go, since stores only ever move up.
MAX_VERSION_STEP = 1_000_000


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """The hub's Ed25519 key; made once, at the first start (``membergate-hub init``)."""
    path = data_dir / KEY_FILE
    if path.exists():
        return signing.load_private_pem(path.read_bytes())
    key = signing.new_private_key()
    try:
        write_private(path, signing.private_pem(key))
    except FileExistsError:  # another process made it first: that one is the hub's key
        return signing.load_private_pem(path.read_bytes())
    return key


def manifest(bundle: CampaignBundle, key: Ed25519PrivateKey) -> bytes:
    signed = signing.sign(bundle, key)
    return encode(CampaignManifest(key_id=signing.key_id(key), bundle=signed))


def held_order(tx: Tx, scope: str, scope_id: str | None) -> tuple[int, int]:
    """The ``(generation, version)`` held for a scope; ``(0, 0)`` when none is."""
    row = tx.one("SELECT generation, version FROM campaign_bundles WHERE scope = ?"
                 " AND scope_id = ?", (scope, scope_id or ""))
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)


def check_newer(tx: Tx, bundle: CampaignBundle) -> None:
    """Raise ``StaleBundle`` (or ``VersionJump``) unless ``bundle`` may replace the one held:
    newer by ``(generation, version)``, without skipping a generation or leaping far ahead.
    Read-only, so a preview asks the very question a push does."""
    gen, held = held_order(tx, bundle.scope, bundle.scope_id)
    way_out = (f"; to start again from version 1, push generation {gen + 1}"
               if held > MAX_BUNDLE_VERSION - MAX_VERSION_STEP else "")
    if bundle.generation < gen or (bundle.generation == gen and bundle.version <= held):
        raise StaleBundle(f"{bundle.scope} bundle generation {bundle.generation} version"
                          f" {bundle.version} is not newer than the held generation {gen}"
                          f" version {held}{way_out}")
    if bundle.generation > gen + 1:
        raise VersionJump(f"{bundle.scope} bundle generation {bundle.generation} skips"
                          f" generations: the next is {gen + 1}")
    if bundle.generation == gen and bundle.version - held > MAX_VERSION_STEP:
        raise VersionJump(f"{bundle.scope} bundle version {bundle.version} is more than"
                          f" {MAX_VERSION_STEP:,} above the held version {held}: use"
                          f" {held + 1}")


def store_bundle(tx: Tx, bundle: CampaignBundle, key: Ed25519PrivateKey) -> tuple[str, bytes]:
    """Sign and keep ``bundle``; one not newer than the one held, by ``(generation, version)``,
    is refused. A version far above the one held is refused too; one held too high to go
    beyond is left behind by the next generation (``CampaignBundle.generation``)."""
    check_newer(tx, bundle)
    scope_id = bundle.scope_id or ""
    payload = manifest(bundle, key)
    tx.execute(
        "INSERT INTO campaign_bundles(scope, scope_id, version, manifest, generation)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(scope, scope_id) DO UPDATE SET"
        " version = excluded.version, manifest = excluded.manifest,"
        " generation = excluded.generation",
        (bundle.scope, scope_id, bundle.version, payload, bundle.generation))
    issued = int(bundle.issued_at.timestamp() * 1000)
    tx.executemany("INSERT INTO campaign_first_pushed(campaign_id, issued_ms) VALUES (?, ?)"
                   " ON CONFLICT(campaign_id) DO NOTHING",
                   [(c.campaign_id, issued) for c in bundle.campaigns])
    return topics.campaign_topic(bundle.scope, bundle.scope_id), payload


def held_manifests(tx: Tx) -> list[tuple[str, bytes]]:
    return [(topics.campaign_topic(scope, scope_id or None), bytes(payload))
            for scope, scope_id, payload in tx.all(
                "SELECT scope, scope_id, manifest FROM campaign_bundles ORDER BY scope, scope_id")]
