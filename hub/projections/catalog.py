"""The hub's projections of its log, in the order they are applied."""

from __future__ import annotations

from hub.core.projections import Projection
from hub.projections.activity import MemberActivity
from hub.projections.lots import PointLots
from hub.projections.rollups import DailyRollups
from hub.projections.sales import SalesFacts


def projections(chain_zone: str) -> list[Projection]:
    """Every projection, for a chain whose calendar is ``chain_zone`` (``[hub] timezone``)."""
    return [SalesFacts(chain_zone), MemberActivity(chain_zone), DailyRollups(chain_zone),
            PointLots()]
