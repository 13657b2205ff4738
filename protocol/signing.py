"""Ed25519 signatures over campaign bundles.

The hub signs ``CampaignBundle.signing_bytes()`` (canonical msgpack without the signature); an edge
verifies with the public key it was provisioned with. A bundle whose signature does not verify
is refused before any of its content is used.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.campaigns import CampaignBundle


class SignatureError(ValueError):
    code = "bad_signature"


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_pem(data: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the hub signing key is not an Ed25519 key")
    return key


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 raw bytes: short enough for a TOML file."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}") from None


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short fingerprint naming the key in manifests and logs."""
    return hashlib.sha256(base64.b64decode(public_b64(key))).hexdigest()[:16]


def sign(bundle: CampaignBundle, key: Ed25519PrivateKey) -> CampaignBundle:
    signature = key.sign(bundle.signing_bytes())
    return bundle.model_copy(update={"signature": base64.b64encode(signature).decode("ascii")})


def verify(bundle: CampaignBundle, public: Ed25519PublicKey) -> None:
    """Raise ``SignatureError`` unless ``bundle`` carries a valid signature by ``public``."""
    if not bundle.signature:
        raise SignatureError("the bundle is not signed")
    try:
        signature = base64.b64decode(bundle.signature, validate=True)
        public.verify(signature, bundle.signing_bytes())
    except (ValueError, InvalidSignature):
        raise SignatureError("the bundle's signature does not verify") from None
