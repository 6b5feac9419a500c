"""Stored trading universes: one CSV per (UTC day, version) at DataPaths.universe_file(day, version).

Versions: v1 is every TRADING USDT-margined perpetual with its trading filters; v2 narrows v1 by listing age and
volume (lsq.universes builds both). v1 is the default of these readers: it is what the market data cover (bars are
computed for every v1 symbol). The universe that is traded is the configured `strategy.universe_version`
(`traded_version`; TRADED_VERSION is its default): alphas, target positions and the bar coverage check use it, and
the strategy API's get_last_universe defaults to it. Older days and versions stay readable.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import polars as pl

from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import parse_day

if TYPE_CHECKING:
    from lsq.config import Settings

VERSIONS = ("v1", "v2")
TRADED_VERSION = "v2"  # the default of strategy.universe_version


def traded_version(settings: Settings) -> str:
    """The universe that is traded, as configured (`strategy.universe_version`)."""
    return check_version(settings.strategy.universe_version)


UNIVERSE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "base_asset": pl.String(),
    "tick_size": pl.Decimal(38, 8),
    "step_size": pl.Decimal(38, 8),
    "min_qty": pl.Decimal(38, 8),
    "min_notional": pl.Decimal(38, 8),
    "price_precision": pl.Int32(),
    "quantity_precision": pl.Int32(),
    "onboard_date": pl.Int64(),
}
V2_EXTRA: dict[str, pl.DataType] = {"quote_volume_24h": pl.Float64()}


def check_version(version: str) -> str:
    """`version` when it is a known universe version; ValueError naming the known ones otherwise."""
    if version not in VERSIONS:
        raise ValueError(f"unknown universe version {version!r}; expected one of {VERSIONS}")
    return version


def write_universe(paths: DataPaths, day: str, version: str, frame: pl.DataFrame) -> None:
    parse_day(day)
    buf = io.StringIO()
    frame.write_csv(buf)
    atomic_write_text(paths.universe_file(day, check_version(version)), buf.getvalue())


def read_universe(paths: DataPaths, day: str, version: str = "v1") -> pl.DataFrame:
    """The stored universe of `day`; FileNotFoundError names the missing file."""
    path = paths.universe_file(day, check_version(version))
    if not path.exists():
        raise FileNotFoundError(f"no {version} universe for {day}: {path} does not exist")
    schema = {**UNIVERSE_SCHEMA, **(V2_EXTRA if version == "v2" else {})}
    return pl.read_csv(path, schema_overrides=schema)


def universe_days(paths: DataPaths, version: str = "v1") -> list[str]:
    """Days that have a stored universe of `version`, ascending."""
    root = paths.root / "universe"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if paths.universe_file(p.name, version).exists())


def universe_day_for(paths: DataPaths, day_ms: int, version: str = "v1") -> str | None:
    """The universe in force on the UTC day of `day_ms`: that day's, else the latest earlier one, else None."""
    days = [d for d in universe_days(paths, check_version(version)) if parse_day(d) <= day_ms]
    return days[-1] if days else None


def universe_symbols(paths: DataPaths, day_ms: int, version: str = "v1") -> list[str]:
    """Binance symbols of the universe in force on the day of `day_ms` (empty when none is stored yet)."""
    day = universe_day_for(paths, day_ms, version)
    return [] if day is None else read_universe(paths, day, version)["symbol"].to_list()
