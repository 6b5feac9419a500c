"""Large-trade buying pressure: long the symbols whose biggest taker buys take the largest share of volume.

score = mean over each symbol's last 1,000 five-minute rows (where dolvol > 0) of buy_dolvol4 / dolvol, tier 4 being
the largest trades; the top half is long and the bottom half short, with equal weights. The class takes the tier
and the number of rows, so variants are one line each.
"""

from __future__ import annotations

import polars as pl

from factors.calculator import AlphaCalculatorBase
from factors.calculators._ranking import top_bottom_halves
from factors.data_view import AlphaDataView


class MeanBuyDolvolShareRank(AlphaCalculatorBase):
    def __init__(self, tier: int = 4, rows: int = 1_000, name: str | None = None) -> None:
        if tier not in (1, 2, 3, 4) or rows < 1:
            raise ValueError(f"tier must be 1..4 and rows >= 1, got tier={tier}, rows={rows}")
        self.tier, self.rows = tier, rows
        self.name = name or f"mean_buy_dolvol{tier}_over_dolvol_rank_{rows}"

    def run(self, view: AlphaDataView) -> pl.DataFrame:
        scores = (
            view.tail("tran_stats", self.rows)
            .lazy()
            .filter(pl.col("dolvol") > 0)
            .group_by("symbol")
            .agg((pl.col(f"buy_dolvol{self.tier}") / pl.col("dolvol")).mean().alias("score"))
            .collect()
        )
        return top_bottom_halves(scores, "score")


CALCULATOR_INSTANCE = MeanBuyDolvolShareRank(4, 1_000, name="mean_buy_dolvol4_over_dolvol_rank")
