"""The strategy data API: stored panels by strategy label, split per symbol.

    api = get_strategy_api()
    bars = api.get_bar_between("2024-08-08-001", "2024-08-08-288", mode="1h")
    bars["btc-usdt"]  # pl.DataFrame sorted by open_time

Windows are named by any of their three names (lsq.timelabels.parse_window): a label 'YYYY-MM-DD-HHH' (HHH = 001..288,
the 5-minute window of the UTC day), a partition key or a positions stamp; both ends are inclusive. A mode is any
spelling of a period (lsq.timelabels.parse_period: '5min' or '5m', '1h', ..., '24h'). Modes
longer than 5 minutes are rolled up from the stored 5-minute panels with lsq.aggregation's rollups, so a period that
is still open (or whose rollup asset has not run yet) is returned as far as its windows exist, never missing.
A mode period starts at its UTC-aligned boundary: mode='1h' from label ...-007 (00:30) returns the hour 00:00 built
from windows 00:30 onwards. Prices and volumes keep their exact Decimal types.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from lsq.aggregation.rollups import rollup_bars, rollup_tran_stats
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings, load_config
from lsq.paths import DataPaths
from lsq.stores.panels import load_panel, scan_panel
from lsq.stores.universes import TRADED_VERSION, check_version, read_universe, traded_version, universe_day_for
from lsq.symbols import to_strategy
from lsq.timelabels import DAY_MS, PERIOD_MS, WINDOW_MS, day_start, parse_period, parse_window, window_start


def label_range(begin_label: str, end_label: str) -> tuple[int, int]:
    """Inclusive windows (any of their names) -> [start_ms, end_ms); ValueError for a bad name or an inverted range."""
    start, last = parse_window(begin_label), parse_window(end_label)
    if last < start:
        raise ValueError(f"inverted range: end label {end_label!r} is before begin label {begin_label!r}")
    return start, last + WINDOW_MS


def check_mode(mode: str) -> str:
    """The canonical period of `mode` (ValueError naming the accepted ones)."""
    return parse_period(mode, "mode")


def split_by_symbol(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """{'btc-usdt': rows of BTCUSDT, ...} from a long frame with Binance symbols, each symbol's rows in time order
    (the frame is in time order per symbol: storage order or a rollup's output), keys sorted.

    The `symbol` column carries the strategy name too, so a frame passed around alone still says what it is.
    """
    if frame.height == 0:
        return {}
    parts = frame.partition_by("symbol", as_dict=True, maintain_order=True)
    named = ((to_strategy(str(key[0])), part) for key, part in parts.items())
    return {
        name: part.with_columns(pl.lit(name).alias("symbol")) for name, part in sorted(named, key=lambda item: item[0])
    }


def rollup_premium(frame: pl.DataFrame, period_ms: int) -> pl.DataFrame:
    """Premium-index OHLC of a longer period: first open, max high, min low, last close."""
    return (
        frame.sort("symbol", "open_time")
        .with_columns(pl.col("open_time") - pl.col("open_time") % period_ms)
        .group_by("symbol", "open_time", maintain_order=True)
        .agg(pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last())
        .with_columns((pl.col("open_time") + period_ms - 1).alias("close_time"))
        .select("symbol", "open_time", "close_time", "open", "high", "low", "close")
    )


@dataclass(frozen=True)
class StrategyDataAPI:
    """Read-only access to the pipeline's stored data; every method returns {strategy symbol: frame}."""

    paths: DataPaths
    clock: Clock = SYSTEM_CLOCK
    universe_version: str = TRADED_VERSION  # the traded universe: `strategy.universe_version` via get_strategy_api

    def _panel(self, kind: str, begin_label: str, end_label: str, mode: str) -> pl.DataFrame:
        """Rows in storage order (per symbol in time order), from the start of the first label's period."""
        period_ms = PERIOD_MS[check_mode(mode)]
        start, end = label_range(begin_label, end_label)
        lf = scan_panel(self.paths, kind, window_start(start, period_ms), end)
        return pl.DataFrame() if lf is None else lf.collect()

    def get_bar_between(self, begin_label: str, end_label: str, mode: str = "5min") -> dict[str, pl.DataFrame]:
        """OHLCV bars (lsq.aggregation BAR_SCHEMA) per symbol for the labels' windows, in periods of `mode`."""
        frame = self._panel("bars", begin_label, end_label, mode)
        if frame.height and check_mode(mode) != "5m":
            frame = rollup_bars(frame, check_mode(mode))
        return split_by_symbol(frame)

    def get_tran_stats_between(self, begin_label: str, end_label: str, mode: str = "5min") -> dict[str, pl.DataFrame]:
        """Taker buy/sell statistics by trade-size tier (lsq.aggregation TRAN_STATS_SCHEMA) per symbol."""
        frame = self._panel("tran_stats", begin_label, end_label, mode)
        if frame.height and check_mode(mode) != "5m":
            frame = rollup_tran_stats(frame, check_mode(mode))
        return split_by_symbol(frame)

    def get_premium_index_bar_between(
        self, begin_label: str, end_label: str, mode: str = "5min"
    ) -> dict[str, pl.DataFrame]:
        """Premium-index OHLC (floats: it is a ratio) per symbol."""
        frame = self._panel("premium_index", begin_label, end_label, mode)
        if frame.height and check_mode(mode) != "5m":
            frame = rollup_premium(frame, PERIOD_MS[check_mode(mode)])
        return split_by_symbol(frame)

    def get_funding_rate_between(self, begin_label: str, end_label: str) -> dict[str, pl.DataFrame]:
        """Funding events (funding_time, funding_rate, mark_price) inside the labels' windows, per symbol."""
        start, end = label_range(begin_label, end_label)
        return split_by_symbol(load_panel("funding", start, end, paths=self.paths))

    def get_last_universe(self, version: str | None = None) -> pl.DataFrame:
        """The universe in force today (UTC): today's file, else the latest earlier one; symbols as 'btc-usdt'.

        The default is the traded universe (`strategy.universe_version`); `version="v1"` gives every listed
        perpetual. FileNotFoundError when none is stored yet (run the `universe` asset, or `lsq backfill`).
        """
        version = version or self.universe_version
        day = universe_day_for(self.paths, day_start(self.clock.now_ms()) + DAY_MS - 1, check_version(version))
        if day is None:
            raise FileNotFoundError(f"no {version} universe stored under {self.paths.root / 'universe'}")
        frame = read_universe(self.paths, day, version)
        names = {s: to_strategy(s) for s in frame["symbol"].to_list()}
        return frame.with_columns(pl.col("symbol").replace_strict(names, return_dtype=pl.String))


def get_strategy_api(settings: Settings | None = None) -> StrategyDataAPI:
    """The API over the configured data directory (or `settings`' one)."""
    settings = settings or load_config()
    return StrategyDataAPI(DataPaths(settings.data_dir), universe_version=traded_version(settings))
