"""What the HQ API answers, as models: OpenAPI documents every answer from these."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from protocol.sync import MemberEntry


class FleetStore(BaseModel):
    store_id: str
    region: str | None
    epoch: int
    acked_seq: int
    last_seen_s_ago: float | None
    outbox_depth: int | None
    lag_events: int
    campaign_versions: dict[str, Any]
    software: str
    devices: list[dict[str, Any]]
    refused_at_hub: dict[str, int]
    refused_at_store: dict[str, Any]
    campaign_refusals: int


class IngestFigures(BaseModel):
    received_batches: int
    validate_workers: int
    validator_restarts: int
    validation_fallbacks: int
    commits: int
    batches_per_commit: float


class BrokerLink(BaseModel):
    port: int | None
    connected: bool


class JobStatus(BaseModel):
    runs: int
    failures: int
    last_run_ms: int | None
    last_error: str | None


class ProjectionLag(BaseModel):
    """How far a projection of the log has read (``hub.core.projections``)."""

    name: str
    pos: int  # the log position it has applied up to
    head: int  # the log's last position
    lag_events: int  # logged events it has not read yet
    lag_s: float | None  # at most this stale: 0 at the head, None if it never reached it
    synced_ms: int | None  # when it last stood at the head


class HubStatus(BaseModel):
    stores: list[FleetStore]
    applied_events: int
    duplicate_events: int
    gaps: int
    refused: dict[str, int]
    ingest: IngestFigures
    projections: list[ProjectionLag]
    jobs: dict[str, JobStatus]
    broker: BrokerLink


class CouponConflict(BaseModel):
    coupon_code: str
    store_id: str
    sale_id: str
    hlc: int
    amount: int
    kept_store: str
    kept_sale: str


class CouponConflicts(BaseModel):
    conflicts: list[CouponConflict]


class MemberView(MemberEntry):
    """A member as the hub knows it, with the balances summed over every store's share."""

    points: int
    stored_value: int


class PushedBundle(BaseModel):
    topic: str
    version: int
    scope: str


class BalanceMismatch(BaseModel):
    member_id: str
    held: tuple[int, int, int]
    rebuilt: tuple[int, int, int]


class RebuildCheck(BaseModel):
    members: int
    events: int
    mismatches: list[BalanceMismatch]
    mismatch_count: int
