"""OHLCV bars from aggTrades, per (symbol, UTC window), exact in Decimal.

Input: a frame with lsq.schema.TRADE_SCHEMA columns plus `symbol` (Binance name). Prices and quantities are
Decimal(38, 8). Polars multiplies two Decimal(38, 8) at scale 8 (it truncates), so the notional p·q is kept at scale
16 (`NOTIONAL`), where every product of two 8-decimal numbers is exact. Floats appear only in `vwap`.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_FLOOR
from decimal import Decimal as PyDecimal

import polars as pl

from lsq.schema import PRICE, QTY, TRADE_SCHEMA
from lsq.timelabels import DAY_MS, WINDOW_MS

NOTIONAL_SCALE = 16
NOTIONAL = pl.Decimal(38, NOTIONAL_SCALE)
NO_TRADE = "NoTrade"  # span_status of a window without trades (prices carried from the last close)
TRADED = "Traded"  # span_status of a window with at least one trade (files before 2026-12 hold "" instead)
ID_SHIFT = 1 << 64  # packs (agg_trade_id, price units) into one Int128: prices stay below 1.8e11

BAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "open_time": pl.Int64(),
    "close_time": pl.Int64(),
    "time_label": pl.Int32(),
    "open": PRICE,
    "high": PRICE,
    "low": PRICE,
    "close": PRICE,
    "volume": QTY,
    "quote_volume": NOTIONAL,
    "dolvol": NOTIONAL,
    "vwap": pl.Float64(),
    "buyvolume": QTY,
    "buydolvol": NOTIONAL,
    "sellvolume": QTY,
    "selldolvol": NOTIONAL,
    "trade_count": pl.Int64(),
    "tradecount": pl.Int64(),
    "buytradecount": pl.Int64(),
    "selltradecount": pl.Int64(),
    "span_status": pl.String(),
}

# Additive columns: a bar of a longer period is their sum over its windows.
BAR_SUM_COLUMNS = (
    "volume",
    "quote_volume",
    "dolvol",
    "buyvolume",
    "buydolvol",
    "sellvolume",
    "selldolvol",
    "trade_count",
    "tradecount",
    "buytradecount",
    "selltradecount",
)


def check_period(period_ms: int) -> int:
    """Periods must tile the UTC day so windows and time labels are aligned to midnight."""
    if not isinstance(period_ms, int) or period_ms <= 0 or DAY_MS % period_ms or period_ms % 60_000:
        raise ValueError(f"period_ms={period_ms!r} must be a whole number of minutes that divides a day")
    return period_ms


def _lazy(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    if isinstance(frame, pl.DataFrame):
        return frame.lazy()
    if isinstance(frame, pl.LazyFrame):
        return frame
    raise TypeError(f"expected a polars LazyFrame or DataFrame, got {type(frame).__name__}")


def trades_input(trades: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """The trades as a LazyFrame after checking columns and types (cheap: schema only, no data read)."""
    lf = _lazy(trades)
    schema = lf.collect_schema()
    expected = {**TRADE_SCHEMA, "symbol": pl.String()}
    missing = [c for c in expected if c not in schema]
    if missing:
        raise ValueError(f"trades frame is missing columns {missing} (has {list(schema)})")
    wrong = {c: str(schema[c]) for c, t in expected.items() if schema[c] != t}
    if wrong:
        want = {c: str(expected[c]) for c in wrong}
        raise ValueError(f"trades frame has wrong column types {wrong}; expected {want}")
    return lf


def window_columns(period_ms: int) -> list[pl.Expr]:
    """close_time (end - 1 ms, as Binance) and time_label (1-based period index in the UTC day) from open_time."""
    start = pl.col("open_time")
    return [
        (start + (period_ms - 1)).alias("close_time"),
        ((start % DAY_MS) // period_ms + 1).cast(pl.Int32).alias("time_label"),
    ]


def _scaled(x: int | float) -> int:
    """A USD amount as an integer count of 1e-16 (the physical unit of NOTIONAL), rounded down: exact comparisons."""
    return int(PyDecimal(x).scaleb(NOTIONAL_SCALE).to_integral_value(rounding=ROUND_FLOOR))


def trade_cells(
    trades: pl.LazyFrame | pl.DataFrame,
    period_ms: int = WINDOW_MS,
    thresholds_usd: tuple[float, float, float] | None = None,
) -> pl.DataFrame:
    """The one pass over the trades: partial sums per (symbol, open_time, taker_buy[, tier]).

    Sums run on the integer representation of the decimals (quantity x 1e8, price x quantity x 1e16 in Int128), which
    is exact and several times faster than Decimal arithmetic in Polars; `decimal_from_units` converts back. With
    `thresholds_usd` each cell is also split by size tier (see lsq.aggregation.tran_stats). The result is small
    (a few rows per symbol and window). The open and close are found without sorting: `first`/`last` are the min/max
    of agg_trade_id x 2^64 + price units, whose high part orders trades by id and whose low part is the price, so
    the input may come in any row order.
    """
    check_period(period_ms)
    lf = trades_input(trades)
    notional = (pl.col("price").to_physical() * pl.col("quantity").to_physical()).alias("pq")
    keys: list[pl.Expr] = [
        pl.col("symbol"),
        (pl.col("transact_time") - pl.col("transact_time") % period_ms).alias("open_time"),
        (~pl.col("is_buyer_maker")).alias("taker_buy"),
    ]
    if thresholds_usd is not None:
        t1, t2, t3 = (_scaled(t) for t in check_thresholds(thresholds_usd))
        pq = pl.col("pq")
        tier = pl.lit(1, pl.Int8) + (pq > t1).cast(pl.Int8) + (pq > t2).cast(pl.Int8) + (pq > t3).cast(pl.Int8)
        keys.append(tier.alias("tier"))
    price_units = pl.col("price").to_physical()
    by_id = pl.col("agg_trade_id").cast(pl.Int128) * pl.lit(ID_SHIFT, pl.Int128) + price_units
    cells = (
        lf.with_columns(notional, by_id.alias("id_price"))
        .group_by(*keys)
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            (pl.col("last_trade_id") - pl.col("first_trade_id") + 1).sum().alias("nt"),
            pl.col("quantity").to_physical().sum().alias("q"),
            pl.col("pq").sum(),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("id_price").min().alias("first"),
            pl.col("id_price").max().alias("last"),
        )
        .collect()
    )
    too_large = cells.filter(pl.col("high").to_physical() >= pl.lit(ID_SHIFT, pl.Int128))
    if too_large.height:
        raise ValueError(f"a price of {too_large['high'][0]} is too large to aggregate (limit {ID_SHIFT / 1e8:.3g})")
    return cells


def check_thresholds(thresholds: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(thresholds) != 3 or not all(isinstance(t, int | float) for t in thresholds):
        raise ValueError(f"thresholds_usd must be three numbers t1 < t2 < t3, got {thresholds!r}")
    t1, t2, t3 = thresholds
    if not 0 < t1 < t2 < t3:
        raise ValueError(f"thresholds_usd must be positive and increasing (t1 < t2 < t3), got {thresholds!r}")
    return t1, t2, t3


def decimal_from_units(expr: pl.Expr, dtype: pl.Decimal) -> pl.Expr:
    """Int128 integer units (value x 10^scale) back to a Decimal of that scale, exactly."""
    unit = pl.lit(PyDecimal(1).scaleb(-dtype.scale), dtype)
    return expr.cast(pl.Decimal(38, 0)) * unit


def bars_from_cells(cells: pl.LazyFrame, period_ms: int) -> pl.DataFrame:
    """Collapse cells to one bar per (symbol, open_time)."""
    buy = pl.col("taker_buy")
    spread = {
        f"{side}{name}": pl.when(buy if side == "buy" else ~buy).then(pl.col(src))
        for side in ("buy", "sell")
        for name, src in (("volume", "q"), ("dolvol", "pq"), ("tradecount", "nt"))
    }
    out = (
        cells.with_columns(**spread)
        .group_by("symbol", "open_time")
        .agg(
            (pl.col("first").min() % pl.lit(ID_SHIFT, pl.Int128)).alias("open"),
            pl.col("high").max(),
            pl.col("low").min(),
            (pl.col("last").max() % pl.lit(ID_SHIFT, pl.Int128)).alias("close"),
            pl.col("n").sum().alias("trade_count"),
            *[pl.col(name).sum() for name in spread],
        )
        .with_columns(
            (pl.col("buyvolume") + pl.col("sellvolume")).alias("volume"),
            (pl.col("buydolvol") + pl.col("selldolvol")).alias("dolvol"),
            (pl.col("buytradecount") + pl.col("selltradecount")).alias("tradecount"),
        )
        .with_columns(
            *[decimal_from_units(pl.col(c), PRICE) for c in ("open", "close")],
            *[decimal_from_units(pl.col(c), QTY) for c in ("volume", "buyvolume", "sellvolume")],
            *[decimal_from_units(pl.col(c), NOTIONAL) for c in ("dolvol", "buydolvol", "selldolvol")],
        )
        .with_columns(
            *window_columns(period_ms),
            pl.col("dolvol").alias("quote_volume"),
            vwap_expr(),
            pl.lit(TRADED, pl.String).alias("span_status"),
        )
        .sort("symbol", "open_time")
    )
    return out.collect().select(_cast_bar_columns())


def aggregate_bars(trades: pl.LazyFrame | pl.DataFrame, period_ms: int = WINDOW_MS) -> pl.DataFrame:
    """Bars of every (symbol, window) that has trades, sorted by symbol then open_time.

    open/close are the prices of the lowest/highest agg_trade_id (not the first row), so input order does not matter.
    `trade_count` counts aggTrade records; `tradecount` counts underlying trades Σ(l−f+1), as Binance klines' `count`;
    `buytradecount`/`selltradecount` are Σ(l−f+1) over taker buys (is_buyer_maker = false) / taker sells, so
    buytradecount + selltradecount = tradecount. `quote_volume` and `dolvol` are the same exact Σp·q under Binance's
    and the original system's names.
    """
    return bars_from_cells(trade_cells(trades, period_ms).lazy(), period_ms)


def vwap_expr() -> pl.Expr:
    """dolvol / volume as Float64; NaN for a window without volume."""
    return (
        pl.when(pl.col("volume") > 0)
        .then(pl.col("dolvol").cast(pl.Float64) / pl.col("volume").cast(pl.Float64))
        .otherwise(float("nan"))
        .alias("vwap")
    )


def _cast_bar_columns() -> list[pl.Expr]:
    return [pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()]


def window_grid(symbols: Iterable[str], start_ms: int, end_ms: int, period_ms: int) -> pl.DataFrame:
    """Every (symbol, open_time) with open_time in [start, end) on the period grid."""
    check_period(period_ms)
    if start_ms % period_ms or end_ms % period_ms:
        raise ValueError(f"start_ms={start_ms} and end_ms={end_ms} must lie on the {period_ms} ms grid")
    if end_ms < start_ms:
        raise ValueError(f"end_ms={end_ms} is before start_ms={start_ms}")
    names = pl.DataFrame({"symbol": sorted(set(symbols))}, schema={"symbol": pl.String})
    times = pl.DataFrame({"open_time": pl.int_range(start_ms, end_ms, period_ms, dtype=pl.Int64, eager=True)})
    return names.join(times, how="cross")


def complete_bars(
    bars: pl.DataFrame,
    symbols: Iterable[str],
    start_ms: int,
    end_ms: int,
    prev_close: pl.DataFrame | None = None,
    period_ms: int = WINDOW_MS,
) -> pl.DataFrame:
    """Every (symbol, window) in [start, end) exactly once, for `symbols` and any symbol present in `bars`.

    A window without trades repeats the last close before it (from an earlier window, else `prev_close`) as
    open=high=low=close, with zero volumes and counts, vwap NaN and span_status "NoTrade". A symbol with no close
    before a window (not yet traded: listed later) gets no row for it, so its rows start at its first trade.
    """
    bars = bars.filter(pl.col("open_time").is_between(start_ms, end_ms, closed="left"))
    if bars.select(pl.struct("symbol", "open_time").is_duplicated().any()).item():
        raise ValueError("bars contain duplicate (symbol, open_time) rows")
    names = set(symbols) | set(bars["symbol"].unique().to_list())
    prev = (
        pl.DataFrame(schema={"symbol": pl.String, "prev_close": PRICE})
        if prev_close is None
        else prev_close.select(pl.col("symbol").cast(pl.String), pl.col("close").cast(PRICE).alias("prev_close"))
    )
    if prev["symbol"].is_duplicated().any():
        raise ValueError("prev_close has more than one close for a symbol")
    grid = window_grid(names, start_ms, end_ms, period_ms)
    filled_close = (
        pl.col("close").forward_fill().over("symbol", order_by="open_time").fill_null(pl.col("prev_close"))
    ).alias("fill")
    out = (
        grid.join(bars, on=["symbol", "open_time"], how="left")
        .join(prev, on="symbol", how="left")
        .sort("symbol", "open_time")
        .with_columns(filled_close, pl.col("close").is_null().alias("gap"))
        .filter(pl.col("fill").is_not_null())
    )
    fill = pl.col("fill")
    gap = pl.col("gap")
    out = out.with_columns(
        *[pl.when(gap).then(fill).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")],
        *[pl.col(c).fill_null(0) for c in BAR_SUM_COLUMNS],
        pl.col("vwap").fill_null(float("nan")),
        pl.when(gap).then(pl.lit(NO_TRADE)).otherwise(pl.col("span_status")).alias("span_status"),
        *window_columns(period_ms),
    )
    return out.select(_cast_bar_columns())
