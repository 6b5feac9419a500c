"""Asset checks on every 5-minute bar partition (or partition range).

Each rule is a small pure function over the stored bars returning the offending rows, so a failing check says
exactly which symbols and windows are wrong. Coverage is checked against the traded universe (TRADED_VERSION): that
is the universe whose bars feed alphas and orders. The parity check against the exchange's own 5-minute klines is
blocking: a window whose bars disagree with Binance does not flow into alphas and orders.
"""

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dagster as dg
import polars as pl

from lsq.aggregation.windows import day_chunks, previous_closes
from lsq.paths import DataPaths
from lsq.schema import PRICE
from lsq.stores.panels import load_panel
from lsq.stores.universes import TRADED_VERSION, universe_symbols
from lsq.timelabels import WINDOW_MS
from lsq.tradestore import TradeStore
from lsq_pipeline.defs.market.assets import BARS_5M, time_range
from lsq_pipeline.defs.market.exchange_data import kline_pages
from lsq_pipeline.resources import LsqResource

PARITY_SAMPLE = 5
PARITY_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "tradecount", "buyvolume", "buydolvol")
MAX_LISTED = 20


def duplicate_rows(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.filter(pl.struct("symbol", "open_time").is_duplicated()).select("symbol", "open_time")


def missing_universe_rows(
    bars: pl.DataFrame, universe: Iterable[str], start_ms: int, end_ms: int, never_traded: Iterable[str] = ()
) -> pl.DataFrame:
    """(symbol, open_time) of universe symbols without a bar; symbols that never traded are exempt (no close yet)."""
    expected = sorted(set(universe) - set(never_traded))
    grid = pl.DataFrame({"symbol": expected}, schema={"symbol": pl.String}).join(
        pl.DataFrame({"open_time": pl.int_range(start_ms, end_ms, WINDOW_MS, dtype=pl.Int64, eager=True)}), how="cross"
    )
    return grid.join(bars.select("symbol", "open_time"), on=["symbol", "open_time"], how="anti")


def insane_ohlc(bars: pl.DataFrame) -> pl.DataFrame:
    """Rows with a null or non-positive price, or high/low not bounding open and close."""
    o, h, lo, c = (pl.col(x) for x in ("open", "high", "low", "close"))
    bad = pl.any_horizontal(o.is_null(), h.is_null(), lo.is_null(), c.is_null()) | (
        (lo <= 0) | (h < pl.max_horizontal(o, c)) | (lo > pl.min_horizontal(o, c)) | (h < lo)
    )
    return bars.filter(bad).select("symbol", "open_time", "open", "high", "low", "close")


VOLUME_COLUMNS = ("volume", "quote_volume", "buyvolume", "sellvolume", "buydolvol", "selldolvol", "tradecount")


def negative_volumes(bars: pl.DataFrame) -> pl.DataFrame:
    bad = pl.any_horizontal([(pl.col(c) < 0) | pl.col(c).is_null() for c in VOLUME_COLUMNS])
    return bars.filter(bad).select("symbol", "open_time", *VOLUME_COLUMNS)


def side_mismatches(bars: pl.DataFrame) -> pl.DataFrame:
    """Rows where taker buy + taker sell differs from the total (volume, notional or trade count)."""
    bad = (
        (pl.col("buyvolume") + pl.col("sellvolume") != pl.col("volume"))
        | (pl.col("buydolvol") + pl.col("selldolvol") != pl.col("dolvol"))
        | (pl.col("buytradecount") + pl.col("selltradecount") != pl.col("tradecount"))
    )
    return bars.filter(bad).select("symbol", "open_time", "volume", "buyvolume", "sellvolume")


def bad_no_trade_fills(bars: pl.DataFrame, prev_close: pl.DataFrame) -> pl.DataFrame:
    """No-trade bars that are not flat at the previous close with zero volume.

    `prev_close` (symbol, close) gives the close before the first window of `bars`.
    """
    prev = prev_close.select("symbol", pl.col("close").cast(PRICE).alias("before"))
    checked = (
        bars.sort("symbol", "open_time")
        .join(prev, on="symbol", how="left")
        .with_columns(
            pl.col("close").shift(1).over("symbol", order_by="open_time").fill_null(pl.col("before")).alias("prev")
        )
        .filter(pl.col("span_status") == "NoTrade")
    )
    bad = (
        pl.any_horizontal([pl.col(c) != pl.col("prev") for c in ("open", "high", "low", "close")])
        | pl.col("prev").is_null()
        | (pl.col("volume") != 0)
        | (pl.col("tradecount") != 0)
    )
    return checked.filter(bad).select("symbol", "open_time", "close", "prev")


def kline_frame(symbol: str, rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Exchange kline rows -> a frame with the bar columns they correspond to (exact decimals)."""
    dec = pl.Decimal(38, 16)
    data = {
        "symbol": [symbol] * len(rows),
        "open_time": [int(r[0]) for r in rows],
        "open": [str(r[1]) for r in rows],
        "high": [str(r[2]) for r in rows],
        "low": [str(r[3]) for r in rows],
        "close": [str(r[4]) for r in rows],
        "volume": [str(r[5]) for r in rows],
        "quote_volume": [str(r[7]) for r in rows],
        "tradecount": [int(r[8]) for r in rows],
        "buyvolume": [str(r[9]) for r in rows],
        "buydolvol": [str(r[10]) for r in rows],
    }
    return pl.DataFrame(data).with_columns(pl.col(c).cast(dec) for c in PARITY_FIELDS if c != "tradecount")


def parity_mismatches(bars: pl.DataFrame, klines: pl.DataFrame) -> pl.DataFrame:
    """Rows where stored bars and exchange klines differ; a window missing on either side counts when it traded."""
    dec = pl.Decimal(38, 16)
    ours = bars.select(
        "symbol", "open_time", *[pl.col(c).cast(dec if c != "tradecount" else pl.Int64) for c in PARITY_FIELDS]
    )
    joined = ours.join(klines, on=["symbol", "open_time"], how="full", suffix="_x", coalesce=True)
    traded = (pl.col("tradecount").fill_null(0) > 0) | (pl.col("tradecount_x").fill_null(0) > 0)
    differs = pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_x")) for c in PARITY_FIELDS])
    return joined.filter(traded & differs)


def sample_symbols(symbols: Iterable[str], seed: int, k: int = PARITY_SAMPLE) -> list[str]:
    """A reproducible sample per window, different across windows, so every symbol is compared over time."""
    pool = sorted(set(symbols))
    return sorted(random.Random(seed).sample(pool, min(k, len(pool))))


def _result(offenders: pl.DataFrame, what: str, **extra: Any) -> dg.AssetCheckResult:
    listed = offenders.head(MAX_LISTED)
    return dg.AssetCheckResult(
        passed=offenders.height == 0,
        description=f"{offenders.height} {what}" if offenders.height else None,
        metadata={
            "offending_rows": offenders.height,
            **({"examples": dg.MetadataValue.md(_markdown(listed))} if offenders.height else {}),
            **extra,
        },
    )


def _markdown(frame: pl.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows())


def _stored_bars(paths: DataPaths, start_ms: int, end_ms: int) -> pl.DataFrame:
    bars = load_panel("bars", start_ms, end_ms, paths=paths)
    if bars.width == 0:
        raise ValueError(f"no stored 5-minute bars for [{start_ms}, {end_ms}): materialise bars_5m first")
    return bars


_BAR_CHECKS: list[tuple[Callable[..., dg.AssetCheckResult], dict[str, Any]]] = []


def _bar_check(**options: Any) -> Callable[[Callable[..., dg.AssetCheckResult]], Callable[..., dg.AssetCheckResult]]:
    """Register a check of bars_5m; `bar_checks` turns each into an asset check on the code location's partitions."""

    def register(fn: Callable[..., dg.AssetCheckResult]) -> Callable[..., dg.AssetCheckResult]:
        _BAR_CHECKS.append((fn, options))
        return fn

    return register


@_bar_check(description="Each universe symbol exactly once per window (never-traded symbols exempt).")
def bars_universe_coverage(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
    start_ms, end_ms = time_range(context)
    bars = _stored_bars(lsq.paths, start_ms, end_ms)
    store = TradeStore(lsq.paths)
    found = [duplicate_rows(bars).with_columns(pl.lit("duplicate").alias("problem"))]
    universe: list[str] = []
    for lo, hi in day_chunks(start_ms, end_ms):  # each day against its own universe
        universe = universe_symbols(lsq.paths, lo, TRADED_VERSION)
        never = [s for s in universe if not [h for h in store.hours(s) if h < hi]]
        day_bars = bars.filter(pl.col("open_time").is_between(lo, hi, closed="left"))
        missing = missing_universe_rows(day_bars, universe, lo, hi, never)
        found.append(missing.with_columns(pl.lit("missing").alias("problem")))
    offenders = pl.concat(found)
    return _result(offenders, "duplicate or missing (symbol, window) rows", universe_symbols=len(universe))


@_bar_check(description="Prices positive; high ≥ max(open, close); low ≤ min(open, close).")
def bars_ohlc_sane(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
    return _result(insane_ohlc(_stored_bars(lsq.paths, *time_range(context))), "bars with inconsistent OHLC")


@_bar_check(description="Volumes, notionals and trade counts are non-negative.")
def bars_volumes_non_negative(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
    return _result(negative_volumes(_stored_bars(lsq.paths, *time_range(context))), "bars with negative volumes")


@_bar_check(description="Taker buy + taker sell = total, for volume, notional and trade count.")
def bars_buy_sell_sum(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
    return _result(side_mismatches(_stored_bars(lsq.paths, *time_range(context))), "bars where buy + sell != total")


@_bar_check(description="Windows without trades are flat at the previous close with zero volume.")
def bars_no_trade_fill(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
    start_ms, end_ms = time_range(context)
    bars = _stored_bars(lsq.paths, start_ms, end_ms)
    # the previous close as the bars themselves look it up (a day back, then the trade store), not just one window
    prev = previous_closes(lsq.paths, TradeStore(lsq.paths), bars["symbol"].unique().to_list(), start_ms)
    return _result(bad_no_trade_fills(bars, prev), "no-trade bars not carrying the previous close")


@_bar_check(description="aggTrade ids in the trade store are contiguous over the window, per symbol.")
def trades_contiguous(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
    start_ms, end_ms = time_range(context)
    store = TradeStore(lsq.paths)
    rows = [
        {"symbol": s, "first_missing": a, "last_missing": b}
        for s in store.symbols()
        for a, b in store.id_gaps(s, start_ms, end_ms)
    ]
    gaps = pl.DataFrame(rows, schema={"symbol": pl.String, "first_missing": pl.Int64, "last_missing": pl.Int64})
    return _result(gaps, "gaps in aggTrade ids")


@_bar_check(
    blocking=True,
    description=f"Stored bars equal the exchange's own 5-minute klines for a sample of {PARITY_SAMPLE} symbols.",
)
def bars_match_exchange_klines(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
    start_ms, end_ms = time_range(context)
    bars = _stored_bars(lsq.paths, start_ms, end_ms)
    sample = sample_symbols(bars["symbol"].unique().to_list(), seed=start_ms)
    client = lsq.rest()
    klines = pl.concat(
        [
            kline_frame(s, client.futures_klines(symbol=s, interval="5m", startTime=lo, endTime=hi, limit=limit))
            for s in sample
            for lo, hi, limit in kline_pages(start_ms, end_ms)
        ]
        or [kline_frame("", [])]
    ).filter(pl.col("open_time").is_between(start_ms, end_ms, closed="left"))
    mismatches = parity_mismatches(bars.filter(pl.col("symbol").is_in(sample)), klines)
    return _result(mismatches, "bars differing from exchange klines", sampled=", ".join(sample))


def bar_checks(five_minute: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The checks of bars_5m on `five_minute` (the partitions of the asset they check)."""
    return [dg.asset_check(asset=BARS_5M, partitions_def=five_minute, **options)(fn) for fn, options in _BAR_CHECKS]
