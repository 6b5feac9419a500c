"""tran_stats: buy/sell splits and size tiers on hand-built trades, tier boundaries exactly at thresholds, filling."""

from __future__ import annotations

from decimal import Decimal as D

import polars as pl
import pytest

from lsq.aggregation import (
    AggregationSchemaError,
    aggregate_bars,
    aggregate_tran_stats,
    aggregate_window_stats,
    complete_bars,
    complete_tran_stats,
    validate_tran_stats,
)
from lsq.aggregation.tran_stats import TRAN_STATS_SCHEMA
from lsq.config import load_config
from lsq.schema import TRADE_SCHEMA
from lsq.timelabels import HOUR_MS, WINDOW_MS, parse_day

DAY = parse_day("2026-03-10")
THRESHOLDS = (1000.0, 5000.0, 20000.0)
FRAME_SCHEMA = {"symbol": pl.String(), **TRADE_SCHEMA}


def trades(rows: list[tuple]) -> pl.DataFrame:
    """rows: (symbol, id, price, qty, first, last, time, buyer_maker)."""
    cols = ("symbol", "agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time")
    data = [dict(zip((*cols, "is_buyer_maker"), (*r[:2], D(r[2]), D(r[3]), *r[4:]), strict=True)) for r in rows]
    return pl.DataFrame(data, schema=FRAME_SCHEMA)


# Notionals: exactly at t1, a hair above t1, exactly t2, exactly t3, above t3, and small ones; buys and sells.
HAND = [
    ("BTCUSDT", 1, "100", "10", 1, 5, DAY + 1, False),  # 1000 = t1 -> tier 1, buy, 5 trades
    ("BTCUSDT", 2, "100.00000001", "10", 6, 6, DAY + 2, False),  # 1000.0000001 > t1 -> tier 2, buy
    ("BTCUSDT", 3, "250", "20", 7, 7, DAY + 3, True),  # 5000 = t2 -> tier 2, sell
    ("BTCUSDT", 4, "2000", "10", 8, 9, DAY + 4, True),  # 20000 = t3 -> tier 3, sell
    ("BTCUSDT", 5, "2000", "10.00000001", 10, 10, DAY + 5, False),  # 20000.00002 -> tier 4, buy
    ("BTCUSDT", 6, "0.5", "3", 11, 11, DAY + WINDOW_MS - 1, True),  # 1.5 -> tier 1, sell
    ("BTCUSDT", 7, "10", "1", 12, 12, DAY + WINDOW_MS, False),  # next window
]


def row(frame: pl.DataFrame, symbol: str, open_time: int) -> dict:
    rows = frame.filter((pl.col("symbol") == symbol) & (pl.col("open_time") == open_time))
    assert rows.height == 1
    return rows.row(0, named=True)


def test_every_field_with_tiers_at_the_thresholds() -> None:
    stats = aggregate_tran_stats(trades(HAND).lazy(), THRESHOLDS)
    assert stats.schema == pl.Schema(TRAN_STATS_SCHEMA)
    validate_tran_stats(stats)
    r = row(stats, "BTCUSDT", DAY)
    zero_q, zero_pq = D(0), D(0)
    expected = {
        "symbol": "BTCUSDT",
        "open_time": DAY,
        "close_time": DAY + WINDOW_MS - 1,
        "time_label": 1,
        "buy_volume": D("30.00000001"),
        "sell_volume": D("33"),
        "buy_dolvol": D("1000") + D("1000.0000001") + D("20000.00002"),
        "sell_dolvol": D("5000") + D("20000") + D("1.5"),
        "buy_trade_count": 3,  # aggTrade records, not Σ(l−f+1)
        "sell_trade_count": 3,
        "volume": D("63.00000001"),
        "dolvol": D("47001.5000201"),
        "trade_count": 6,
        "buy_volume1": D("10"),
        "buy_volume2": D("10"),
        "buy_volume3": zero_q,
        "buy_volume4": D("10.00000001"),
        "buy_dolvol1": D("1000"),
        "buy_dolvol2": D("1000.0000001"),
        "buy_dolvol3": zero_pq,
        "buy_dolvol4": D("20000.00002"),
        "buy_trade_count1": 1,
        "buy_trade_count2": 1,
        "buy_trade_count3": 0,
        "buy_trade_count4": 1,
        "sell_volume1": D("3"),
        "sell_volume2": D("20"),
        "sell_volume3": D("10"),
        "sell_volume4": zero_q,
        "sell_dolvol1": D("1.5"),
        "sell_dolvol2": D("5000"),
        "sell_dolvol3": D("20000"),
        "sell_dolvol4": zero_pq,
        "sell_trade_count1": 1,
        "sell_trade_count2": 1,
        "sell_trade_count3": 1,
        "sell_trade_count4": 0,
    }
    assert r == expected
    nxt = row(stats, "BTCUSDT", DAY + WINDOW_MS)
    assert (nxt["time_label"], nxt["buy_volume1"], nxt["buy_trade_count1"], nxt["trade_count"]) == (2, D(1), 1, 1)


def test_default_thresholds_come_from_settings_in_usd() -> None:
    t1, t2, t3 = load_config().data.tran_stats.thresholds_usd
    assert (t1, t2, t3) == pytest.approx((40_000 / 7, 200_000 / 7, 1_000_000 / 7))
    # 5714.28571428...: a notional of 5714.28 is tier 1, 5714.29 is tier 2.
    rows = [
        ("ETHUSDT", 1, "5714.28", "1", 1, 1, DAY, False),
        ("ETHUSDT", 2, "5714.29", "1", 2, 2, DAY + 1, False),
    ]
    r = row(aggregate_tran_stats(trades(rows), (t1, t2, t3)), "ETHUSDT", DAY)
    assert (r["buy_trade_count1"], r["buy_trade_count2"]) == (1, 1)


def test_single_pass_matches_separate_functions() -> None:
    frame = trades(HAND)
    bars, stats = aggregate_window_stats(frame, THRESHOLDS)
    assert bars.equals(aggregate_bars(frame))
    assert stats.equals(aggregate_tran_stats(frame, THRESHOLDS))


def test_complete_fills_zeros_and_follows_bar_keys() -> None:
    listed = [("SOLUSDT", 9, "20", "1", 1, 1, DAY + HOUR_MS + 7, True)]
    frame = trades(HAND + listed)
    bars, stats = aggregate_window_stats(frame, THRESHOLDS)
    full_bars = complete_bars(bars, ["BTCUSDT", "SOLUSDT"], DAY, DAY + 2 * HOUR_MS)
    aligned = complete_tran_stats(stats, ["BTCUSDT", "SOLUSDT"], DAY, DAY + 2 * HOUR_MS, keys=full_bars)
    validate_tran_stats(aligned)
    assert aligned.select("symbol", "open_time").equals(full_bars.select("symbol", "open_time"))
    assert aligned.filter(pl.col("symbol") == "SOLUSDT")["open_time"].min() == DAY + HOUR_MS
    empty = row(aligned, "BTCUSDT", DAY + 2 * WINDOW_MS)
    assert empty["time_label"] == 3 and empty["close_time"] == DAY + 3 * WINDOW_MS - 1
    assert all(empty[c] == 0 for c in TRAN_STATS_SCHEMA if c not in ("symbol", "open_time", "close_time", "time_label"))
    grid = complete_tran_stats(stats, ["BTCUSDT", "SOLUSDT"], DAY, DAY + 2 * HOUR_MS)
    assert grid.height == 2 * 24  # without keys: every window of every symbol
    assert row(grid, "SOLUSDT", DAY)["trade_count"] == 0
    with pytest.raises(ValueError, match="no key row"):
        complete_tran_stats(stats, ["BTCUSDT"], DAY, DAY + 2 * HOUR_MS, keys=full_bars.filter(pl.col("time_label") > 1))


def test_bad_thresholds_and_broken_frames_are_named() -> None:
    with pytest.raises(ValueError, match="increasing"):
        aggregate_tran_stats(trades(HAND), (5000.0, 1000.0, 20000.0))
    stats = aggregate_tran_stats(trades(HAND), THRESHOLDS)
    with pytest.raises(AggregationSchemaError, match=r"tiers 1\.\.4"):
        validate_tran_stats(stats.with_columns(pl.col("buy_trade_count2") + 1))
    with pytest.raises(AggregationSchemaError, match="greater_than_or_equal_to"):
        validate_tran_stats(stats.with_columns(pl.col("sell_trade_count4") - 1))
