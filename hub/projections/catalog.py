"""The hub's projections of its log, in the order they are applied."""

from __future__ import annotations

from hub.core.projections import Projection
from hub.projections.activity import MemberActivity
from hub.projections.lots import PointLots
from hub.projections.points_days import PointsDays
from hub.projections.rollups import DailyRollups
from hub.projections.sales import SalesFacts
from hub.projections.skus import MemberRefundDays, SkuDays
from hub.projections.staff import StaffDays
from hub.projections.store_sales import StoreSales
from hub.projections.stored_value import StoredValueDays
from hub.projections.visits import MemberStoreDays


def projections(chain_zone: str) -> list[Projection]:
    """Every projection, for a chain whose calendar is ``chain_zone`` (``[hub] timezone``)."""
    return [SalesFacts(chain_zone), MemberActivity(chain_zone), DailyRollups(chain_zone),
            PointLots(),
            # The report rollups (hub.reports.sales, hub.reports.staff).
            StoreSales(chain_zone), SkuDays(chain_zone), MemberRefundDays(chain_zone),
            StaffDays(chain_zone),
            # The member and liabilities reports (hub.reports.members, .liabilities).
            MemberStoreDays(chain_zone), PointsDays(chain_zone), StoredValueDays(chain_zone)]
