"""``[automation]``: how often journeys look for members, the chain's control group, and what a
journey's effect report (``hub.reports.journey_effect``) prices its results with."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class AutomationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every_s: float = Field(10.0, gt=0, le=3600)  # a pass at least this often
    # A share of all members no marketing journey reaches (held out of each with reason
    # ``control``), to measure the chain's marketing as a whole; 0: none.
    control_percent: int = Field(0, ge=0, le=50)
    # The chain's gross margin on what members buy, in percent: what the effect report turns a
    # journey's incremental spend into margin with.
    margin_percent: int = Field(30, ge=0, le=100)
    # What one message costs, in minor units, by channel ("sms" = 5: five fen a text); a channel
    # not named costs 0. The effect report's costs.
    message_cost: dict[str, Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=dict)
