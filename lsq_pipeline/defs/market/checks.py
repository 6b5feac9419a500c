"""Asset checks on every 5-minute bar partition (or partition range).

Each rule is a small pure function over the stored bars returning the offending rows, so a failing check says
exactly which symbols and windows are wrong. Coverage is checked against the traded universe
(`strategy.universe_version`): that is the universe whose bars feed alphas and orders. The parity check against the
exchange's own 5-minute klines is blocking: a window whose bars disagree with Binance does not flow into alphas and
orders. The checks are `check_specs` of the bars step itself (lsq_pipeline.defs.market.assets): the bars are stored
and their materialisation recorded first, then the checks run (side by side, in threads: they only read) and each
records its own result, so a window costs one step instead of eight. A check that raises is a failed result (ERROR)
saying why, not a failed step: only the blocking one stops the window. When the exchange cannot be asked (an
outage), the parity check retries briefly and then records "could not
verify" as a warning with the reason: an outage must not cost trading windows; only a real mismatch blocks.

A range run (a backfill, a catch-up) checks the whole range at once, and Dagster records one result without a
partition while every window's planned evaluation would read "Skipped". So each check also records a result per
window: for every window of a range up to PER_WINDOW_RANGE windows (two days), and for longer ranges (each result
is an event, ~50 ms on sqlite under load) the failing windows (up to MAX_WINDOW_RESULTS) and the newest window,
with the range's summary saying what was checked.
"""

import random
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl

from lsq.aggregation.windows import day_chunks, previous_closes
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.paths import DataPaths
from lsq.schema import PRICE
from lsq.stores.panels import load_panel
from lsq.stores.universes import traded_version, universe_symbols
from lsq.timelabels import WINDOW_MS, WINDOWS_PER_DAY, parse_partition_key, partition_key
from lsq.tradestore import TradeStore
from lsq_pipeline.defs.market.exchange_data import kline_pages
from lsq_pipeline.defs.market.keys import BARS_5M, time_range
from lsq_pipeline.resources import LsqResource

PARITY_SAMPLE = 5
PARITY_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "tradecount", "buyvolume", "buydolvol")
MAX_LISTED = 20
# Two days: `make run`'s recent backfill (yesterday and today so far) and any catch-up get a result for every window,
# so a fresh start's UI shows real results; only long history backfills (weeks, ~3,000 events a day) record less.
PER_WINDOW_RANGE = 2 * WINDOWS_PER_DAY
MAX_WINDOW_RESULTS = 50
# Seconds between attempts at the exchange's klines before the parity check gives up and says it could not verify.
PARITY_RETRY_DELAYS = (1.0, 2.0)


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


GAP_SCHEMA = pl.Schema(
    {"symbol": pl.String(), "first_missing": pl.Int64(), "last_missing": pl.Int64(), "open_time": pl.Int64()}
)


def id_gaps_by_window(trades: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """Missing agg_trade_id ranges (inclusive) between consecutive stored trades, each with the `open_time` of the
    window of the trade after the gap (where the missing ids would have been seen)."""
    ordered = trades.select("agg_trade_id", "transact_time").sort("agg_trade_id")
    return (
        ordered.with_columns(prev=pl.col("agg_trade_id").shift(1))
        .filter(pl.col("agg_trade_id") - pl.col("prev") > 1)
        .select(
            pl.lit(symbol).alias("symbol"),
            (pl.col("prev") + 1).alias("first_missing"),
            (pl.col("agg_trade_id") - 1).alias("last_missing"),
            (pl.col("transact_time") - pl.col("transact_time") % WINDOW_MS).alias("open_time"),
        )
        .cast(GAP_SCHEMA)
    )


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


def windows_to_record(keys: Sequence[str], failing: Iterable[str]) -> list[str]:
    """The windows of a range run that get their own result (see the module docstring)."""
    if len(keys) <= PER_WINDOW_RANGE:
        return list(keys)
    return sorted({*sorted(set(failing))[:MAX_WINDOW_RESULTS], keys[-1]})


@dataclass(frozen=True)
class CheckScope:
    """What a check looks at: [start, end) and, in a range run, the range's window keys (None for one window)."""

    lsq: LsqResource
    start_ms: int
    end_ms: int
    range_keys: Sequence[str] | None


@dataclass(frozen=True)
class CheckOutcome:
    """A check's result, the per-window results of a range run (by partition key), and a line for the run's log."""

    result: dg.AssetCheckResult
    windows: dict[str, dg.AssetCheckResult] = field(default_factory=dict)
    warning: str | None = None


def _report(scope: CheckScope, offenders: pl.DataFrame, what: str, **extra: Any) -> CheckOutcome:
    """The check's result; in a range run also one result per recorded window (offenders by their `open_time`)."""
    keys = scope.range_keys
    if keys is None:
        return CheckOutcome(_result(offenders, what, **extra))
    starts = offenders["open_time"] - offenders["open_time"] % WINDOW_MS
    failing = {partition_key(int(t)) for t in starts.unique().to_list()}
    recorded = windows_to_record(keys, failing)
    windows = {key: _result(offenders.filter(starts == parse_partition_key(key)), what, **extra) for key in recorded}
    summary = _result(offenders, what, **extra)
    span = (
        f"range {keys[0]}...{keys[-1]} ({len(keys)} windows) checked as one: "
        f"{len(failing)} windows failing; results recorded for {len(recorded)} windows"
        + ("" if len(recorded) == len(keys) else " (the failing ones and the newest)")
    )
    result = dg.AssetCheckResult(
        passed=summary.passed,
        severity=summary.severity,
        description=f"{span}. {summary.description}" if summary.description else span,
        metadata={**summary.metadata, "windows": len(keys), "failing_windows": len(failing)},
    )
    return CheckOutcome(result, windows)


def _markdown(frame: pl.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows())


def _stored_bars(paths: DataPaths, start_ms: int, end_ms: int) -> pl.DataFrame:
    bars = load_panel("bars", start_ms, end_ms, paths=paths)
    if bars.width == 0:
        raise ValueError(f"no stored 5-minute bars for [{start_ms}, {end_ms}): materialise bars_5m first")
    return bars


BarCheck = Callable[[CheckScope], CheckOutcome]
_BAR_CHECKS: list[tuple[BarCheck, dict[str, Any]]] = []


def _bar_check(**options: Any) -> Callable[[BarCheck], BarCheck]:
    """Register a check of bars_5m, named after the function; `bar_check_specs` declares them on the bars step."""

    def register(fn: BarCheck) -> BarCheck:
        _BAR_CHECKS.append((fn, options))
        return fn

    return register


@_bar_check(description="Each universe symbol exactly once per window (never-traded symbols exempt).")
def bars_universe_coverage(scope: CheckScope) -> CheckOutcome:
    lsq, start_ms, end_ms = scope.lsq, scope.start_ms, scope.end_ms
    bars = _stored_bars(lsq.paths, start_ms, end_ms)
    store = TradeStore(lsq.paths)
    found = [duplicate_rows(bars).with_columns(pl.lit("duplicate").alias("problem"))]
    universe: list[str] = []
    for lo, hi in day_chunks(start_ms, end_ms):  # each day against its own universe
        universe = universe_symbols(lsq.paths, lo, traded_version(lsq.settings))
        never = [s for s in universe if not [h for h in store.hours(s) if h < hi]]
        day_bars = bars.filter(pl.col("open_time").is_between(lo, hi, closed="left"))
        missing = missing_universe_rows(day_bars, universe, lo, hi, never)
        found.append(missing.with_columns(pl.lit("missing").alias("problem")))
    offenders = pl.concat(found)
    return _report(scope, offenders, "duplicate or missing (symbol, window) rows", universe_symbols=len(universe))


def _bars_of(scope: CheckScope) -> pl.DataFrame:
    return _stored_bars(scope.lsq.paths, scope.start_ms, scope.end_ms)


@_bar_check(description="Prices positive; high ≥ max(open, close); low ≤ min(open, close).")
def bars_ohlc_sane(scope: CheckScope) -> CheckOutcome:
    return _report(scope, insane_ohlc(_bars_of(scope)), "bars with inconsistent OHLC")


@_bar_check(description="Volumes, notionals and trade counts are non-negative.")
def bars_volumes_non_negative(scope: CheckScope) -> CheckOutcome:
    return _report(scope, negative_volumes(_bars_of(scope)), "bars with negative volumes")


@_bar_check(description="Taker buy + taker sell = total, for volume, notional and trade count.")
def bars_buy_sell_sum(scope: CheckScope) -> CheckOutcome:
    return _report(scope, side_mismatches(_bars_of(scope)), "bars where buy + sell != total")


@_bar_check(description="Windows without trades are flat at the previous close with zero volume.")
def bars_no_trade_fill(scope: CheckScope) -> CheckOutcome:
    bars = _bars_of(scope)
    # the previous close as the bars themselves look it up (a day back, then the trade store), not just one window
    paths = scope.lsq.paths
    prev = previous_closes(paths, TradeStore(paths), bars["symbol"].unique().to_list(), scope.start_ms)
    return _report(scope, bad_no_trade_fills(bars, prev), "no-trade bars not carrying the previous close")


@_bar_check(description="aggTrade ids in the trade store are contiguous over the window, per symbol.")
def trades_contiguous(scope: CheckScope) -> CheckOutcome:
    store = TradeStore(scope.lsq.paths)
    gaps = pl.concat(
        [
            pl.DataFrame(schema=GAP_SCHEMA),
            *(
                id_gaps_by_window(
                    store.scan(s, scope.start_ms, scope.end_ms).select("agg_trade_id", "transact_time").collect(), s
                )
                for s in store.symbols()
            ),
        ]
    )
    return _report(scope, gaps, "gaps in aggTrade ids")


@_bar_check(
    blocking=True,
    description=f"Stored bars equal the exchange's own 5-minute klines for a sample of {PARITY_SAMPLE} symbols.",
)
def bars_match_exchange_klines(scope: CheckScope) -> CheckOutcome:
    bars = _bars_of(scope)
    sample = sample_symbols(bars["symbol"].unique().to_list(), seed=scope.start_ms)
    try:
        klines = exchange_klines(scope.lsq, sample, scope.start_ms, scope.end_ms)
    except Exception as exc:  # any failure to ask is an outage, not a mismatch
        reason = f"could not verify: the exchange's klines were unavailable ({type(exc).__name__}: {exc})"
        unverified = dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=reason,
            metadata={"verified": False, "reason": reason, "sampled": ", ".join(sample)},
        )
        # in a range run recorded for the newest window too (nothing was compared)
        newest = {} if scope.range_keys is None else {scope.range_keys[-1]: unverified}
        return CheckOutcome(unverified, newest, warning=f"bars_match_exchange_klines {reason}")
    mismatches = parity_mismatches(bars.filter(pl.col("symbol").is_in(sample)), klines)
    return _report(scope, mismatches, "bars differing from exchange klines", sampled=", ".join(sample))


def exchange_klines(
    lsq: LsqResource, symbols: Sequence[str], start_ms: int, end_ms: int, clock: Clock = SYSTEM_CLOCK
) -> pl.DataFrame:
    """The exchange's 5-minute klines of `symbols` over [start, end), retried after PARITY_RETRY_DELAYS; the last
    attempt's error propagates."""
    for delay in PARITY_RETRY_DELAYS:
        try:
            return _klines(lsq.rest(), symbols, start_ms, end_ms)
        except Exception:
            clock.sleep(delay)
    return _klines(lsq.rest(), symbols, start_ms, end_ms)


def _klines(client: Any, symbols: Sequence[str], start_ms: int, end_ms: int) -> pl.DataFrame:
    frames = [
        kline_frame(s, client.futures_klines(symbol=s, interval="5m", startTime=lo, endTime=hi, limit=limit))
        for s in symbols
        for lo, hi, limit in kline_pages(start_ms, end_ms)
    ]
    return pl.concat(frames or [kline_frame("", [])]).filter(
        pl.col("open_time").is_between(start_ms, end_ms, closed="left")
    )


def _outcome(check: BarCheck, scope: CheckScope) -> CheckOutcome:
    """The check's outcome; one that raised is a failed result (ERROR) carrying the error, not a failed step."""
    try:
        return check(scope)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        failed = dg.AssetCheckResult(
            passed=False,
            description=f"the check could not run: {error}",
            metadata={"error": error, "traceback": dg.MetadataValue.md(f"```\n{traceback.format_exc()}\n```")},
        )
        return CheckOutcome(failed, warning=f"{check.__name__} could not run: {error}")


def bar_check_specs(five_minute: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """The checks of bars_5m, declared on the bars step over `five_minute` (the partitions of the asset they check):
    on the window's partitions, so a result lands on the window Dagster planned it for."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitions_def on a check spec
        return [
            dg.AssetCheckSpec(fn.__name__, asset=BARS_5M, partitions_def=five_minute, **options)
            for fn, options in _BAR_CHECKS
        ]


def bar_check_results(context: dg.AssetExecutionContext, lsq: LsqResource) -> Iterator[dg.AssetCheckResult]:
    """Run the selected bar checks on the stored bars of the run's window (or range) and yield their results, each
    after its per-window results of a range run (recorded as AssetCheckEvaluations of the windows)."""
    selected = [
        (fn, o) for fn, o in _BAR_CHECKS if dg.AssetCheckKey(BARS_5M, fn.__name__) in context.selected_asset_check_keys
    ]
    if not selected:
        return
    lsq.settings  # noqa: B018  # loaded here, once, not by the threads at the same time
    keys = None if context.has_partition_key else list(context.partition_keys)
    scope = CheckScope(lsq, *time_range(context), keys)
    # side by side for a live window; one at a time over a range, where each check reads days of bars and trades
    # (a 30-day backfill's peak memory)
    workers = len(selected) if keys is None else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bar-check") as pool:
        futures = [(fn.__name__, bool(o.get("blocking")), pool.submit(_outcome, fn, scope)) for fn, o in selected]
        for name, blocking, future in futures:
            outcome = future.result()
            if outcome.warning:
                context.log.warning(outcome.warning)
            for key, window in outcome.windows.items():
                context.log_event(
                    dg.AssetCheckEvaluation(
                        asset_key=BARS_5M,
                        check_name=name,
                        passed=window.passed,
                        metadata={**window.metadata, "checked_as_range": f"{keys[0]}...{keys[-1]}" if keys else ""},
                        severity=window.severity,
                        description=window.description,
                        blocking=blocking,
                        partition=key,
                    )
                )
            yield outcome.result._replace(asset_key=BARS_5M, check_name=name)
