"""The hub's configuration: one TOML file validated by pydantic, defaults that run the demo."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.automation.settings import AutomationSettings
from hub.ledger.allowances import AllowancePolicy
from hub.members.lifecycle import LifecycleRules
from hub.members.tiers import TierRules
from hub.notify.channels.email import EmailSettings
from hub.notify.channels.sms import SmsSettings
from hub.notify.channels.webhook import WebhookSettings
from hub.notify.dispatcher import NotifySettings
from protocol.http_guard import ConnectionLimits
from protocol.tls import ServedOverTls, TlsSettings
from protocol.zones import Zone


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerSection(_Section):
    # No host: the hub starts its own embedded broker (amqtt, MQTT 3.1.1) in-process.
    host: str | None = None
    port: int = Field(1883, ge=0, le=65535)
    username: str | None = None
    password: str | None = None
    # Where the embedded broker listens; 0 takes a free port (the demo does).
    embedded_host: str = "127.0.0.1"
    embedded_port: int = Field(1883, ge=0, le=65535)
    # [broker.tls]: connect to ``host`` with TLS, verifying it (see protocol.tls).
    tls: TlsSettings | None = None

    @model_validator(mode="after")
    def _embedded_stays_on_this_box(self) -> BrokerSection:
        if self.tls is not None and self.host is None:
            raise ValueError("[broker.tls] needs [broker] host: the embedded broker listens"
                             " on this box without TLS")
        if self.host is None and not _loopback(self.embedded_host):
            # It has no logins and no ACL: any client could read every store's directory and
            # acks, and publish on any store's topics (DESIGN guarantee 7).
            raise ValueError(
                f"[broker] embedded_host = {self.embedded_host!r}: the embedded broker serves"
                " this box only (loopback), having no per-store logins or ACL; for stores on"
                " other boxes run Mosquitto provisioned by `membergate-provision broker` and"
                " set [broker] host")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HubSection(_Section):
    database: str = "hub-data/hub.db"  # a path (SQLite) or postgresql://...
    data_dir: Path = Path("hub-data")  # the signing key lives here
    directory_page: int = Field(1000, ge=1, le=5000)
    max_payload_bytes: int = Field(1024 * 1024, ge=1024)
    # Processes that validate uplink batches beside the one that applies them; 0 validates in
    # the hub process itself. One suits a 2-core box; more help only with more cores.
    validate_workers: int = Field(1, ge=0, le=64)
    # The chain's time zone: the calendar of report days, hours and months of every store
    # without a zone of its own (``hub.stores.registry``), the tier window and the daily jobs.
    timezone: Zone = "Asia/Shanghai"
    # The legal entity that issues stored value, for stores without one of their own (the
    # prepaid-card rules are per issuer: hub.stores.registry).
    legal_entity: str = Field("", max_length=200)


class ApiSection(_Section, ServedOverTls, ConnectionLimits):
    """HTTPS with ``tls_cert_file``/``tls_key_file``: the bearer token crosses the network in
    every request. ``head_timeout_s``, ``body_stall_timeout_s`` and ``max_connections`` bound
    what a connection holds."""

    host: str = "127.0.0.1"
    port: int = Field(8710, ge=0, le=65535)
    token: str | None = None  # HQ bearer token; None: served once an HQ user exists
    # Counted as received, chunked too. The largest body is a campaign bundle (POST
    # /v1/campaigns), which the hub then publishes as one MQTT message.
    max_request_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class ExportsSection(_Section):
    """Bulk member exports (``hub.auth.bulk_export``): above ``approval_above`` members an
    export waits for a second person's approval; ``max_rows`` bounds any one export."""

    approval_above: int = Field(1000, ge=0, le=10_000_000)
    max_rows: int = Field(200_000, ge=1, le=10_000_000)


class RfmSection(_Section):
    """Scheduled RFM runs (``hub.members.rfm``): on the first day of each month ("monthly"),
    the quarterly one instead on a quarter's first day, as of the day before, after the
    chain's midnight."""

    schedule: list[Literal["monthly", "quarterly"]] = ["monthly", "quarterly"]
    window_days: int = Field(365, ge=1, le=3660)
    f_measure: Literal["purchases", "items"] = "purchases"


class ChannelsSection(_Section):
    """The providers messages leave through; a channel not configured here is not offered
    (a journey that names it is refused)."""

    webhook: WebhookSettings | None = None
    sms: SmsSettings | None = None  # Alibaba Cloud SMS
    email: EmailSettings | None = None  # SMTP with STARTTLS


class HubConfig(_Section):
    hub: HubSection = HubSection()
    exports: ExportsSection = ExportsSection()
    rfm: RfmSection = RfmSection()
    lifecycle: LifecycleRules = LifecycleRules()
    automation: AutomationSettings = AutomationSettings()
    notify: NotifySettings = NotifySettings()
    channels: ChannelsSection = ChannelsSection()
    tiers: TierRules = TierRules()
    # Standing offline allowances per member and store (see hub.ledger.allowances).
    allowance: AllowancePolicy = AllowancePolicy()
    broker: BrokerSection = BrokerSection()
    api: ApiSection = ApiSection()

    @property
    def database_url(self) -> str:
        db = self.hub.database
        return db if "://" in db else f"sqlite:///{db}"

    @classmethod
    def load(cls, path: Path | None) -> HubConfig:
        if path is None:
            return cls()
        with path.open("rb") as f:
            return cls.model_validate(tomllib.load(f))
