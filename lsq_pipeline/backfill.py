"""`lsq backfill`: import a range's trades from the exchange, then materialise every pipeline asset over it.

Order: universes of the days (when missing) -> trades (collectors.history, resumable) -> 5-minute bars, trade
statistics and premium index as ONE partition-range run (BackfillPolicy.single_run: Dagster records every window,
the asset reads and writes a day at a time) -> rollups of the whole periods inside the range that are older than the
rollup automation's lookback (ROLLUP_LOOKBACK, two days: the automation rolls up the recent ones as soon as their
windows are stored, and doing them here too would do them twice at every start) -> funding of the days.
Runs execute in this process on the given instance (the persistent one under DAGSTER_HOME for the CLI), so the UI
shows them like any other run. Everything is idempotent: a rerun rewrites the same rows.
"""

import asyncio
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
from tqdm import tqdm

from collectors import history
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.stores.universes import universe_symbols
from lsq.timelabels import (
    DAY_MS,
    PERIOD_MS,
    WINDOW_MS,
    day_start,
    format_day,
    to_datetime,
    window_start,
)
from lsq_pipeline.defs.market.assets import ROLLUP_LOOKBACK
from lsq_pipeline.defs.market.keys import BARS_5M, FUNDING_RATES, PREMIUM_INDEX_5M, TRAN_STATS_5M
from lsq_pipeline.defs.market.sensors import contiguous_runs, last_stored_window
from lsq_pipeline.defs.universe.assets import UNIVERSE
from lsq_pipeline.partitions import partitions_for
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import BACKFILL_TAG, range_tags

PLANNED_SUBSET_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@dataclass
class BackfillReport:
    start_ms: int
    end_ms: int
    symbols: list[str] = field(default_factory=list)
    trades_written: int = 0
    runs: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # CPU seconds of this process per stage (all threads): on a shared machine the wall time says more about the
    # neighbours than about the backfill
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def windows(self) -> int:
        return (self.end_ms - self.start_ms) // WINDOW_MS

    @property
    def success(self) -> bool:
        return all(self.runs.values())


def clamp_range(start_ms: int, end_ms: int, now: int, first_window_ms: int) -> tuple[int, int]:
    """[start, end) on the 5-minute grid, ending at the last closed window; ValueError naming what is wrong."""
    start, end = window_start(start_ms), min(window_start(end_ms), window_start(now))
    if start < first_window_ms:
        raise ValueError(
            f"start {format_day(start)} is before data.partitions_start ({format_day(first_window_ms)}): "
            "move partitions_start back in the configuration first"
        )
    if end <= start:
        raise ValueError(f"nothing to backfill: the range ends ({end}) at or before it starts ({start})")
    return start, end


def whole_periods(start_ms: int, end_ms: int, period_ms: int) -> tuple[int, int] | None:
    """First and last start of the periods lying entirely inside [start, end), or None."""
    first = -(-start_ms // period_ms) * period_ms
    last = end_ms - end_ms % period_ms - period_ms
    return (first, last) if last >= first else None


def older_periods(start_ms: int, end_ms: int, period_ms: int, before_ms: int) -> tuple[int, int] | None:
    """The whole periods inside [start, end) that start before `before_ms` (first and last start), or None."""
    span = whole_periods(start_ms, end_ms, period_ms)
    if span is None or span[0] >= before_ms:
        return None
    return span[0], min(span[1], window_start(before_ms - 1, period_ms))


def _range_tags(partitions: dg.TimeWindowPartitionsDefinition, first_ms: int, last_ms: int) -> dict[str, str]:
    first, last = (to_datetime(ms).strftime(partitions.fmt) for ms in (first_ms, last_ms))
    return {**range_tags(first, last), BACKFILL_TAG: "true"}


def _run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    keys: Sequence[dg.AssetKey],
    tags: dict[str, str],
    resources: dict[str, object],
) -> bool:
    result = job.execute_in_process(
        instance=instance,
        asset_selection=list(keys),
        tags=tags,
        resources=resources,
        raise_on_error=False,
    )
    return result.success


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_backfill(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    instance: dg.DagsterInstance,
    *,
    import_trades: bool = True,
    progress: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> BackfillReport:
    """Backfill [start_ms, end_ms), clamped to the windows closed by `clock`; the module docstring lists the steps."""
    from lsq_pipeline.definitions import build_definitions

    partitions = partitions_for(settings)
    start, end = clamp_range(start_ms, end_ms, clock.now_ms(), partitions.first_window_ms)
    # One planned event per run instead of one per partition: a 2,016-window run records in ~18 s instead of ~31 s.
    os.environ.setdefault(PLANNED_SUBSET_ENV, "1")
    report = BackfillReport(start, end)
    lsq = LsqResource.for_settings(settings)
    resources: dict[str, object] = {"lsq": lsq}
    job = build_definitions(settings, resources, clock).resolve_implicit_global_asset_job_def()
    paths = DataPaths(settings.data_dir)
    days = list(range(day_start(start), end, DAY_MS))
    stages = ["universe", "trades", "bars", *partitions.rollups, "funding"]
    # disable=None: no bar (and no escape codes) when stderr is not a terminal, e.g. in `lsq run`'s combined log
    with tqdm(total=len(stages), unit="stage", desc="lsq backfill", disable=None if progress else True) as bar:

        def stage(name: str) -> None:
            bar.set_postfix_str(name)
            report.seconds[name], report.cpu_seconds[name] = time.monotonic(), _process_cpu()

        def done(name: str) -> None:
            report.seconds[name] = time.monotonic() - report.seconds[name]
            report.cpu_seconds[name] = _process_cpu() - report.cpu_seconds[name]
            bar.update(1)

        stage("universe")
        missing = [day for day in days if not paths.universe_file(format_day(day), "v1").exists()]
        for first, last in contiguous_runs(missing, DAY_MS):  # stored days stay as they were built (point in time)
            tags = _range_tags(partitions.universe_days, first, last)
            report.runs[f"universe {format_day(first)}..{format_day(last)}"] = _run(
                job, instance, [UNIVERSE], tags, resources
            )
        report.symbols = sorted({s for day in days for s in universe_symbols(paths, day)})
        done("universe")

        stage("trades")
        if import_trades and report.symbols:
            reports = asyncio.run(history.backfill(settings, report.symbols, start, end))
            report.trades_written = sum(r.written for r in reports)
        done("trades")

        stage("bars")
        keys = [BARS_5M, TRAN_STATS_5M, PREMIUM_INDEX_5M]
        bar_tags = _range_tags(partitions.five_minute, start, end - WINDOW_MS)
        report.runs["bars"] = _run(job, instance, keys, bar_tags, resources)
        done("bars")

        automation_from = clock.now_ms() - int(ROLLUP_LOOKBACK.total_seconds() * 1000)
        for period, rollup in partitions.rollups.items():
            stage(period)
            span = older_periods(start, end, PERIOD_MS[period], automation_from)
            if span is not None:
                keys = [dg.AssetKey(f"bars_{period}"), dg.AssetKey(f"tran_stats_{period}")]
                report.runs[period] = _run(job, instance, keys, _range_tags(rollup, *span), resources)
            done(period)

        stage("funding")
        funding_tags = _range_tags(partitions.funding_days, days[0], days[-1])
        report.runs["funding"] = _run(job, instance, [FUNDING_RATES], funding_tags, resources)
        done("funding")
    return report


def recent_range(paths: DataPaths, now: int) -> tuple[int, int]:
    """What a fresh start should backfill: from the last stored window (else yesterday 00:00 UTC) to now."""
    yesterday = day_start(now) - DAY_MS
    stored = last_stored_window(paths)
    start = yesterday if stored is None else max(yesterday, stored + WINDOW_MS)
    return start, window_start(now)


def history_range(history_days: int, now: int) -> tuple[int, int]:
    """What `lsq backfill --history` fills: the `strategy.history_days` the calculators ask for, up to now (trades
    already stored are not imported again)."""
    end = window_start(now)
    return end - history_days * DAY_MS, end
