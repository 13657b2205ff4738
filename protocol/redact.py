"""Secrets never reach output or logs: a token shows its last four characters (enough to tell
which one it is), a password nothing, a URL loses its password."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
SECRET_KEYS = frozenset({"password", "token", "tokens", "secret", "key_password"})


def mask(secret: str) -> str:
    return f"{HIDDEN}{secret[-4:]}" if len(secret) >= 12 else HIDDEN


def url(value: str) -> str:
    """``value`` with any password in it replaced."""
    parts = urlsplit(value)
    if parts.password is None:
        return value
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}{port}"))


def config(data: Any) -> Any:
    """A configuration as plain data (``model_dump(mode="json")``) with every secret masked:
    passwords hidden, tokens reduced to their last four characters, URLs without passwords."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            if k in SECRET_KEYS and isinstance(v, str):
                out[k] = HIDDEN if "password" in k else mask(v)
            elif k in SECRET_KEYS and isinstance(v, dict):
                out[k] = {name: mask(t) if isinstance(t, str) else t for name, t in v.items()}
            else:
                out[k] = config(v)
        return out
    if isinstance(data, list):
        return [config(v) for v in data]
    if isinstance(data, str) and "://" in data:
        return url(data)
    return data
