"""``membergate-hub push-campaigns``: a bundle file to the fleet, through the running hub's HQ
API when there is one, or by a hub started for the push when there is none.

A second hub process must not start beside a running one: its embedded broker would bind the
running hub's port. The running hub takes the bundle over ``POST /v1/campaigns`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from hub.config import HubConfig
from protocol.campaigns import CampaignBundle, parse_bundle

TOKEN_ENV = "MEMBERGATE_HQ_TOKEN"


class PushError(Exception):
    """What stopped a push, in one line for the operator."""


def load_bundle_file(path: Path) -> CampaignBundle:
    """A campaign bundle from ``path``: TOML (``.toml``) or JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PushError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return parse_bundle(text, path.name)
    except ValueError as exc:  # pydantic's ValidationError and TOMLDecodeError are ValueErrors
        raise PushError(f"{path} is not a valid campaign bundle: {exc}") from None


def configured_api(cfg: HubConfig) -> str | None:
    """The HQ API a hub run with ``cfg`` serves, as this box dials it; None when it serves
    none (no ``[api] token``) or on a port it picks at start."""
    if not cfg.api.token or cfg.api.port == 0:
        return None
    host = cfg.api.host
    if host in ("0.0.0.0", "::", ""):  # every interface: this box's loopback is one of them
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{cfg.api.scheme}://{host}:{cfg.api.port}"


def api_token(given: str | None, cfg: HubConfig) -> str | None:
    """``--token``, else the environment's ``MEMBERGATE_HQ_TOKEN``, else ``[api] token``."""
    return given or os.environ.get(TOKEN_ENV) or cfg.api.token


def push_over_api(url: str, token: str | None, bundle: CampaignBundle,
                  ca_file: str | None = None) -> dict[str, Any]:
    """``POST {url}/v1/campaigns``; the hub signs, stores and publishes the bundle. Raises
    ``ConnectionError`` when nothing answers at ``url``, ``PushError`` for any other refusal."""
    if not token:
        raise PushError(f"the HQ API needs its bearer token: --token, {TOKEN_ENV} or the"
                        " hub config's [api] token")
    verify: Any = ca_file if ca_file else True
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/campaigns",
                              json=bundle.model_dump(mode="json"),
                              headers={"Authorization": f"Bearer {token}"},
                              timeout=30, verify=verify)
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise PushError(f"the HQ API at {url}: its certificate is not trusted (--ca-file"
                            " names the fleet's CA)") from None
        raise ConnectionError(f"nothing answers at {url}") from None
    except httpx.HTTPError as exc:
        raise PushError(f"the HQ API at {url}: {exc}") from None
    if response.status_code != 201:
        try:
            body = response.json()
            error = body.get("error") or {"code": "invalid", "message": body["detail"]}
            why = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError, AttributeError):
            why = f"HTTP {response.status_code}"
        raise PushError(f"the HQ API at {url} refused the bundle: {why}")
    answer: dict[str, Any] = response.json()
    return answer
