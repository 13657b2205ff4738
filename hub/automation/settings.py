"""``[automation]``: how often journeys look for members and the chain's control group."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AutomationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every_s: float = Field(10.0, gt=0, le=3600)  # a pass at least this often
    # A share of all members no marketing journey reaches (held out of each with reason
    # ``control``), to measure the chain's marketing as a whole; 0: none.
    control_percent: int = Field(0, ge=0, le=50)
