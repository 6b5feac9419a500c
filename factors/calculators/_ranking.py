"""Cross-sectional helpers shared by the shipped factors (the leading underscore keeps discovery away)."""

from __future__ import annotations

import polars as pl


def demeaned_rank(scores: pl.DataFrame, score: str, sign: float = 1.0) -> pl.DataFrame:
    """[symbol, weight]: sign x (rank - mean rank) of `score`; ties share their average rank, so weights sum to 0."""
    valid = scores.filter(pl.col(score).is_finite())
    rank = pl.col(score).rank("average")
    return valid.select("symbol", (sign * (rank - rank.mean())).alias("weight")).sort("symbol")


def top_bottom_halves(scores: pl.DataFrame, score: str) -> pl.DataFrame:
    """[symbol, weight]: the top half by `score` long, the bottom half short, equal weights; an odd middle gets 0.

    Order is (score, symbol), so ties break by name and the result never depends on row order.
    """
    valid = scores.filter(pl.col(score).is_finite()).sort(score, "symbol")
    n = valid.height
    half = n // 2
    if half == 0:
        return pl.DataFrame(schema={"symbol": pl.String, "weight": pl.Float64})
    position = pl.int_range(pl.len())
    weight = pl.when(position < half).then(-1.0 / half).when(position >= n - half).then(1.0 / half).otherwise(0.0)
    return valid.select("symbol", weight.alias("weight")).sort("symbol")
