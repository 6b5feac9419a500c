"""Market-data assets on the 5-minute partitions, their rollups, and the exchange-only series.

`market_assets(partitions)` builds them over the code location's partitions; the maths and storage are the core's
(lsq.aggregation, lsq.stores), so each asset only reads its range, calls them and reports metadata.
"""

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
from tqdm import tqdm

from lsq.aggregation.bars import NO_TRADE
from lsq.aggregation.rollups import ROLLUP_PERIODS, rollup_bars, rollup_tran_stats
from lsq.aggregation.schemas import validate_bars, validate_tran_stats
from lsq.aggregation.windows import compute_window_stats, day_chunks
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.exchange import rest_client
from lsq.stores.panels import load_panel, write_panel
from lsq.stores.universes import universe_symbols
from lsq.timelabels import WINDOW_MS
from lsq.universes import universe_v1
from lsq_pipeline.defs.market.checks import bar_check_results, bar_check_specs
from lsq_pipeline.defs.market.exchange_data import fetch_funding, fetch_premium_index
from lsq_pipeline.defs.market.keys import (
    AGG_TRADES,
    BARS_5M,
    PREMIUM_INDEX_5M,
    TRAN_STATS_5M,
    WINDOW_GROUP,
    time_range,
)
from lsq_pipeline.defs.market.seal import await_seal
from lsq_pipeline.defs.universe.assets import UNIVERSE
from lsq_pipeline.partitions import Partitions
from lsq_pipeline.resources import LsqResource

if TYPE_CHECKING:
    from binance import Client

SINGLE_RUN = dg.BackfillPolicy.single_run()
# Days of a range validated and stored together: pandera runs each check as its own query (~0.1 s a validation of
# bars or tran_stats, whatever their rows), and a week of 40 symbols' bars is ~80 k rows
VALIDATED_DAYS = 7
# Eager, but looking back two days instead of only the latest period: hours and days that passed during an outage
# are rolled up too once the catch-up (or a backfill) stores their 5-minute windows. `lsq backfill` leaves the
# periods of this lookback to the automation and rolls up only older ones, so a fresh start (backfill and automation
# at once) does not roll the same days up twice.
ROLLUP_LOOKBACK = timedelta(days=2)
ROLLUP_AUTOMATION = dg.AutomationCondition.eager().replace(
    "in_latest_time_window", dg.AutomationCondition.in_latest_time_window(ROLLUP_LOOKBACK)
)
SAME_DAY_UNIVERSE = dg.AssetDep(UNIVERSE, partition_mapping=dg.TimeWindowPartitionMapping())


def exchange_symbols(lsq: LsqResource, day_ms: int, client: "Client") -> list[str]:
    """The v1 universe in force on the day, else (none stored yet) every USDT perpetual the exchange lists now."""
    return universe_symbols(lsq.paths, day_ms) or universe_v1(client.futures_exchange_info())["symbol"].to_list()


def fetch_by_universe(
    lsq: LsqResource,
    fetch: "Callable[[Client, list[str], int, int], pl.DataFrame]",
    start_ms: int,
    end_ms: int,
    client: "Client | None" = None,
) -> pl.DataFrame:
    """`fetch` with each day's own universe (a multi-day backfill must not use the first day's), one call per run of
    consecutive days whose universe is the same: a month is ~6 kline pages per symbol instead of 30 requests."""
    client = client or lsq.rest()
    spans: list[tuple[list[str], int, int]] = []
    for lo, hi in day_chunks(start_ms, end_ms):
        symbols = sorted(exchange_symbols(lsq, lo, client))
        if spans and spans[-1][0] == symbols:
            spans[-1] = (symbols, spans[-1][1], hi)
        else:
            spans.append((symbols, lo, hi))
    return pl.concat([fetch(client, symbols, lo, hi) for symbols, lo, hi in spans], how="vertical_relaxed")


def _premium_index(lsq: LsqResource, client: "Client", start_ms: int, end_ms: int) -> pl.DataFrame:
    frame = fetch_by_universe(lsq, fetch_premium_index, start_ms, end_ms, client)
    write_panel(lsq.paths, "premium_index", frame, start_ms, end_ms)
    return frame


def _last_closes(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.sort("open_time").group_by("symbol").agg(pl.col("close").last())


def _validated(days: list[tuple[pl.DataFrame, pl.DataFrame]]) -> dict[str, pl.DataFrame]:
    """Consecutive days' (bars, tran_stats), each kind validated as one frame (VALIDATED_DAYS)."""
    return {
        "bars": validate_bars(pl.concat([bars for bars, _ in days])),
        "tran_stats": validate_tran_stats(pl.concat([stats for _, stats in days])),
    }


def _panel_metadata(frame: pl.DataFrame, start_ms: int, end_ms: int) -> dict[str, dg.MetadataValue]:
    return {
        "rows": dg.MetadataValue.int(frame.height),
        "symbols": dg.MetadataValue.int(frame["symbol"].n_unique() if frame.height else 0),
        "windows": dg.MetadataValue.int((end_ms - start_ms) // WINDOW_MS),
    }


ROLLUP_FUNCTIONS = {"bars": rollup_bars, "tran_stats": rollup_tran_stats}
ROLLUP_VALIDATORS = {"bars": validate_bars, "tran_stats": validate_tran_stats}
SOURCE_KEYS = {"bars": BARS_5M, "tran_stats": TRAN_STATS_5M}


def rollup_asset(kind: str, period: str, partitions: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    """`{kind}_{period}` from the stored 5-minute panel, materialised as soon as all its 5-minute windows exist."""
    roll = ROLLUP_FUNCTIONS[kind]

    @dg.asset(
        name=f"{kind}_{period}",
        partitions_def=partitions,
        group_name="rollups",
        kinds={"polars", "parquet"},
        deps=[dg.AssetDep(SOURCE_KEYS[kind], partition_mapping=dg.TimeWindowPartitionMapping())],
        automation_condition=ROLLUP_AUTOMATION,
        backfill_policy=SINGLE_RUN,
        description=f"{period} {kind} rolled up from {SOURCE_KEYS[kind].path[0]} (lsq.aggregation.rollups).",
    )
    def _rollup(context: dg.AssetExecutionContext, lsq: LsqResource) -> dg.MaterializeResult:
        start_ms, end_ms = time_range(context)
        five = load_panel(kind, start_ms, end_ms, paths=lsq.paths)
        if five.width == 0:
            raise ValueError(f"no stored 5-minute {kind} in [{start_ms}, {end_ms}): materialise them first")
        frame = ROLLUP_VALIDATORS[kind](roll(five, period))
        write_panel(lsq.paths, kind, frame, start_ms, end_ms, period=period)
        return dg.MaterializeResult(metadata=_panel_metadata(frame, start_ms, end_ms))

    return _rollup


@dataclass(frozen=True)
class MarketAssets:
    """The market domain's assets over one set of partitions."""

    agg_trades: dg.AssetSpec
    # bars_5m, tran_stats_5m and premium_index_5m, with the bar checks: one step per window
    window_stats_5m: dg.AssetsDefinition
    funding_rates: dg.AssetsDefinition
    rollups: list[dg.AssetsDefinition]

    @property
    def window_assets(self) -> list[dg.AssetsDefinition]:
        """What the window job runs for every sealed window (besides the factor stage)."""
        return [self.window_stats_5m]

    @property
    def all(self) -> list[dg.AssetSpec | dg.AssetsDefinition]:
        return [self.agg_trades, self.window_stats_5m, *self.rollups, self.funding_rates]


def market_assets(partitions: Partitions, clock: Clock = SYSTEM_CLOCK) -> MarketAssets:
    """The market assets over `partitions`; `clock` says when a window has closed (lsq_pipeline.defs.market.seal)."""
    agg_trades = dg.AssetSpec(
        AGG_TRADES,
        partitions_def=partitions.five_minute,
        group_name="trades",
        kinds={"parquet"},
        description="aggTrades stored by the collector; a partition materialises when its window's marker is sealed.",
    )

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                BARS_5M,
                deps=[AGG_TRADES, SAME_DAY_UNIVERSE],
                kinds={"polars", "parquet"},
                description="5-minute OHLCV bars of every universe symbol and every symbol that traded; quiet windows "
                "carry the previous close. Pandera-validated; stored per UTC day (lsq.stores.panels).",
            ),
            dg.AssetSpec(
                TRAN_STATS_5M,
                deps=[AGG_TRADES, SAME_DAY_UNIVERSE],
                kinds={"polars", "parquet"},
                description="5-minute taker buy/sell volume, notional and counts by trade-size tier, same rows as "
                "bars_5m.",
            ),
            dg.AssetSpec(
                PREMIUM_INDEX_5M,
                deps=[SAME_DAY_UNIVERSE],
                kinds={"parquet"},
                description="5-minute premium-index klines of the day's universe, from the exchange.",
            ),
        ],
        name="market_5m",
        group_name=WINDOW_GROUP,
        partitions_def=partitions.five_minute,
        backfill_policy=SINGLE_RUN,
        check_specs=bar_check_specs(partitions.five_minute),
        # the checks alone re-check stored bars (Materialize > checks only in the UI); a panel alone is written alone
        can_subset=True,
    )
    def window_stats_5m(
        context: dg.AssetExecutionContext, lsq: LsqResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Bars and trade statistics from one read of the trades (each trade is read once per window), recorded
        before the checks of the stored bars run (lsq_pipeline.defs.market.checks); the premium index is fetched from
        the exchange meanwhile, on its own client, and recorded last. One step instead of three on the window's path:
        every step costs its events."""
        selected = {key.path[0].removesuffix("_5m") for key in context.selected_asset_keys}
        start_ms, end_ms = time_range(context)
        await_seal(lsq.paths, start_ms, end_ms, context.run.tags, clock, context.log)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="premium-index") as pool:
            client = rest_client(lsq.settings) if "premium_index" in selected else None
            premium = None if client is None else pool.submit(_premium_index, lsq, client, start_ms, end_ms)
            if selected - {"premium_index"}:
                yield from _window_stats(context, lsq, selected - {"premium_index"})
            yield from bar_check_results(context, lsq)
            if premium is not None:
                frame = premium.result()
                yield dg.MaterializeResult(
                    asset_key=PREMIUM_INDEX_5M, metadata=_panel_metadata(frame, start_ms, end_ms)
                )

    def _window_stats(
        context: dg.AssetExecutionContext, lsq: LsqResource, kinds: set[str]
    ) -> Iterator[dg.MaterializeResult]:
        start_ms, end_ms = time_range(context)
        thresholds = lsq.settings.data.tran_stats.thresholds_usd
        written: dict[str, list[pl.DataFrame]] = {"bars": [], "tran_stats": []}
        pending: list[tuple[pl.DataFrame, pl.DataFrame]] = []
        prev = None
        chunks = day_chunks(start_ms, end_ms)
        # a bar per day on a terminal (`lsq backfill`); none in a run's captured logs
        for n, (lo, hi) in enumerate(tqdm(chunks, unit="day", desc="bars_5m", file=sys.stderr, disable=None)):
            bars, stats = compute_window_stats(lsq.paths, lo, hi, thresholds, prev_close=prev)
            pending.append((bars, stats))
            closes = _last_closes(bars)
            prev = closes if prev is None else pl.concat([prev, closes]).unique("symbol", keep="last")
            if len(pending) == VALIDATED_DAYS or n == len(chunks) - 1:
                first = chunks[n + 1 - len(pending)][0]
                frames = _validated(pending)
                for kind in kinds:
                    write_panel(lsq.paths, kind, frames[kind], first, hi)
                written["bars"].append(frames["bars"].select("symbol", "span_status"))
                written["tran_stats"].append(frames["tran_stats"].select("symbol"))
                pending = []
        if "bars" in kinds:
            bars_meta = pl.concat(written["bars"])
            context.log.info(f"bars_5m: {bars_meta.height} rows for [{start_ms}, {end_ms})")
            yield dg.MaterializeResult(
                asset_key=BARS_5M,
                metadata={
                    **_panel_metadata(bars_meta, start_ms, end_ms),
                    "no_trade_bars": bars_meta.filter(pl.col("span_status") == NO_TRADE).height,
                },
            )
        if "tran_stats" in kinds:
            stats_meta = pl.concat(written["tran_stats"])
            yield dg.MaterializeResult(asset_key=TRAN_STATS_5M, metadata=_panel_metadata(stats_meta, start_ms, end_ms))

    @dg.asset(
        partitions_def=partitions.funding_days,
        group_name="reference",
        kinds={"parquet"},
        deps=[SAME_DAY_UNIVERSE],
        backfill_policy=SINGLE_RUN,
        description="Funding-rate history of every universe symbol for a UTC day, whatever its funding interval.",
    )
    def funding_rates(context: dg.AssetExecutionContext, lsq: LsqResource) -> dg.MaterializeResult:
        start_ms, end_ms = time_range(context)
        frame = fetch_by_universe(lsq, fetch_funding, start_ms, end_ms)
        write_panel(lsq.paths, "funding", frame, start_ms, end_ms)
        return dg.MaterializeResult(metadata={"rows": frame.height, "symbols": frame["symbol"].n_unique()})

    rollups = [
        rollup_asset(kind, period, partitions.rollups[period]) for kind in ROLLUP_FUNCTIONS for period in ROLLUP_PERIODS
    ]
    return MarketAssets(agg_trades, window_stats_5m, funding_rates, rollups)
