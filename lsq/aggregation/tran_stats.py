"""Transaction statistics: taker buy/sell volume, notional and counts per (symbol, window), split by trade size.

Each aggTrade is put in a size tier by its notional p·q in USD (exact, at scale 16) against t1 < t2 < t3
(`Settings.data.tran_stats.thresholds_usd`: 40,000 / 200,000 / 1,000,000 RMB at 7 RMB per USD by default):
tier 1 if p·q ≤ t1, 2 if ≤ t2, 3 if ≤ t3, else 4. Here a trade count is the number of aggTrade records (one taker
order's fills at one price), not Σ(l−f+1): the tier is a property of the aggTrade, so tiers sum to totals exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from lsq.aggregation.bars import (
    NOTIONAL,
    bars_from_cells,
    check_period,
    decimal_from_units,
    trade_cells,
    window_columns,
    window_grid,
)
from lsq.schema import QTY
from lsq.timelabels import WINDOW_MS

TIERS = (1, 2, 3, 4)
SIDES = ("buy", "sell")

TRAN_STATS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "open_time": pl.Int64(),
    "close_time": pl.Int64(),
    "time_label": pl.Int32(),
    "buy_volume": QTY,
    "sell_volume": QTY,
    "buy_dolvol": NOTIONAL,
    "sell_dolvol": NOTIONAL,
    "buy_trade_count": pl.Int64(),
    "sell_trade_count": pl.Int64(),
    "volume": QTY,
    "dolvol": NOTIONAL,
    "trade_count": pl.Int64(),
    **{
        f"{side}_{metric}{tier}": dtype
        for side in SIDES
        for metric, dtype in (("volume", QTY), ("dolvol", NOTIONAL), ("trade_count", pl.Int64()))
        for tier in TIERS
    },
}

# Every column but the keys is a sum over trades: a longer period's value is the sum over its windows.
TRAN_STATS_SUM_COLUMNS = tuple(
    c for c in TRAN_STATS_SCHEMA if c not in ("symbol", "open_time", "close_time", "time_label")
)


def _cast_columns() -> list[pl.Expr]:
    return [pl.col(c).cast(t) for c, t in TRAN_STATS_SCHEMA.items()]


def tran_stats_from_cells(cells: pl.LazyFrame, period_ms: int) -> pl.DataFrame:
    """Collapse tiered cells (trade_cells with thresholds) to one row per (symbol, open_time).

    Each cell's sums are first spread into their (side, tier) column (null elsewhere), so the group_by is plain sums;
    side totals and totals are then exact integer sums of those.
    """
    metrics = (("volume", "q"), ("dolvol", "pq"), ("trade_count", "n"))
    spread = {
        f"{side}_{metric}{tier}": pl.when((pl.col("taker_buy") == (side == "buy")) & (pl.col("tier") == tier)).then(
            pl.col(src)
        )
        for side in SIDES
        for metric, src in metrics
        for tier in TIERS
    }
    side_totals = {
        f"{side}_{metric}": pl.sum_horizontal(pl.col(f"{side}_{metric}{tier}") for tier in TIERS)
        for side in SIDES
        for metric, _ in metrics
    }
    totals = {metric: pl.col(f"buy_{metric}") + pl.col(f"sell_{metric}") for metric, _ in metrics}
    volumes = [c for c in TRAN_STATS_SCHEMA if "volume" in c]
    dolvols = [c for c in TRAN_STATS_SCHEMA if "dolvol" in c]
    out = (
        cells.with_columns(**spread)
        .group_by("symbol", "open_time")
        .agg(pl.col(name).sum() for name in spread)
        .with_columns(**side_totals)
        .with_columns(**totals)
        .with_columns(
            *[decimal_from_units(pl.col(c), QTY) for c in volumes],
            *[decimal_from_units(pl.col(c), NOTIONAL) for c in dolvols],
            *window_columns(period_ms),
        )
        .sort("symbol", "open_time")
    )
    return out.collect().select(_cast_columns())


def aggregate_tran_stats(
    trades: pl.LazyFrame | pl.DataFrame,
    thresholds_usd: tuple[float, float, float],
    period_ms: int = WINDOW_MS,
) -> pl.DataFrame:
    """tran_stats of every (symbol, window) that has trades, sorted by symbol then open_time (see module doc)."""
    return tran_stats_from_cells(trade_cells(trades, period_ms, thresholds_usd).lazy(), period_ms)


def aggregate_window_stats(
    trades: pl.LazyFrame | pl.DataFrame,
    thresholds_usd: tuple[float, float, float],
    period_ms: int = WINDOW_MS,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(bars, tran_stats) from a single pass over the trades: the pipeline's path, reading each trade once."""
    cells = trade_cells(trades, period_ms, thresholds_usd).lazy()
    return bars_from_cells(cells, period_ms), tran_stats_from_cells(cells, period_ms)


def complete_tran_stats(
    stats: pl.DataFrame,
    symbols: Iterable[str],
    start_ms: int,
    end_ms: int,
    period_ms: int = WINDOW_MS,
    keys: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Fill windows without trades with zeros.

    Without `keys`: every (symbol, window) in [start, end) for `symbols` and the symbols in `stats`. With `keys`
    (a frame with symbol and open_time, e.g. the completed bars): exactly those rows, so a symbol listed mid-day has
    no rows before its first trade, as in its bars. A stats row outside `keys` is an error, never dropped silently.
    """
    check_period(period_ms)
    stats = stats.filter(pl.col("open_time").is_between(start_ms, end_ms, closed="left"))
    if stats.select(pl.struct("symbol", "open_time").is_duplicated().any()).item():
        raise ValueError("tran_stats contain duplicate (symbol, open_time) rows")
    if keys is None:
        grid = window_grid(set(symbols) | set(stats["symbol"].unique().to_list()), start_ms, end_ms, period_ms)
    else:
        grid = (
            keys.select("symbol", "open_time")
            .filter(pl.col("open_time").is_between(start_ms, end_ms, closed="left"))
            .unique()
        )
        orphans = stats.join(grid, on=["symbol", "open_time"], how="anti")
        if orphans.height:
            first = orphans.row(0, named=True)
            raise ValueError(
                f"{orphans.height} tran_stats rows have no key row, e.g. {first['symbol']} at {first['open_time']}"
            )
    out = grid.join(stats, on=["symbol", "open_time"], how="left").sort("symbol", "open_time")
    out = out.with_columns(*[pl.col(c).fill_null(0) for c in TRAN_STATS_SUM_COLUMNS], *window_columns(period_ms))
    return out.select(_cast_columns())
