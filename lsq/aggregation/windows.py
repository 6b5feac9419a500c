"""Bars of a range of 5-minute windows from the trade store: the I/O around lsq.aggregation's pure functions.

Used by the bars asset, the backfill and the strategy API alike, so all three agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import polars as pl

from lsq.aggregation.bars import complete_bars
from lsq.aggregation.tran_stats import aggregate_window_stats, complete_tran_stats
from lsq.paths import DataPaths
from lsq.schema import PRICE
from lsq.stores.panels import scan_panel
from lsq.stores.universes import universe_symbols
from lsq.timelabels import DAY_MS, HOUR_MS, WINDOW_MS
from lsq.tradestore import TradeStore

CLOSE_LOOKBACK_MS = DAY_MS


def check_window_range(start_ms: int, end_ms: int) -> None:
    if start_ms % WINDOW_MS or end_ms % WINDOW_MS:
        raise ValueError(f"[{start_ms}, {end_ms}) is not on the 5-minute grid")
    if end_ms <= start_ms:
        raise ValueError(f"empty window range [{start_ms}, {end_ms})")


def traded_symbols(store: TradeStore, start_ms: int, end_ms: int) -> list[str]:
    """Symbols with a stored trade file overlapping [start, end) (a cheap directory listing, no data read)."""
    first_hour = start_ms - start_ms % HOUR_MS
    return [s for s, hours in store.hours_by_symbol().items() if any(first_hour <= h < end_ms for h in hours)]


def previous_closes(paths: DataPaths, store: TradeStore, symbols: Iterable[str], start_ms: int) -> pl.DataFrame:
    """Last close before `start_ms` per symbol: from stored 5-minute bars, else the day before's last stored trade."""
    wanted = sorted(set(symbols))
    schema = {"symbol": pl.String(), "close": PRICE}
    lf = scan_panel(paths, "bars", start_ms - CLOSE_LOOKBACK_MS, start_ms)
    stored = (
        pl.DataFrame(schema=schema)
        if lf is None
        else lf.filter(pl.col("symbol").is_in(wanted))
        .sort("open_time")
        .group_by("symbol")
        .agg(pl.col("close").last())
        .collect()
        .select(pl.col(c).cast(t) for c, t in schema.items())
    )
    missing = sorted(set(wanted) - set(stored["symbol"].to_list()))
    if missing:
        known = set(store.symbols())
        trades = store.scan_many([s for s in missing if s in known], start_ms - CLOSE_LOOKBACK_MS, start_ms)
        from_trades = (
            trades.sort("agg_trade_id")
            .group_by("symbol")
            .agg(pl.col("price").last().alias("close"))
            .collect()
            .select(pl.col(c).cast(t) for c, t in schema.items())
        )
        stored = pl.concat([stored, from_trades])
    return stored


def compute_window_stats(
    paths: DataPaths,
    start_ms: int,
    end_ms: int,
    thresholds_usd: tuple[float, float, float],
    prev_close: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Complete 5-minute bars and tran_stats of [start, end), from one pass over the stored trades.

    Rows: the universe of the day plus every symbol that traded; quiet windows carry the previous close (bars) and
    zeros (tran_stats); both frames have exactly the same (symbol, open_time) keys.
    """
    check_window_range(start_ms, end_ms)
    store = TradeStore(paths)
    universe = universe_symbols(paths, start_ms)
    traded = traded_symbols(store, start_ms, end_ms)
    if prev_close is None:
        prev_close = previous_closes(paths, store, set(universe) | set(traded), start_ms)
    bars, stats = aggregate_window_stats(store.scan_many(traded, start_ms, end_ms), thresholds_usd)
    bars = complete_bars(bars, universe, start_ms, end_ms, prev_close=prev_close)
    stats = complete_tran_stats(stats, universe, start_ms, end_ms, keys=bars)
    return bars, stats


def day_chunks(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """[start, end) cut at UTC midnights, so a long backfill holds one day of trades in memory at a time."""
    check_window_range(start_ms, end_ms)
    cuts = [start_ms, *range(start_ms - start_ms % DAY_MS + DAY_MS, end_ms, DAY_MS), end_ms]
    return list(pairwise(cuts))
