"""pandera.polars models of bars and tran_stats: the contract readers (factors, the pipeline) rely on.

Besides types, they check the invariants the maths guarantees, so corrupted or hand-edited files are caught on read:
non-negative volumes, low ≤ open/close ≤ high, buy + sell = total, tiers sum to totals, time_label consistent with
open_time and the period, unique (symbol, open_time).

Two trade counts, on purpose. Binance publishes aggTrades: one record per taker order's fills at one price, covering
the underlying trades first_trade_id..last_trade_id (f..l).
- `trade_count` (bars and tran_stats) counts aggTrade records. tran_stats splits it by size tier, which is a property
  of the aggTrade, so its tiers sum to the total exactly.
- `tradecount`, `buytradecount`, `selltradecount` (bars only) count underlying trades Σ(l−f+1), like the `count`
  field of Binance's klines, so a bar can be compared with the exchange's kline.
`span_status` says whether a window traded: "Traded", or "NoTrade" (no trade: open=high=low=close carry the last
close, volumes and counts are 0). Files written before this value existed hold "" for a traded window; readers
test `== "NoTrade"`, so both read the same.
"""

from __future__ import annotations

from typing import Annotated, Any

import pandera.polars as pa
import polars as pl
from pandera.engines import polars_engine as pe
from pandera.errors import SchemaError, SchemaErrors

from lsq.aggregation.bars import NO_TRADE, TRADED
from lsq.aggregation.tran_stats import SIDES, TIERS
from lsq.timelabels import DAY_MS

Price = Annotated[pe.Decimal, 38, 8]
Qty = Annotated[pe.Decimal, 38, 8]
Notional = Annotated[pe.Decimal, 38, 16]


class AggregationSchemaError(ValueError):
    """A bars or tran_stats frame breaks its schema; the message lists every failed check."""


def _period() -> pl.Expr:
    return pl.col("close_time") - pl.col("open_time") + 1


def _window_checks(data: pa.PolarsData) -> pl.LazyFrame:
    """Period tiles the day, open_time on its grid, time_label = 1-based index of the period in the UTC day."""
    p = _period()
    return data.lazyframe.select(
        (p > 0)
        & (DAY_MS % p == 0)
        & (pl.col("open_time") % p == 0)
        & (pl.col("time_label") == (pl.col("open_time") % DAY_MS) // p + 1)
    )


def _unique_keys(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(~pl.struct("symbol", "open_time").is_duplicated())


class _Keys(pa.DataFrameModel):
    symbol: pl.String = pa.Field(str_length={"min_value": 1})
    open_time: pl.Int64 = pa.Field(ge=0)
    close_time: pl.Int64
    time_label: pl.Int32 = pa.Field(ge=1, le=288)

    @pa.dataframe_check(error="time_label must be the 1-based period index in the UTC day of open_time")
    @classmethod
    def window(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return _window_checks(data)

    @pa.dataframe_check(error="(symbol, open_time) must be unique")
    @classmethod
    def unique_keys(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return _unique_keys(data)

    class Config:
        strict = True
        coerce = False


class BarSchema(_Keys):
    open: Price = pa.Field(gt=0)
    high: Price = pa.Field(gt=0)
    low: Price = pa.Field(gt=0)
    close: Price = pa.Field(gt=0)
    volume: Qty = pa.Field(ge=0)
    quote_volume: Notional = pa.Field(ge=0, description="Σ price x quantity, exact (Binance's name; = dolvol)")
    dolvol: Notional = pa.Field(ge=0, description="Σ price x quantity, exact (the original system's name)")
    # pandera counts NaN as null; vwap_nan checks it
    vwap: pl.Float64 = pa.Field(nullable=True, description="dolvol / volume; NaN for a window without volume")
    buyvolume: Qty = pa.Field(ge=0)
    buydolvol: Notional = pa.Field(ge=0)
    sellvolume: Qty = pa.Field(ge=0)
    selldolvol: Notional = pa.Field(ge=0)
    trade_count: pl.Int64 = pa.Field(ge=0, description="number of aggTrade records")
    tradecount: pl.Int64 = pa.Field(ge=0, description="number of underlying trades Σ(l−f+1), as Binance kline count")
    buytradecount: pl.Int64 = pa.Field(ge=0, description="underlying trades of taker buys (is_buyer_maker false)")
    selltradecount: pl.Int64 = pa.Field(ge=0, description="underlying trades of taker sells (is_buyer_maker true)")
    span_status: pl.String = pa.Field(
        isin=[TRADED, NO_TRADE, ""], description='"Traded" or "NoTrade"; "" in files from before "Traded" existed'
    )

    @pa.dataframe_check(error="low <= open, close <= high")
    @classmethod
    def price_range(cls, data: pa.PolarsData) -> pl.LazyFrame:
        low, high = pl.col("low"), pl.col("high")
        return data.lazyframe.select(
            (low <= pl.col("open")) & (pl.col("open") <= high) & (low <= pl.col("close")) & (pl.col("close") <= high)
        )

    @pa.dataframe_check(error="buy + sell must equal the total (volume, dolvol, tradecount)")
    @classmethod
    def sides_add_up(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("buyvolume") + pl.col("sellvolume") == pl.col("volume"))
            & (pl.col("buydolvol") + pl.col("selldolvol") == pl.col("dolvol"))
            & (pl.col("buytradecount") + pl.col("selltradecount") == pl.col("tradecount"))
        )

    @pa.dataframe_check(error="quote_volume must equal dolvol")
    @classmethod
    def quote_volume_is_dolvol(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("quote_volume") == pl.col("dolvol"))

    @pa.dataframe_check(error="a NoTrade bar has no volume and no trades; a traded bar has both")
    @classmethod
    def no_trade_consistent(cls, data: pa.PolarsData) -> pl.LazyFrame:
        no_trade = pl.col("span_status") == NO_TRADE
        empty = (pl.col("trade_count") == 0) & (pl.col("tradecount") == 0) & (pl.col("volume") == 0)
        flat = (
            (pl.col("open") == pl.col("close")) & (pl.col("high") == pl.col("low")) & (pl.col("open") == pl.col("high"))
        )
        return data.lazyframe.select(
            pl.when(no_trade).then(empty & flat).otherwise((pl.col("trade_count") > 0) & (pl.col("tradecount") > 0))
        )

    @pa.dataframe_check(error="vwap must be a number, NaN exactly when volume is 0")
    @classmethod
    def vwap_nan(cls, data: pa.PolarsData) -> pl.LazyFrame:
        vwap = pl.col("vwap")
        return data.lazyframe.select(vwap.is_not_null() & (vwap.is_nan() == (pl.col("volume") == 0)))


class TranStatsSchema(_Keys):
    volume: Qty = pa.Field(ge=0)
    dolvol: Notional = pa.Field(ge=0)
    trade_count: pl.Int64 = pa.Field(
        ge=0, description="number of aggTrade records (not Σ(l−f+1): tiers are per aggTrade)"
    )
    buy_volume: Qty = pa.Field(ge=0)
    sell_volume: Qty = pa.Field(ge=0)
    buy_dolvol: Notional = pa.Field(ge=0)
    sell_dolvol: Notional = pa.Field(ge=0)
    buy_trade_count: pl.Int64 = pa.Field(ge=0)
    sell_trade_count: pl.Int64 = pa.Field(ge=0)
    buy_volume1: Qty = pa.Field(ge=0)
    buy_volume2: Qty = pa.Field(ge=0)
    buy_volume3: Qty = pa.Field(ge=0)
    buy_volume4: Qty = pa.Field(ge=0)
    sell_volume1: Qty = pa.Field(ge=0)
    sell_volume2: Qty = pa.Field(ge=0)
    sell_volume3: Qty = pa.Field(ge=0)
    sell_volume4: Qty = pa.Field(ge=0)
    buy_dolvol1: Notional = pa.Field(ge=0)
    buy_dolvol2: Notional = pa.Field(ge=0)
    buy_dolvol3: Notional = pa.Field(ge=0)
    buy_dolvol4: Notional = pa.Field(ge=0)
    sell_dolvol1: Notional = pa.Field(ge=0)
    sell_dolvol2: Notional = pa.Field(ge=0)
    sell_dolvol3: Notional = pa.Field(ge=0)
    sell_dolvol4: Notional = pa.Field(ge=0)
    buy_trade_count1: pl.Int64 = pa.Field(ge=0)
    buy_trade_count2: pl.Int64 = pa.Field(ge=0)
    buy_trade_count3: pl.Int64 = pa.Field(ge=0)
    buy_trade_count4: pl.Int64 = pa.Field(ge=0)
    sell_trade_count1: pl.Int64 = pa.Field(ge=0)
    sell_trade_count2: pl.Int64 = pa.Field(ge=0)
    sell_trade_count3: pl.Int64 = pa.Field(ge=0)
    sell_trade_count4: pl.Int64 = pa.Field(ge=0)

    @pa.dataframe_check(error="buy + sell must equal the total, and tiers 1..4 must sum to each side's total")
    @classmethod
    def parts_add_up(cls, data: pa.PolarsData) -> pl.LazyFrame:
        ok = pl.lit(True)
        for metric in ("volume", "dolvol", "trade_count"):
            ok = ok & (pl.col(f"buy_{metric}") + pl.col(f"sell_{metric}") == pl.col(metric))
            for side in SIDES:
                tiers = pl.sum_horizontal(pl.col(f"{side}_{metric}{t}") for t in TIERS)
                ok = ok & (tiers == pl.col(f"{side}_{metric}"))
        return data.lazyframe.select(ok)


def _validate(model: type[pa.DataFrameModel], df: pl.DataFrame, what: str) -> pl.DataFrame:
    try:
        return model.validate(df, lazy=True)
    except SchemaErrors as exc:
        problems = sorted({str(e.get("error") or e.get("check")) for e in _flatten(exc.message)})
        raise AggregationSchemaError(f"invalid {what} ({len(problems)} problems): " + "; ".join(problems)) from None
    except SchemaError as exc:
        raise AggregationSchemaError(f"invalid {what}: {exc}") from None


def _flatten(message: object) -> list[dict[str, Any]]:
    if isinstance(message, dict):
        return [e for v in message.values() for e in _flatten(v)]
    if isinstance(message, list):
        return [e for e in message if isinstance(e, dict)]
    return []


def validate_bars(df: pl.DataFrame) -> pl.DataFrame:
    """Return `df` if it is a valid bars frame, else raise AggregationSchemaError naming every failed check."""
    return _validate(BarSchema, df, "bars")


def validate_tran_stats(df: pl.DataFrame) -> pl.DataFrame:
    """Return `df` if it is a valid tran_stats frame, else raise AggregationSchemaError naming every failed check."""
    return _validate(TranStatsSchema, df, "tran_stats")
