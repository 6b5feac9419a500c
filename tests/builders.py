"""Builders shared by the pipeline's tests."""

import dagster as dg
import polars as pl

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings, load_config
from lsq.stores.universes import UNIVERSE_SCHEMA
from lsq_pipeline.defs.market.assets import MarketAssets, market_assets
from lsq_pipeline.defs.market.checks import bar_check_specs
from lsq_pipeline.defs.market.keys import BARS_5M, TRAN_STATS_5M
from lsq_pipeline.defs.universe.assets import universe_asset
from lsq_pipeline.partitions import partitions_for


def universe_frame(symbols: list[str]) -> pl.DataFrame:
    """A stored-universe frame for `symbols` with BTC-like filters."""
    n = len(symbols)
    raw = {
        "symbol": symbols,
        "base_asset": [s.removesuffix("USDT") for s in symbols],
        "tick_size": ["0.01"] * n,
        "step_size": ["0.001"] * n,
        "min_qty": ["0.001"] * n,
        "min_notional": ["5"] * n,
        "price_precision": [2] * n,
        "quantity_precision": [3] * n,
        "onboard_date": [0] * n,
    }
    return pl.DataFrame(raw).select(pl.col(c).cast(t) for c, t in UNIVERSE_SCHEMA.items())


def pinned_settings(partitions_start: str = "2026-11-01") -> Settings:
    """The project's configuration with a fixed first partition: tests on fixed dates stay inside the partitions
    whatever today is (unset, the start follows today)."""
    base = load_config()
    return base.model_copy(update={"data": base.data.model_copy(update={"partitions_start": partitions_start})})


def market(settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> MarketAssets:
    """The market domain's assets over the partitions of `settings` (default: pinned_settings()), on `clock`."""
    return market_assets(partitions_for(settings or pinned_settings()), clock)


def window_stats_without_checks() -> dg.AssetSelection:
    """The bars step's panels alone: for runs that need stored bars, not the checks (the parity check asks the
    exchange)."""
    return dg.AssetSelection.assets(BARS_5M, TRAN_STATS_5M).without_checks()


def without_bar_checks() -> dg.AssetSelection:
    """Every asset of a run and its checks but the bars': for runs on synthetic trades, which the exchange's klines
    (the parity check) would not match."""
    return dg.AssetSelection.all() - dg.AssetSelection.checks(*bar_check_keys())


def bar_check_keys(settings: Settings | None = None) -> list[dg.AssetCheckKey]:
    """The checks of bars_5m (check_specs of the bars step), for runs that select some of them."""
    return [spec.key for spec in bar_check_specs(partitions_for(settings or pinned_settings()).five_minute)]


def universe_def(settings: Settings | None = None) -> dg.AssetsDefinition:
    """The `universe` asset over the universe days of `settings` (default: pinned_settings())."""
    return universe_asset(partitions_for(settings or pinned_settings()).universe_days)
