"""Request and response shapes of the journey, message and consent routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.events import ConsentChannel


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Journey(BaseModel):
    journey_id: str
    name: str
    definition: dict[str, Any]
    version: int
    state: Literal["active", "paused", "archived"]
    created_by: str
    created_ms: int
    updated_ms: int
    entries: dict[str, int]  # entries by state (held_out apart)


class JourneyVersion(BaseModel):
    version: int
    definition: dict[str, Any]
    created_by: str
    created_ms: int


class JourneyState(_In):
    state: Literal["active", "paused", "archived"]


class JourneyAction(BaseModel):
    model_config = ConfigDict(extra="allow")  # each kind's outcome: coupon code, key ...
    step: int
    kind: str
    at_ms: int


class MemberJourney(BaseModel):
    journey_id: str
    name: str
    occasion: str
    version: int
    entered_ms: int
    held_out: bool
    state: str
    actions: list[JourneyAction]


class Message(BaseModel):
    message_id: str
    key: str
    member_id: str
    channel: str
    purpose: str
    template: str
    text: str
    journey_id: str | None
    state: str
    reason: str
    attempts: int
    next_ms: int
    created_ms: int
    sent_ms: int | None
    done_ms: int | None
    provider_id: str | None
    error: str


class ResendRequest(_In):
    channel: str | None = Field(None, max_length=20)  # every dead message of it; None: all


class Resent(BaseModel):
    resent: int


class ConsentIn(_In):
    channel: ConsentChannel
    purpose: Literal["marketing"] = "marketing"
    granted: bool
    text_version: str = Field(min_length=1, max_length=64)  # the wording the member saw


class ConsentsRequest(_In):
    consents: list[ConsentIn] = Field(min_length=1, max_length=8)
    actor: str = Field(min_length=1, max_length=100)  # who at HQ took it (the hotline agent)
    where: Literal["hq", "online", "phone"] = "hq"


class ConsentsRecorded(BaseModel):
    member_id: str
    recorded: int  # consents that changed (a repeat changes nothing)
