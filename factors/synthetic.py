"""Synthetic panels with the pipeline's column names, for calculator tests and benchmarks (seeded, vectorised).

Prices follow independent random walks per symbol; volumes are log-normal; trade-size tiers split each side's
dollar volume with random shares. Columns mirror lsq.aggregation's bars and tran_stats (Decimal prices and volumes,
as stored), the pipeline's premium_index (open_time, OHLC) and funding (funding_time, funding_rate, mark_price).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from lsq.aggregation.bars import BAR_SCHEMA, TRADED
from lsq.aggregation.tran_stats import TRAN_STATS_SCHEMA
from lsq.timelabels import DAY_MS, HOUR_MS, WINDOW_MS


@dataclass(frozen=True)
class Panels:
    window_ms: int
    symbols: list[str]
    bars: pl.DataFrame
    tran_stats: pl.DataFrame
    premium_index: pl.DataFrame
    funding: pl.DataFrame


def symbol_names(n: int) -> list[str]:
    """n Binance-style names: S000USDT, S001USDT, ..."""
    return [f"S{i:03d}USDT" for i in range(n)]


def make_panels(n_symbols: int, days: float, window_ms: int, seed: int = 7, symbols: list[str] | None = None) -> Panels:
    """Panels of `days` of 5-minute windows ending with the window starting at `window_ms` (inclusive)."""
    rng = np.random.default_rng(seed)
    names = symbols or symbol_names(n_symbols)
    n_symbols = len(names)
    n_bars = int(days * DAY_MS // WINDOW_MS)
    times = window_ms - WINDOW_MS * np.arange(n_bars - 1, -1, -1, dtype=np.int64)
    rows = n_symbols * n_bars
    sym = np.repeat(np.asarray(names, dtype=object), n_bars)
    open_time = np.tile(times, n_symbols)
    start = np.repeat(rng.uniform(1, 1000, n_symbols), n_bars)
    steps = rng.normal(0, 0.002, rows).reshape(n_symbols, n_bars)
    close = (start * np.exp(np.cumsum(steps, axis=1)).ravel()).round(4)
    open_ = np.concatenate([[0.0], close[:-1]])
    open_[::n_bars] = start[::n_bars]
    spread = np.abs(rng.normal(0, 0.001, rows)) * close
    high, low = np.maximum(open_, close) + spread, np.minimum(open_, close) - spread
    volume = rng.lognormal(3, 1, rows).round(3)
    buy_share = rng.uniform(0.3, 0.7, rows)
    dolvol = volume * close
    counts = rng.integers(1, 500, rows)
    buy_counts = (counts * buy_share).astype(np.int64)
    base = {"symbol": sym, "open_time": open_time}
    keys = {
        **base,
        "close_time": open_time + WINDOW_MS - 1,
        "time_label": ((open_time % DAY_MS) // WINDOW_MS + 1).astype(np.int32),
    }
    bars = pl.DataFrame(
        {
            **keys,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "quote_volume": dolvol,
            "dolvol": dolvol,
            "vwap": (open_ + close) / 2,
            "buyvolume": volume * buy_share,
            "buydolvol": dolvol * buy_share,
            "sellvolume": volume * (1 - buy_share),
            "selldolvol": dolvol * (1 - buy_share),
            "trade_count": counts,
            "tradecount": counts,
            "buytradecount": buy_counts,
            "selltradecount": counts - buy_counts,
            "span_status": np.full(rows, TRADED, dtype=object),
        }
    ).select(pl.col(c).cast(t) for c, t in BAR_SCHEMA.items())
    tiers = rng.dirichlet(np.ones(4), rows)
    stats: dict[str, object] = {
        **keys,
        "buy_volume": volume * buy_share,
        "sell_volume": volume * (1 - buy_share),
        "buy_dolvol": dolvol * buy_share,
        "sell_dolvol": dolvol * (1 - buy_share),
        "buy_trade_count": buy_counts,
        "sell_trade_count": counts - buy_counts,
        "volume": volume,
        "dolvol": dolvol,
        "trade_count": counts,
    }
    for side, share, n in (("buy", buy_share, buy_counts), ("sell", 1 - buy_share, counts - buy_counts)):
        for t in range(4):
            stats[f"{side}_volume{t + 1}"] = volume * share * tiers[:, t]
            stats[f"{side}_dolvol{t + 1}"] = dolvol * share * tiers[:, t]
            stats[f"{side}_trade_count{t + 1}"] = (n * tiers[:, t]).astype(np.int64)
    tran_stats = pl.DataFrame(stats).select(pl.col(c).cast(t) for c, t in TRAN_STATS_SCHEMA.items())
    premium = pl.DataFrame(
        {**base, "open": steps.ravel() / 10, "high": steps.ravel() / 10, "low": steps.ravel() / 10}
    ).with_columns(pl.col("open").alias("close"))
    funding_times = np.arange(window_ms - window_ms % (8 * HOUR_MS), window_ms - days * DAY_MS, -8 * HOUR_MS)[::-1]
    n_f = len(funding_times)
    funding = pl.DataFrame(
        {
            "symbol": np.repeat(np.asarray(names, dtype=object), n_f),
            "funding_time": np.tile(funding_times.astype(np.int64), n_symbols),
            "funding_rate": rng.normal(1e-4, 3e-4, n_symbols * n_f),
            "mark_price": np.repeat(close[n_bars - 1 :: n_bars], n_f),
        }
    )
    return Panels(window_ms, list(names), bars, tran_stats, premium, funding)
