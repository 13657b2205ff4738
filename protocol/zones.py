"""Time zones as the chain names them: IANA names ("Asia/Shanghai"), checked once, in one place
(the hub's configuration, its store registry and the provisioning fleet file all take them)."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def known_zone(value: str) -> str:
    """``value`` if it names a time zone this machine knows, else a clear ``ValueError``."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as"
                         " 'Asia/Shanghai')") from exc
    return value


Zone = Annotated[str, AfterValidator(known_zone)]
