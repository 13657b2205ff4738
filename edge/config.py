"""The edge gateway's configuration: one TOML file, validated by pydantic, demo-ready defaults."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.http_guard import ConnectionLimits
from protocol.money import MAX_AMOUNT, validate_currency
from protocol.redact import mask_password, mask_token
from protocol.tls import ServedOverTls, TlsSettings

# The demo's token, printed by `membergate-edge run` and in the README: public, so it is no
# token at all off this box (see ``ApiSection.unguarded``).
DEMO_TOKENS = {"POS-1": "demo-token-pos-1"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSection(_Section):
    store_id: str = Field("S001", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    store_number: int = Field(1, ge=1, le=9999, description="Prefix of member codes made here")
    name: str = "Demo Store"
    region: str = "east"
    currency: str = "CNY"
    phone_region: str = Field("CN", description="Region for phone numbers given without +country")
    timezone: str = "Asia/Shanghai"

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return validate_currency(v)


class DatabaseSection(_Section):
    path: Path = Path("var/edge.db")


def shown_token(terminal: str, token: str) -> str:
    """A token as output may show it: the built-in demo one whole, any other masked."""
    return token if DEMO_TOKENS.get(terminal) == token else str(mask_token(token))


class ApiSection(_Section, ServedOverTls, ConnectionLimits):
    """HTTPS (and wss for the event stream) with ``tls_cert_file``/``tls_key_file``: on the
    store LAN every request carries a terminal's token (``membergate-provision broker`` issues
    them from the fleet's CA for a store's ``api_host``). ``head_timeout_s``,
    ``body_stall_timeout_s`` and ``max_connections`` bound what a connection holds."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # terminal id -> bearer token. The demo token is printed by `membergate-edge run`.
    tokens: dict[str, str] = Field(default_factory=lambda: dict(DEMO_TOKENS))

    @property
    def loopback(self) -> bool:
        """Served to this box only: nobody else can see a token on the wire."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def unguarded(self) -> bool:
        """Served to the network with the public demo token, or with no token at all."""
        public = set(DEMO_TOKENS.values()) & set(self.tokens.values())
        return not self.loopback and (not self.tokens or bool(public))

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v: dict[str, str]) -> dict[str, str]:
        if len(set(v.values())) != len(v):
            raise ValueError("every terminal needs its own token")
        for terminal, token in v.items():
            if len(token) < 12:
                raise ValueError(f"token of {terminal} is shorter than 12 characters")
        return v


class PointsSection(_Section):
    # Used when no active campaign says otherwise: 100 points pay 1.00 of currency.
    redemption_points_per_unit: int = Field(100, ge=1)
    redemption_unit_value: int = Field(100, ge=1)
    redemption_max_share_bp: int = Field(10_000, ge=0, le=10_000)
    redemption_min_points: int = Field(0, ge=0)
    default_expiry_days: int = Field(365, ge=1)
    reminder_days: int = Field(30, ge=0, description="Show lots expiring within this many days")


class AllowanceSection(_Section):
    """Offline spending a store may allow per member before the hub grants its own allowance."""

    points: int = Field(20_000, ge=0)
    stored_value: int = Field(100_000, ge=0, le=MAX_AMOUNT)


class LimitsSection(_Section):
    max_unit_price: int = Field(10_000_000, ge=1, le=MAX_AMOUNT)  # 100,000.00 per unit
    max_qty: int = Field(9_999, ge=1, le=100_000)
    max_lines: int = Field(200, ge=1, le=500)
    max_topup: int = Field(5_000_000, ge=1, le=MAX_AMOUNT)
    max_request_bytes: int = Field(256 * 1024, ge=1024)  # counted as received, chunked too
    # Open sales a terminal may hold (each lives in memory until finalized or voided).
    max_open_sales_per_terminal: int = Field(20, ge=1, le=1000)


class StoredValueSection(_Section):
    spend_order: Literal["principal_first", "bonus_first", "proportional"] = "principal_first"


class PaymentPinSection(_Section):
    """Members' payment PINs, which guard paying with stored value and points. A member who
    set one is always asked for it; ``required_above`` (minor units, paid from balances in one
    sale) makes the chain ask every member above that, so one without a PIN sets one first.
    The hash is argon2id (RFC 9106), verified at the till offline: ``hash_memory_kib`` and
    ``hash_time_cost`` set its cost for PINs set here (a hash carries its own, so stores with
    other settings still verify it)."""

    required_above: int | None = Field(None, ge=0, le=MAX_AMOUNT)
    max_failures: int = Field(5, ge=1, le=20)  # wrong PINs in a row before balances lock
    hash_memory_kib: int = Field(65_536, ge=1024, le=1_048_576)
    hash_time_cost: int = Field(3, ge=1, le=20)


class SyncSection(_Section):
    """The link to the hub. No broker host: the store runs alone (offline by configuration)."""

    broker_host: str | None = None
    broker_port: int = Field(1883, ge=1, le=65535)
    username: str | None = None  # per-store credentials made at provisioning
    password: str | None = None
    # [sync.tls]: connect with TLS, verifying the broker (see protocol.tls); absent: plain MQTT.
    tls: TlsSettings | None = None
    # The hub's Ed25519 public key (base64); campaign bundles not signed by it are refused.
    hub_public_key: str | None = None
    batch_max_events: int = Field(500, ge=1, le=5000)
    batch_max_bytes: int = Field(512 * 1024, ge=1024, le=1024 * 1024)
    # Batches in flight before an ack: enough that the hub always has the next ones queued
    # (it commits what queued up together); at most 16 x 512 KiB resent after a reconnect.
    window_batches: int = Field(16, ge=1, le=64)
    ack_timeout_s: float = Field(10.0, gt=0)  # no ack progress for this long: resend
    # Member directory entries asked for a page while the store is selling (a POS write in the
    # last minute), and while it is not. A page is applied in one transaction with its
    # checkpoint, and a checkout's write waits behind it: in `membergate-edge bench`, pages of
    # 100 kept a finalize at ~4 ms (p50) during a catch-up where pages of 1,000 made it ~25 ms.
    # Idle, large pages catch up faster. The hub may send fewer ([hub] directory_page).
    directory_page: int = Field(100, ge=1, le=5000)
    directory_page_idle: int = Field(1000, ge=1, le=5000)
    status_interval_s: float = Field(15.0, gt=0)
    # Events the hub acknowledged are kept this long: a hub restored from a backup younger than
    # this gets them again and loses nothing (hub.backup). 0: dropped once acknowledged.
    keep_acked_days: float = Field(7.0, ge=0, le=90)


class PrinterSection(_Section):
    kind: Literal["network", "serial", "usb", "file", "simulated"] = "simulated"
    host: str | None = None  # network
    port: int = Field(9100, ge=1, le=65535)
    devfile: str | None = None  # serial or file
    baudrate: int = 9600
    usb_vendor: int | None = None
    usb_product: int | None = None
    encoding: Literal["gb18030", "gbk", "big5", "ascii"] = "gb18030"
    width: int = Field(48, ge=24, le=64)  # columns: 48 on 80 mm paper, 32 on 58 mm
    status_timeout_s: float = Field(1.5, gt=0, le=30)


class DisplaySection(_Section):
    kind: Literal["serial", "simulated"] = "simulated"
    port: str | None = None
    baudrate: int = 9600
    command_set: Literal["cd5220", "escpos", "led"] = "cd5220"
    encoding: Literal["ascii", "gb2312", "big5"] = "gb2312"


class SerialScannerSection(_Section):
    port: str
    baudrate: int = 9600
    encoding: str = "utf-8"


class LaneSection(_Section):
    """One checkout lane: a POS terminal and the devices at it."""

    terminal_id: str
    # evdev keyboard-wedge scanners, by stable path (/dev/input/by-id/...-event-kbd)
    scanners: list[str] = Field(default_factory=list)
    serial_scanners: list[SerialScannerSection] = Field(default_factory=list)
    scanner_layout: str = "us"
    # Regular expression a PC/SC reader name must match to belong to this lane
    card_reader: str | None = None
    printer: PrinterSection | None = None
    display: DisplaySection | None = None
    # A scanned product barcode adds the product (from the catalogue) to the lane's open sale;
    # false: only the "scan" event goes to the POS, which adds lines itself.
    scan_adds_products: bool = True
    # Devices without hardware (the demo and POS development): a simulated scanner, reader,
    # printer and display, driven through the API.
    simulated: bool = False


class EdgeConfig(_Section):
    store: StoreSection = Field(default_factory=StoreSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    api: ApiSection = Field(default_factory=ApiSection)
    points: PointsSection = Field(default_factory=PointsSection)
    allowance: AllowanceSection = Field(default_factory=AllowanceSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    stored_value: StoredValueSection = Field(default_factory=StoredValueSection)
    payment_pin: PaymentPinSection = Field(default_factory=PaymentPinSection)
    sync: SyncSection = Field(default_factory=SyncSection)
    lanes: list[LaneSection] = Field(default_factory=list)
    campaigns_file: Path | None = Field(
        None, description="A campaign bundle (TOML/JSON) applied at start; the hub replaces it"
    )

    def redacted(self) -> dict[str, object]:
        """The effective configuration as JSON data, with every token masked and the MQTT
        password hidden (``membergate-edge config`` prints this)."""
        data = self.model_dump(mode="json")
        data["api"]["tokens"] = {t: mask_token(v) for t, v in self.api.tokens.items()}
        data["sync"]["password"] = mask_password(self.sync.password)
        return data


def load_config(path: Path | None) -> EdgeConfig:
    if path is None:
        return EdgeConfig()
    with path.open("rb") as f:
        data = tomllib.load(f)
    return EdgeConfig.model_validate(data)
