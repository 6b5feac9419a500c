"""A simple, always-available factor for testnet and simulator runs: rank by 24-hour quote volume.

The largest quote volume is the most short, the smallest the most long: weight = -(rank - mean rank).
"""

from __future__ import annotations

import polars as pl

from factors.calculator import AlphaCalculatorBase
from factors.calculators._ranking import demeaned_rank
from factors.data_view import AlphaDataView


class QuoteVolumeRank(AlphaCalculatorBase):
    def __init__(self, windows: int = 288, name: str | None = None) -> None:
        if windows < 1:
            raise ValueError(f"windows must be >= 1, got {windows}")
        self.windows = windows
        self.name = name or f"quote_volume_rank_{windows}"

    def run(self, view: AlphaDataView) -> pl.DataFrame:
        volume = view.recent("bars", self.windows).group_by("symbol").agg(pl.col("quote_volume").sum().alias("volume"))
        return demeaned_rank(volume, "volume", sign=-1.0)


CALCULATOR_INSTANCE = QuoteVolumeRank(288, name="testnet_volume_rank")
