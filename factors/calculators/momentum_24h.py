"""Momentum: long the recent winners, short the losers, in proportion to their cross-sectional rank.

return = close of the sealed window / close of the window `hours` earlier - 1; weight = rank - mean rank. Symbols
without both closes (listed since, or missing bars) are left out. Shipped with hours = 24.
"""

from __future__ import annotations

import polars as pl

from factors.calculator import AlphaCalculatorBase
from factors.calculators._ranking import demeaned_rank
from factors.data_view import AlphaDataView
from lsq.timelabels import HOUR_MS


class Momentum(AlphaCalculatorBase):
    def __init__(self, hours: int = 24) -> None:
        if hours < 1:
            raise ValueError(f"hours must be >= 1, got {hours}")
        self.hours = hours
        self.name = f"momentum_{hours}h"

    def run(self, view: AlphaDataView) -> pl.DataFrame:
        now, then = view.window_ms, view.window_ms - self.hours * HOUR_MS
        closes = view.bars_panel.filter(pl.col("open_time").is_in([now, then]))
        returns = (
            closes.group_by("symbol")
            .agg(
                pl.col("close").filter(pl.col("open_time") == now).first().alias("now"),
                pl.col("close").filter(pl.col("open_time") == then).first().alias("then"),
            )
            .filter(pl.col("then") > 0)
            .select("symbol", (pl.col("now") / pl.col("then") - 1).alias("ret"))
        )
        return demeaned_rank(returns, "ret")


CALCULATOR_INSTANCE = Momentum(24)
