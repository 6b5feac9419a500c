"""Partition definitions, all in UTC and all starting at `data.partitions_start` from the configuration.

The 5-minute definition is the heart: one partition per sealed trade window, keys like 2024-08-08-23:55 (the same
format as lsq.timelabels.partition_key). Rollups have their own definitions aligned to UTC midnight. They are built
from the Settings the code location is built with (`partitions_for`), so moving `data.partitions_start` forward and
reloading keeps the number of 5-minute partitions small (Dagster advises < 100,000 per asset) without touching
stored data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from lsq.clock import SYSTEM_CLOCK
from lsq.config import Settings
from lsq.timelabels import PARTITION_FMT, from_datetime, parse_day, to_datetime

ROLLUP_CRONS: dict[str, str] = {
    "1h": "0 * * * *",
    "4h": "0 */4 * * *",
    "8h": "0 */8 * * *",
    "12h": "0 */12 * * *",
    "24h": "0 0 * * *",
}


def _start(day: str) -> datetime:
    """'YYYY-MM-DD' -> UTC midnight; a clear error names a malformed start."""
    return to_datetime(parse_day(day))


def five_minute(start: str) -> dg.TimeWindowPartitionsDefinition:
    """The window in progress is a partition too (end_offset=1): `lsq trigger` launches its run before it closes, and
    the run waits for the seal (lsq_pipeline.defs.market.seal); no other run may read an open window."""
    return dg.TimeWindowPartitionsDefinition(
        start=_start(start), cron_schedule="*/5 * * * *", fmt=PARTITION_FMT, timezone="UTC", end_offset=1
    )


def rollup(period: str, start: str) -> dg.TimeWindowPartitionsDefinition:
    if period not in ROLLUP_CRONS:
        raise ValueError(f"unknown rollup period {period!r}; expected one of {sorted(ROLLUP_CRONS)}")
    fmt = "%Y-%m-%d" if period == "24h" else PARTITION_FMT
    return dg.TimeWindowPartitionsDefinition(
        start=_start(start), cron_schedule=ROLLUP_CRONS[period], fmt=fmt, timezone="UTC"
    )


def daily(start: str, end_offset: int = 0) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=end_offset)


@dataclass(frozen=True)
class Partitions:
    """Every partitions definition of the code location, from one `data.partitions_start`."""

    five_minute: dg.TimeWindowPartitionsDefinition
    rollups: dict[str, dg.TimeWindowPartitionsDefinition]
    # The universe of day D is built on D-1 (schedule at 23:55 local), so tomorrow's partition must exist.
    universe_days: dg.DailyPartitionsDefinition
    # Funding of the current UTC day can be fetched while it is still open and refreshed later.
    funding_days: dg.DailyPartitionsDefinition

    @property
    def first_window_ms(self) -> int:
        return from_datetime(self.five_minute.start)


def partitions_for(settings: Settings) -> Partitions:
    """The partitions of `settings`; an unset `data.partitions_start` (a Settings not from load_config, which fills
    it) follows Settings.first_partition_day today."""
    start = settings.data.partitions_start or settings.first_partition_day(SYSTEM_CLOCK.now_ms())
    return Partitions(
        five_minute=five_minute(start),
        rollups={p: rollup(p, start) for p in ROLLUP_CRONS},
        universe_days=daily(start, end_offset=2),
        funding_days=daily(start, end_offset=1),
    )
