"""Longer bars and tran_stats (1h ... 24h) from 5-minute ones, aligned to UTC midnight.

A rollup of a complete period equals aggregating that period's trades directly: sums are exact decimals, vwap is
recomputed from the sums, and open/high/low only look at windows that traded, because a "NoTrade" window carries the
previous close, which is not a price traded in this period. A period still open (fewer windows) rolls up the same way.
"""

from __future__ import annotations

import polars as pl

from lsq.aggregation.bars import BAR_SCHEMA, BAR_SUM_COLUMNS, NO_TRADE, TRADED, vwap_expr, window_columns
from lsq.aggregation.tran_stats import TRAN_STATS_SCHEMA, TRAN_STATS_SUM_COLUMNS
from lsq.timelabels import PERIOD_MS, WINDOW_MS

ROLLUP_PERIODS = ("1h", "4h", "8h", "12h", "24h")


def rollup_period_ms(period: str) -> int:
    if period not in ROLLUP_PERIODS:
        raise ValueError(f"unknown rollup period {period!r}: expected one of {ROLLUP_PERIODS}")
    return PERIOD_MS[period]


def _check_five_minute(frame: pl.DataFrame, what: str) -> None:
    missing = [c for c in ("symbol", "open_time", "close_time") if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} are missing columns {missing}")
    bad = frame.filter(
        (pl.col("close_time") - pl.col("open_time") != WINDOW_MS - 1) | (pl.col("open_time") % WINDOW_MS != 0)
    )
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(
            f"{what} must be 5-minute rows on the UTC grid; {bad.height} are not, e.g. {row['symbol']} "
            f"open_time={row['open_time']} close_time={row['close_time']}"
        )


def in_time_order(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` sorted by (symbol, open_time); a frame already in that order (as complete_bars returns) is not copied.

    first/last inside group_by follow row order, so open and close need it.
    """
    sym, t = pl.col("symbol"), pl.col("open_time")
    ordered = ((sym > sym.shift()) | ((sym == sym.shift()) & (t > t.shift()))).fill_null(True).all()
    return frame if frame.is_empty() or frame.select(ordered).item() else frame.sort("symbol", "open_time")


def _period_start(period_ms: int) -> pl.Expr:
    return pl.col("open_time") - pl.col("open_time") % period_ms


def rollup_bars(bars_5m: pl.DataFrame, period: str) -> pl.DataFrame:
    """Bars of `period` from 5-minute bars (completed or not): first open, max high, min low, last close, sums.

    span_status is "NoTrade" only if every constituent window was (then open=high=low=close is the carried close),
    else "Traded".
    """
    period_ms = rollup_period_ms(period)
    _check_five_minute(bars_5m, "bars")
    traded = pl.col("span_status") != NO_TRADE

    def traded_first(col: str, how: str) -> pl.Expr:
        """The statistic over traded windows (others masked to null), else (an all-NoTrade period) over all."""
        c = pl.col(col)
        masked = pl.when(traded).then(c)
        stat = masked.first(ignore_nulls=True) if how == "first" else getattr(masked, how)()
        fallback = c.first() if how == "first" else getattr(c, how)()
        return pl.coalesce(stat, fallback).alias(col)

    out = (
        in_time_order(bars_5m)
        .lazy()
        .with_columns(_period_start(period_ms))
        .group_by("symbol", "open_time")
        .agg(
            traded_first("open", "first"),
            traded_first("high", "max"),
            traded_first("low", "min"),
            pl.col("close").last(),
            *[pl.col(c).sum() for c in BAR_SUM_COLUMNS],
            pl.when(traded.any()).then(pl.lit(TRADED)).otherwise(pl.lit(NO_TRADE)).alias("span_status"),
        )
        .with_columns(*window_columns(period_ms), vwap_expr())
        .sort("symbol", "open_time")
    )
    return out.collect().select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()])


def rollup_tran_stats(stats_5m: pl.DataFrame, period: str) -> pl.DataFrame:
    """tran_stats of `period` from 5-minute tran_stats: every statistic is a sum."""
    period_ms = rollup_period_ms(period)
    _check_five_minute(stats_5m, "tran_stats")
    out = (
        stats_5m.lazy()
        .with_columns(_period_start(period_ms))
        .group_by("symbol", "open_time")
        .agg(pl.col(c).sum() for c in TRAN_STATS_SUM_COLUMNS)
        .with_columns(window_columns(period_ms))
        .sort("symbol", "open_time")
    )
    return out.collect().select([pl.col(c).cast(t) for c, t in TRAN_STATS_SCHEMA.items()])
