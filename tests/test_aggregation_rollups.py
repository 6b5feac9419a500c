"""Rollups of 5-minute bars and tran_stats equal aggregating the same trades directly at the longer period."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lsq.aggregation import (
    ROLLUP_PERIODS,
    aggregate_bars,
    aggregate_tran_stats,
    complete_bars,
    complete_tran_stats,
    rollup_bars,
    rollup_tran_stats,
    validate_bars,
    validate_tran_stats,
)
from lsq.schema import TRADE_SCHEMA
from lsq.timelabels import DAY_MS, HOUR_MS, MINUTE_MS, PERIOD_MS, parse_day

START = parse_day("2026-05-01")
END = START + 2 * DAY_MS
THRESHOLDS = (500.0, 5_000.0, 50_000.0)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "QUIETUSDT", "NEWUSDT"]


def random_trades(seed: int) -> pl.DataFrame:
    """Busy, quiet (hours without trades) and newly listed symbols over two days, with prices on a 0.01 grid."""
    rng = np.random.default_rng(seed)
    frames = []
    plan = {
        "BTCUSDT": (6000, START),
        "ETHUSDT": (3000, START),
        "QUIETUSDT": (40, START),
        "NEWUSDT": (500, START + 30 * HOUR_MS + 7 * MINUTE_MS),
    }
    for k, (symbol, (n, first)) in enumerate(plan.items()):
        times = np.sort(rng.integers(first, END, n))
        times[0] = first
        ticks = np.maximum(1, 100_000 + np.cumsum(rng.integers(-50, 51, n)))
        steps = rng.integers(1, 5_000_000, n)  # quantity in 1e-3
        mult = rng.integers(1, 4, n)
        last = 10_000 * (k + 1) + np.cumsum(mult)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "agg_trade_id": 1_000 * (k + 1) + np.arange(n),
                    "price": [f"{t / 100:.2f}" for t in ticks],
                    "quantity": [f"{s / 1000:.3f}" for s in steps],
                    "first_trade_id": last - mult + 1,
                    "last_trade_id": last,
                    "transact_time": times,
                    "is_buyer_maker": rng.random(n) < 0.5,
                }
            ).with_columns(pl.col("price", "quantity").cast(pl.Decimal(38, 8)))
        )
    return pl.concat(frames).select("symbol", *TRADE_SCHEMA)


PREV = pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT", "QUIETUSDT"], "close": [D("999.5"), D("1000"), D("1000.01")]})


@pytest.mark.parametrize("period", ROLLUP_PERIODS)
def test_rollup_equals_direct_aggregation(period: str) -> None:
    frame = random_trades(5)
    period_ms = PERIOD_MS[period]
    five = complete_bars(aggregate_bars(frame), SYMBOLS, START, END, PREV)
    assert five.filter(pl.col("span_status") == "NoTrade").height > 100
    rolled = rollup_bars(five, period)
    direct = complete_bars(aggregate_bars(frame, period_ms), SYMBOLS, START, END, PREV, period_ms)
    validate_bars(rolled)
    assert_frame_equal(rolled, direct)
    if period == "1h":
        assert rolled.filter(pl.col("span_status") == "NoTrade").height > 10  # whole quiet hours

    stats5 = complete_tran_stats(aggregate_tran_stats(frame, THRESHOLDS), SYMBOLS, START, END)
    stats_rolled = rollup_tran_stats(stats5, period)
    stats_direct = complete_tran_stats(
        aggregate_tran_stats(frame, THRESHOLDS, period_ms), SYMBOLS, START, END, period_ms
    )
    validate_tran_stats(stats_rolled)
    assert_frame_equal(stats_rolled, stats_direct)


def test_rollup_of_a_period_still_open() -> None:
    frame = random_trades(9)
    cut = START + DAY_MS + 10 * HOUR_MS + 35 * MINUTE_MS  # 4h period 08:00-12:00 is open
    partial = frame.filter(pl.col("transact_time") < cut)
    five = complete_bars(aggregate_bars(partial), SYMBOLS, START, cut, PREV)
    rolled = rollup_bars(five, "4h")
    last = rolled.filter(pl.col("open_time") == START + DAY_MS + 8 * HOUR_MS)
    direct = aggregate_bars(partial, PERIOD_MS["4h"]).filter(pl.col("open_time") == START + DAY_MS + 8 * HOUR_MS)
    traded = last.filter(pl.col("span_status") == "Traded")
    assert_frame_equal(traded, direct)
    assert (last["time_label"].unique().to_list(), last["close_time"].unique().to_list()) == (
        [3],
        [START + DAY_MS + 12 * HOUR_MS - 1],
    )
    stats = rollup_tran_stats(complete_tran_stats(aggregate_tran_stats(partial, THRESHOLDS), SYMBOLS, START, cut), "4h")
    assert stats.filter(pl.col("open_time") == START + DAY_MS + 8 * HOUR_MS).height == len(SYMBOLS)


def test_rollup_rejects_bad_input() -> None:
    five = aggregate_bars(random_trades(1))
    with pytest.raises(ValueError, match="unknown rollup period '2h'"):
        rollup_bars(five, "2h")
    hourly = aggregate_bars(random_trades(1), HOUR_MS)
    with pytest.raises(ValueError, match="5-minute rows"):
        rollup_bars(hourly, "4h")
    assert rollup_bars(five.head(0), "1h").height == 0
