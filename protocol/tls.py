"""TLS for the MQTT link: the settings a store's ``[sync.tls]`` and the hub's ``[broker.tls]``
hold, and the client context made from them; and the one check the HTTPS APIs (the store's
POS API, the hub's HQ API) share before serving.

Stores reach the hub's broker over networks the chain does not own (a shop's DSL line, a
mobile router), and the MQTT password travels inside the CONNECT packet: without TLS anyone on
the path reads it. The context always verifies the broker's certificate and its name (the
host the client dials), and speaks TLS 1.2 or newer; there is deliberately no switch to turn
verification off. ``ca_file`` names the CA that signed the broker's certificate (the private CA
``membergate-provision broker`` makes with ``tls = true``); without it the system's trusted
CAs are used, as for a broker with a public certificate. ``cert_file``/``key_file`` add a
client certificate, for brokers that ask for one.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, model_validator


class TlsError(ValueError):
    """A TLS setting cannot be used (a file missing or not a certificate or key)."""


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = None  # PEM; None: the system's trusted CAs
    cert_file: Path | None = None  # PEM client certificate (chain), for mutual TLS
    key_file: Path | None = None  # PEM key of cert_file; None: cert_file holds it too

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is given without cert_file")
        return self


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """A context that verifies the broker (certificate chain and host name) with TLS >= 1.2.
    Raises ``TlsError`` naming the setting and the file when one cannot be used."""
    if settings.ca_file is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # the system's CAs
    else:
        # A private CA stands alone, so that a certificate some public CA issued for the same
        # name is not accepted in its place. (Both verify the chain and the name by default.)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=str(settings.ca_file))
        except FileNotFoundError:
            raise TlsError(f"tls.ca_file {settings.ca_file}: no such file") from None
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"tls.ca_file {settings.ca_file}: not a PEM certificate ({exc})"
                           ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file is not None:
        key = settings.key_file
        try:
            context.load_cert_chain(str(settings.cert_file), str(key) if key else None)
        except FileNotFoundError as exc:
            raise TlsError(f"tls.cert_file/key_file: {exc.filename or exc}: no such file"
                           ) from None
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"tls.cert_file {settings.cert_file}: not a certificate and key"
                           f" that belong together ({exc})") from None
    return context


class ServedOverTls(BaseModel):
    """The certificate an HTTP API is served with (the store's POS API, the hub's HQ API:
    their ``[api]`` sections take these fields): HTTPS when given, plain HTTP when not. PEM
    files; both or neither. Loaded before serving by ``load_server_config``."""

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _cert_and_key(self) -> ServedOverTls:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("[api] tls_cert_file and tls_key_file go together")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file is not None else "http"


class _ServerConfig(Protocol):
    """What ``load_server_config`` needs of a ``uvicorn.Config`` (protocol imports no server)."""

    def load(self) -> None: ...


def load_server_config(config: _ServerConfig, setting: str, cert_file: Path | None,
                       key_file: Path | None) -> None:
    """Load an HTTP server's configuration now, certificate and key included, so that an
    unusable one is a ``TlsError`` naming ``setting`` (``[api]``) before anything is served,
    not an exception inside the server's task once it starts."""
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{setting} tls_cert_file {cert_file} / tls_key_file {key_file}:"
                       f" cannot be used ({exc})") from None
