"""Topic names, in one place for edge, hub and the broker ACLs that provisioning writes.

Everything a store publishes is under ``mg/v1/store/<its id>/up/``; everything addressed to one
store is under ``mg/v1/store/<its id>/down/``; the broker's ACL confines a store to its own
subtree plus the fleet and region downlinks.
"""

from __future__ import annotations

import re

PREFIX = "mg/v1"
_STORE_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _store(store_id: str) -> str:
    if not _STORE_ID.match(store_id):
        raise ValueError(f"not a store id usable in a topic: {store_id!r}")
    return f"{PREFIX}/store/{store_id}"


def events(store_id: str) -> str:
    return f"{_store(store_id)}/up/events"


def status(store_id: str) -> str:
    return f"{_store(store_id)}/up/status"


def directory_request(store_id: str) -> str:
    return f"{_store(store_id)}/up/directory"


def rpc_request(store_id: str) -> str:
    return f"{_store(store_id)}/up/rpc"


def rpc_reply(store_id: str) -> str:
    return f"{_store(store_id)}/down/rpc"


def recovery_request(store_id: str) -> str:
    return f"{_store(store_id)}/up/recovery"


def recovery_page(store_id: str) -> str:
    return f"{_store(store_id)}/down/recovery"


def ack(store_id: str) -> str:
    return f"{_store(store_id)}/down/ack"


def directory_page(store_id: str) -> str:
    return f"{_store(store_id)}/down/directory"


def store_campaigns(store_id: str) -> str:
    return f"{_store(store_id)}/down/campaigns"


def region_campaigns(region: str) -> str:
    if not _STORE_ID.match(region):
        raise ValueError(f"not a region id usable in a topic: {region!r}")
    return f"{PREFIX}/region/{region}/campaigns"


FLEET_CAMPAIGNS = f"{PREFIX}/fleet/campaigns"
FLEET_DIRECTORY = f"{PREFIX}/fleet/directory"

# What the hub subscribes to: every store's uplink.
HUB_UPLINK = f"{PREFIX}/store/+/up/#"


def uplink_store(topic: str) -> tuple[str, str] | None:
    """``(store_id, kind)`` of an uplink topic, or None when it is not one."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[:3] != ["mg", "v1", "store"] or parts[4] != "up":
        return None
    if not _STORE_ID.match(parts[3]):
        return None
    return parts[3], parts[5]


def campaign_topic(scope: str, scope_id: str | None) -> str:
    if scope == "fleet":
        return FLEET_CAMPAIGNS
    if scope_id is None:
        raise ValueError(f"a {scope} manifest needs a scope id")
    return region_campaigns(scope_id) if scope == "region" else store_campaigns(scope_id)
