"""Funding carry: short the symbols whose longs pay the most funding, long those paying the least (or receiving).

score = sum of the funding rates settled in the last `hours` (24 by default: a daily rate, comparable across 1 h,
4 h and 8 h funding schedules); weight = -(rank - mean rank).
"""

from __future__ import annotations

import polars as pl

from factors.calculator import AlphaCalculatorBase
from factors.calculators._ranking import demeaned_rank
from factors.data_view import AlphaDataView
from lsq.timelabels import HOUR_MS


class FundingCarry(AlphaCalculatorBase):
    def __init__(self, hours: int = 24, name: str | None = None) -> None:
        if hours < 1:
            raise ValueError(f"hours must be >= 1, got {hours}")
        self.hours = hours
        self.name = name or f"funding_carry_{hours}h"

    def run(self, view: AlphaDataView) -> pl.DataFrame:
        funding = view.funding_panel
        if "funding_rate" not in funding.columns:
            return pl.DataFrame(schema={"symbol": pl.String, "weight": pl.Float64})
        carry = (
            funding.filter(pl.col("funding_time") >= view.end_ms - self.hours * HOUR_MS)
            .group_by("symbol")
            .agg(pl.col("funding_rate").cast(pl.Float64).sum().alias("carry"))
        )
        return demeaned_rank(carry, "carry", sign=-1.0)


CALCULATOR_INSTANCE = FundingCarry(24, name="funding_carry")
