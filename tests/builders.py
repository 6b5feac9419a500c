"""Builders shared by the pipeline's tests."""

import polars as pl

from lsq_pipeline.universe import UNIVERSE_SCHEMA


def universe_frame(symbols: list[str]) -> pl.DataFrame:
    """A stored-universe frame for `symbols` with BTC-like filters."""
    n = len(symbols)
    raw = {
        "symbol": symbols,
        "base_asset": [s.removesuffix("USDT") for s in symbols],
        "tick_size": ["0.01"] * n,
        "step_size": ["0.001"] * n,
        "min_qty": ["0.001"] * n,
        "min_notional": ["5"] * n,
        "price_precision": [2] * n,
        "quantity_precision": [3] * n,
        "onboard_date": [0] * n,
    }
    return pl.DataFrame(raw).select(pl.col(c).cast(t) for c, t in UNIVERSE_SCHEMA.items())
