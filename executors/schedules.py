"""Execution schedules as pure values: when each slice goes, and what share of the move should be done after it.

The runner sizes each slice to catch up with the ideal path (`cum` x the move) from the position actually reached,
so a slice that filled short, was skipped (under MIN_NOTIONAL) or rounded down carries its residual into the next;
the last slice's `cum` is exactly 1, so the schedule always ends by sweeping to the target.

- MARKET: one slice, now.
- TWAP: n = horizon / interval slices, the first at once, equal shares.
- VWAP: slice shares follow the volume profile by time of day (the mean quote volume of each 5-minute slot of the
  UTC day over the last N stored days); a slice covering parts of slots takes their weights pro rata, slots are
  found from absolute time, so a schedule crossing an hour or midnight walks into the next slots, never back to
  the current hour. With no volume data a symbol falls back to equal shares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl

from lsq.paths import DataPaths
from lsq.stores.panels import scan_panel
from lsq.timelabels import DAY_MS, WINDOW_MS

SLOTS_PER_DAY = DAY_MS // WINDOW_MS
Profile = Mapping[int, float]  # slot of the UTC day (0..287) -> mean volume


@dataclass(frozen=True)
class Schedule:
    times_ms: tuple[int, ...]
    default: tuple[float, ...]
    per_symbol: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times_ms)

    def cum(self, symbol: str, index: int) -> float:
        """Share of the symbol's move that should be done once slice `index` has executed."""
        return self.per_symbol.get(symbol, self.default)[index]


def market_schedule(start_ms: int) -> Schedule:
    return Schedule((start_ms,), (1.0,))


def slice_count(horizon_s: float, interval_s: float) -> int:
    return max(1, math.ceil(horizon_s / interval_s - 1e-9))


def twap_schedule(start_ms: int, horizon_s: float, interval_s: float) -> Schedule:
    n = slice_count(horizon_s, interval_s)
    times = tuple(start_ms + round(i * interval_s * 1000) for i in range(n))
    return Schedule(times, _cumulative([1.0] * n))


def slot_of(ms: int) -> int:
    return (ms % DAY_MS) // WINDOW_MS


def interval_weight(start_ms: int, end_ms: int, profile: Profile) -> float:
    """Expected volume in [start, end): each overlapped 5-minute slot's weight times the share overlapped."""
    total = 0.0
    slot_start = start_ms - start_ms % WINDOW_MS
    while slot_start < end_ms:
        overlap = min(end_ms, slot_start + WINDOW_MS) - max(start_ms, slot_start)
        total += profile.get(slot_of(slot_start), 0.0) * overlap / WINDOW_MS
        slot_start += WINDOW_MS
    return total


def vwap_schedule(start_ms: int, horizon_s: float, interval_s: float, profiles: Mapping[str, Profile]) -> Schedule:
    twap = twap_schedule(start_ms, horizon_s, interval_s)
    step = round(interval_s * 1000)
    per_symbol = {}
    for symbol, profile in profiles.items():
        weights = [interval_weight(t, t + step, profile) for t in twap.times_ms]
        if sum(weights) > 0:
            per_symbol[symbol] = _cumulative(weights)
    return Schedule(twap.times_ms, twap.default, per_symbol)


def _cumulative(weights: list[float]) -> tuple[float, ...]:
    total = sum(weights)
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc / total)
    out[-1] = 1.0
    return tuple(out)


def volume_profiles(bars: pl.DataFrame) -> dict[str, dict[int, float]]:
    """symbol -> slot of day -> mean quote volume, from 5-minute bars (symbol, open_time, quote_volume)."""
    if bars.height == 0:
        return {}
    table = (
        bars.select(
            "symbol",
            ((pl.col("open_time") % DAY_MS) // WINDOW_MS).alias("slot"),
            pl.col("quote_volume").cast(pl.Float64).fill_null(0.0).alias("v"),
        )
        .group_by("symbol", "slot")
        .agg(pl.col("v").mean())
    )
    out: dict[str, dict[int, float]] = {}
    for symbol, slot, v in table.iter_rows():
        out.setdefault(symbol, {})[int(slot)] = float(v)
    return out


def load_profiles(paths: DataPaths, symbols: Iterable[str], now_ms: int, days: int) -> dict[str, dict[int, float]]:
    """Profiles from the stored 5-minute bars of the `days` whole UTC days before today's."""
    wanted = sorted(set(symbols))
    if not wanted:
        return {}
    today = now_ms - now_ms % DAY_MS
    lf = scan_panel(paths, "bars", today - days * DAY_MS, today)
    if lf is None:
        return {}
    bars = lf.select("symbol", "open_time", "quote_volume").filter(pl.col("symbol").is_in(wanted)).collect()
    return volume_profiles(bars)
