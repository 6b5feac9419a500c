"""5-minute bars: every field on hand-built trades, exactness against Python Decimal, and the simulator's klines."""

from __future__ import annotations

import math
from decimal import Context, localcontext
from decimal import Decimal as D

import numpy as np
import polars as pl
import pytest

from lsq.aggregation import (
    AggregationSchemaError,
    BarSchema,
    aggregate_bars,
    complete_bars,
    validate_bars,
)
from lsq.aggregation.bars import BAR_SCHEMA
from lsq.schema import TRADE_SCHEMA
from lsq.timelabels import DAY_MS, HOUR_MS, MINUTE_MS, WINDOW_MS, parse_day
from simulator.instruments import select_instruments
from simulator.market import Market

DAY = parse_day("2026-03-10")
FRAME_SCHEMA = {"symbol": pl.String(), **TRADE_SCHEMA}


def trades(rows: list[tuple]) -> pl.DataFrame:
    """rows: (symbol, id, price, qty, first, last, time, buyer_maker) with prices/quantities as strings."""
    cols = ("symbol", "agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time")
    data = [dict(zip((*cols, "is_buyer_maker"), (*r[:2], D(r[2]), D(r[3]), *r[4:]), strict=True)) for r in rows]
    return pl.DataFrame(data, schema=FRAME_SCHEMA)


# BTC around midnight and on window boundaries; ETH listed at 12:03 (its first trade).
HAND = [
    ("BTCUSDT", 100, "50000.10", "0.002", 1000, 1000, DAY - 1, False),  # 23:59:59.999 the day before
    ("BTCUSDT", 101, "50001.00", "0.5", 1001, 1003, DAY, True),  # exactly midnight: window 1
    ("BTCUSDT", 102, "49999.99", "1.25", 1004, 1004, DAY + WINDOW_MS - 1, False),  # last ms of window 1
    ("BTCUSDT", 103, "50010.5", "0.001", 1005, 1009, DAY + WINDOW_MS, False),  # first ms of window 2
    ("BTCUSDT", 104, "50000", "3", 1010, 1010, DAY + 3 * WINDOW_MS + 5, True),  # window 4; window 3 empty
    ("ETHUSDT", 7, "3000.01", "0.1", 70, 71, DAY + 12 * HOUR_MS + 3 * MINUTE_MS, False),
    ("ETHUSDT", 8, "2999.5", "2.000", 72, 72, DAY + 12 * HOUR_MS + 5 * MINUTE_MS - 1, True),
]


def bar(frame: pl.DataFrame, symbol: str, open_time: int) -> dict:
    rows = frame.filter((pl.col("symbol") == symbol) & (pl.col("open_time") == open_time))
    assert rows.height == 1, f"{symbol} {open_time}: {rows.height} rows"
    return rows.row(0, named=True)


def test_every_field_of_a_hand_built_window() -> None:
    bars = aggregate_bars(trades(HAND).lazy())
    assert bars.schema == pl.Schema(BAR_SCHEMA)
    b = bar(bars, "BTCUSDT", DAY)
    assert b == {
        "symbol": "BTCUSDT",
        "open_time": DAY,
        "close_time": DAY + WINDOW_MS - 1,
        "time_label": 1,
        "open": D("50001.00"),
        "high": D("50001.00"),
        "low": D("49999.99"),
        "close": D("49999.99"),
        "volume": D("1.75"),
        "quote_volume": D("87500.4875"),  # 50001 x 0.5 + 49999.99 x 1.25
        "dolvol": D("87500.4875"),
        "vwap": pytest.approx(87500.4875 / 1.75, rel=1e-15),
        "buyvolume": D("1.25"),
        "buydolvol": D("62499.9875"),
        "sellvolume": D("0.5"),
        "selldolvol": D("25000.5"),
        "trade_count": 2,
        "tradecount": 4,  # (1003 - 1001 + 1) + 1
        "buytradecount": 1,
        "selltradecount": 3,
        "span_status": "Traded",
    }


def test_windows_straddling_midnight_and_on_boundaries() -> None:
    bars = aggregate_bars(trades(HAND))
    before = bar(bars, "BTCUSDT", DAY - WINDOW_MS)
    assert (before["time_label"], before["close_time"]) == (288, DAY - 1)
    assert before["open"] == before["close"] == D("50000.10")
    assert (before["volume"], before["tradecount"], before["buytradecount"]) == (D("0.002"), 1, 1)
    second = bar(bars, "BTCUSDT", DAY + WINDOW_MS)  # T = t + 5 min belongs to the next window
    assert (second["time_label"], second["open"], second["volume"], second["tradecount"]) == (
        2,
        D("50010.5"),
        D("0.001"),
        5,
    )
    assert bars.filter(pl.col("open_time") == DAY + 2 * WINDOW_MS).height == 0  # no trades, no row yet
    eth = bar(bars, "ETHUSDT", DAY + 12 * HOUR_MS)
    assert (eth["time_label"], eth["open"], eth["close"], eth["high"], eth["low"]) == (
        145,
        D("3000.01"),
        D("2999.5"),
        D("3000.01"),
        D("2999.5"),
    )
    assert (eth["dolvol"], eth["buydolvol"], eth["selldolvol"]) == (D("6299.001"), D("300.001"), D("5999.0"))
    assert (eth["trade_count"], eth["tradecount"], eth["buytradecount"], eth["selltradecount"]) == (2, 3, 2, 1)


def test_open_close_follow_agg_id_not_row_order() -> None:
    frame = trades(HAND)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    assert shuffled["agg_trade_id"].to_list() != frame["agg_trade_id"].to_list()
    assert aggregate_bars(shuffled).equals(aggregate_bars(frame))
    same_side = [  # one cell (window, side) whose rows arrive as ids 7, 5, 6
        ("SOLUSDT", 7, "12", "1", 7, 7, DAY + 30, False),
        ("SOLUSDT", 5, "10", "1", 5, 5, DAY + 10, False),
        ("SOLUSDT", 6, "11", "1", 6, 6, DAY + 20, False),
    ]
    b = aggregate_bars(trades(same_side)).row(0, named=True)
    assert (b["open"], b["close"], b["high"], b["low"]) == (D("10"), D("12"), D("12"), D("10"))


def test_complete_bars_fills_no_trade_windows_and_respects_listing() -> None:
    prev = pl.DataFrame({"symbol": ["BTCUSDT"], "close": [D("50000.10")]})
    bars = aggregate_bars(trades(HAND).filter(pl.col("transact_time") >= DAY))
    full = complete_bars(bars, ["BTCUSDT", "ETHUSDT"], DAY, DAY + DAY_MS, prev)
    validate_bars(full)
    btc = full.filter(pl.col("symbol") == "BTCUSDT")
    assert btc.height == 288 and btc["time_label"].to_list() == list(range(1, 289))
    gap = bar(full, "BTCUSDT", DAY + 2 * WINDOW_MS)
    assert (gap["open"], gap["high"], gap["low"], gap["close"]) == (D("50010.5"),) * 4  # previous close
    assert math.isnan(gap["vwap"]) and gap["span_status"] == "NoTrade"
    assert (gap["volume"], gap["dolvol"], gap["quote_volume"], gap["buyvolume"], gap["selldolvol"]) == (0,) * 5
    assert (gap["trade_count"], gap["tradecount"], gap["buytradecount"], gap["selltradecount"]) == (0,) * 4
    late = bar(full, "BTCUSDT", DAY + DAY_MS - WINDOW_MS)
    assert late["close"] == D("50000") and late["span_status"] == "NoTrade"
    eth = full.filter(pl.col("symbol") == "ETHUSDT")
    assert eth["open_time"].min() == DAY + 12 * HOUR_MS  # nothing before its first trade
    assert eth.height == 144 and eth["span_status"].to_list()[0] == "Traded"
    assert eth.filter(pl.col("span_status") == "NoTrade")["close"].unique().to_list() == [D("2999.5")]
    assert set(full["span_status"].unique().to_list()) == {"Traded", "NoTrade"}  # never an empty string


def test_schema_docs_say_which_trade_count_is_which() -> None:
    columns = BarSchema.to_schema().columns
    assert "aggTrade records" in (columns["trade_count"].description or "")
    assert "Σ(l−f+1)" in (columns["tradecount"].description or "")
    assert "kline" in (columns["tradecount"].description or "")
    assert "NoTrade" in (columns["span_status"].description or "")


def test_complete_bars_across_midnight() -> None:
    bars = aggregate_bars(trades(HAND))
    full = complete_bars(bars, ["BTCUSDT"], DAY - HOUR_MS, DAY + HOUR_MS)
    assert full["time_label"].to_list() == [288, *range(1, 13)]  # no close known before its first trade
    assert full["open_time"].min() == DAY - WINDOW_MS  # BTC's first trade in range is at 23:59:59.999
    carried = bar(full, "BTCUSDT", DAY + 2 * WINDOW_MS)
    assert carried["span_status"] == "NoTrade" and carried["close"] == D("50010.5")
    assert bar(full, "BTCUSDT", DAY)["open"] == D("50001.00")
    prev = pl.DataFrame({"symbol": ["BTCUSDT"], "close": [D("49000")]})
    with_prev = complete_bars(bars, ["BTCUSDT"], DAY - HOUR_MS, DAY + HOUR_MS, prev)
    assert with_prev["time_label"].to_list() == [*range(277, 289), *range(1, 13)]
    assert bar(with_prev, "BTCUSDT", DAY - 2 * WINDOW_MS)["close"] == D("49000")


def test_complete_bars_uses_prev_close_for_leading_gaps() -> None:
    bars = aggregate_bars(trades(HAND).filter(pl.col("transact_time") >= DAY + WINDOW_MS))
    without = complete_bars(bars, ["BTCUSDT"], DAY, DAY + HOUR_MS)
    assert without["open_time"].min() == DAY + WINDOW_MS  # no close known before the first trade
    prev = pl.DataFrame({"symbol": ["BTCUSDT"], "close": [D("49999.99")]})
    with_prev = complete_bars(bars, ["BTCUSDT"], DAY, DAY + HOUR_MS, prev)
    first = bar(with_prev, "BTCUSDT", DAY)
    assert (first["open"], first["close"], first["span_status"]) == (D("49999.99"), D("49999.99"), "NoTrade")
    assert with_prev.height == 12


def test_product_and_sums_are_exact_against_python_decimal() -> None:
    rng = np.random.default_rng(11)
    n = 2000
    prices = [D(int(x)).scaleb(-8) for x in rng.integers(1, 10**13, n)]  # up to 100,000 with 8 decimals
    qtys = [D(int(x)).scaleb(-8) for x in rng.integers(1, 10**15, n)]  # up to 10,000,000 with 8 decimals
    maker = rng.random(n) < 0.5
    rows = [
        ("XUSDT", i, str(p), str(q), 2 * i, 2 * i + 1, DAY + i, bool(m))
        for i, (p, q, m) in enumerate(zip(prices, qtys, maker, strict=True))
    ]
    b = aggregate_bars(trades(rows)).row(0, named=True)
    with localcontext(Context(prec=80)):  # Python's default 28 digits would round the reference itself
        assert b["dolvol"] == sum(p * q for p, q in zip(prices, qtys, strict=True))
        assert b["buydolvol"] == sum(p * q for p, q, m in zip(prices, qtys, maker, strict=True) if not m)
        assert b["volume"] == sum(qtys) and b["sellvolume"] == sum(q for q, m in zip(qtys, maker, strict=True) if m)
    assert b["dolvol"].as_tuple().exponent == -16


def test_other_periods_label_within_the_day() -> None:
    hourly = aggregate_bars(trades(HAND), period_ms=HOUR_MS)
    eth = bar(hourly, "ETHUSDT", DAY + 12 * HOUR_MS)
    assert (eth["time_label"], eth["close_time"]) == (13, DAY + 13 * HOUR_MS - 1)
    assert bar(hourly, "BTCUSDT", DAY - HOUR_MS)["time_label"] == 24
    with pytest.raises(ValueError, match="divides a day"):
        aggregate_bars(trades(HAND), period_ms=7 * MINUTE_MS)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="missing columns \\['symbol'\\]"):
        aggregate_bars(trades(HAND).drop("symbol"))
    with pytest.raises(ValueError, match="price"):
        aggregate_bars(trades(HAND).with_columns(pl.col("price").cast(pl.Float64)))
    too_large = [*HAND, ("BTCUSDT", 105, "200000000000", "1", 1011, 1011, DAY + 4 * WINDOW_MS, False)]
    with pytest.raises(ValueError, match=r"a price of 200000000000.* is too large to aggregate"):
        aggregate_bars(trades(too_large))


def test_validate_bars_rejects_broken_invariants() -> None:
    bars = aggregate_bars(trades(HAND))
    validate_bars(bars)
    broken = bars.with_columns(
        pl.when(pl.col("symbol") == "ETHUSDT").then(D("1")).otherwise(pl.col("high")).alias("high")
    )
    with pytest.raises(AggregationSchemaError, match="low <= open, close <= high"):
        validate_bars(broken)
    lopsided = bars.with_columns(pl.col("buyvolume") + 1)
    with pytest.raises(AggregationSchemaError, match="buy \\+ sell"):
        validate_bars(lopsided)
    with pytest.raises(AggregationSchemaError, match="time_label"):
        validate_bars(bars.with_columns(pl.col("time_label") + 1))


def _market_trades(market: Market, symbols: list[str], start: int, end: int) -> pl.DataFrame:
    frames = []
    for s in symbols:
        block = market.trades(s, start, end)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": s,
                    "agg_trade_id": block.agg_id,
                    "price": pl.Series(block.prices(), dtype=pl.String).cast(pl.Decimal(38, 8)),
                    "quantity": pl.Series(block.quantities(), dtype=pl.String).cast(pl.Decimal(38, 8)),
                    "first_trade_id": block.first_id,
                    "last_trade_id": block.last_id,
                    "transact_time": block.time_ms,
                    "is_buyer_maker": block.buyer_maker,
                },
                schema=FRAME_SCHEMA,
            )
        )
    return pl.concat(frames)


@pytest.mark.parametrize("rate", [0.004, 0.25], ids=["sparse", "busy"])
def test_bars_equal_simulator_klines_over_a_day(rate: float) -> None:
    """The simulator's own 5m klines (Binance rows) for a whole day equal our completed bars, field by field."""
    day = parse_day("2026-02-03")
    listed = day + 9 * HOUR_MS + 17 * MINUTE_MS + 123
    instruments = select_instruments(6, onboard={"XRPUSDT": listed})
    market = Market(instruments, seed=7, rate_multiplier=rate)
    symbols = ["BTCUSDT", "ETHUSDT", "XRPUSDT", instruments[5].symbol]
    assert "XRPUSDT" in {i.symbol for i in instruments}
    frame = _market_trades(market, symbols, day, day + DAY_MS)
    prev_rows = []
    for s in symbols:
        if market.first_trade_ms(s) < day:
            prev_rows.append((s, D(market.last_trade(s, day - 1).prices()[0])))
    prev = pl.DataFrame(prev_rows, schema={"symbol": pl.String, "close": pl.Decimal(38, 8)}, orient="row")
    bars = complete_bars(aggregate_bars(frame.lazy()), symbols, day, day + DAY_MS, prev)
    validate_bars(bars)
    for s in symbols:
        klines = market.klines(s, "5m", day, day + DAY_MS - 1, 1500, now_ms=day + DAY_MS)
        ours = bars.filter(pl.col("symbol") == s).sort("open_time")
        assert ours.height == len(klines) > 0
        expected = pl.DataFrame(
            [
                (k[0], D(k[1]), D(k[2]), D(k[3]), D(k[4]), D(k[5]), k[6], D(k[7]), k[8], D(k[9]), D(k[10]))
                for k in klines
            ],
            orient="row",
            schema=[
                "open_time",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "close_time",
                "quote_volume",
                "tradecount",
                "buyvolume",
                "buydolvol",
            ],
        )
        got = ours.select(expected.columns)
        for col in expected.columns:
            assert got[col].to_list() == expected[col].to_list(), f"{s} {col}"
    if rate < 0.01:
        assert bars.filter(pl.col("span_status") == "NoTrade").height > 20
    xrp = bars.filter(pl.col("symbol") == "XRPUSDT")
    assert xrp["open_time"].min() == listed - listed % WINDOW_MS
