"""Sealed-window markers -> runs. One run per sealed 5-minute window, keyed by its partition key, in order.

The collector writes data/markers/YYYY-MM-DD/HHMM.json when a window is complete. Each sensor tick (every few
seconds) lists markers newer than its cursor (the last window it requested) and:
- reports an `agg_trades` materialisation per new marker (rows and symbols as metadata);
- requests the newest window as one run of the whole window job (bars, stats, premium index, factors, alpha,
  target positions), run_key = its partition key, so Dagster never launches it twice;
- after an outage, requests the windows in between first, as single partition-range runs of the market assets
  only (bars, stats, premium index): one run per contiguous stretch, keyed 'first...last'. Alphas and target
  positions of windows already past are not computed: trading on them would be trading on stale signals.
Nothing is requested before its marker exists, so no run reads a window still being written.
The sensor asks for a tick every 2 s; Dagster 1.13's sensor daemon loops at most every 5 s (MIN_INTERVAL_LOOP_TIME),
so a marker waits 0-5 s for its tick. That is why live windows normally come from `lsq trigger`
(lsq_pipeline.defs.market.trigger) within a fraction of a second; the sensor then only reports the marker, and a claim
file per window (lsq_pipeline.defs.market.claims) guarantees that exactly one of the two launches it.
"Now" comes from an injected lsq.clock.Clock (SYSTEM_CLOCK in the code location, a FakeClock in tests).
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import dagster as dg
import polars as pl

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.paths import DataPaths
from lsq.stores.panels import day_file, stored_days
from lsq.timelabels import WINDOW_MS, day_start, format_day, parse_day, parse_partition_key, partition_key
from lsq_pipeline.defs.market.claims import SERIAL_TAG, sensor_decision, window_run_exists
from lsq_pipeline.defs.market.jobs import WINDOW_JOB
from lsq_pipeline.defs.market.seal import MAX_SIGNAL_AGE_MS
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import range_tags

MAX_CATCHUP_WINDOWS = 2 * 288  # a longer outage is a job for `lsq backfill`
SENSOR_INTERVAL_SECONDS = 2


@dataclass(frozen=True)
class Marker:
    window_start: int
    rows: int
    symbols: int
    sealed_at: int | None
    path: Path

    @property
    def partition_key(self) -> str:
        return partition_key(self.window_start)


def read_marker(path: Path) -> Marker:
    """Parse a marker file; ValueError names the file and the problem."""
    try:
        raw = json.loads(path.read_text())
        start = int(raw["window_start"])
        rows, symbols = raw.get("rows", 0), raw.get("symbols", 0)
        marker = Marker(
            window_start=start,
            rows=int(sum(rows.values()) if isinstance(rows, dict) else rows or 0),
            symbols=len(symbols) if isinstance(symbols, list | dict) else int(symbols or 0),
            sealed_at=int(raw["sealed_at"]) if isinstance(raw.get("sealed_at"), int | float) else None,
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable marker {path}: {exc}") from None
    if start % WINDOW_MS:
        raise ValueError(f"marker {path}: window_start {start} is not on a 5-minute boundary")
    return marker


def list_marker_windows(paths: DataPaths, after_ms: int, until_ms: int | None = None) -> list[int]:
    """Window starts with a marker file, strictly after `after_ms` (and < `until_ms`), ascending; no file is read."""
    found: list[int] = []
    if not paths.markers.exists():
        return found
    first_day = format_day(day_start(max(after_ms, 0)))
    for day_dir in sorted(d for d in paths.markers.iterdir() if d.is_dir() and d.name >= first_day):
        for f in sorted(day_dir.glob("[0-2][0-9][0-5][0-9].json")):
            try:
                ms = parse_partition_key(f"{day_dir.name}-{f.stem[:2]}:{f.stem[2:]}")
            except ValueError:
                continue
            if ms > after_ms and (until_ms is None or ms < until_ms):
                found.append(ms)
    return found


def contiguous_runs(starts: Sequence[int], step_ms: int = WINDOW_MS) -> list[tuple[int, int]]:
    """Sorted period starts -> (first, last) of each stretch of consecutive periods."""
    runs: list[tuple[int, int]] = []
    for t in starts:
        if runs and t == runs[-1][1] + step_ms:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def plan_window_requests(windows: Sequence[int], market_keys: Sequence[dg.AssetKey], now: int) -> list[dg.RunRequest]:
    """Catch-up range runs for all but the newest window (market assets only), then the newest: a full run when its
    signal is fresh (ended at most MAX_SIGNAL_AGE_MS ago), else market assets only. All runs are serial (SERIAL_TAG).
    """
    if not windows:
        return []
    ordered = sorted(set(windows))
    requests = []
    for first, last in contiguous_runs(ordered[:-1]):
        k0, k1 = partition_key(first), partition_key(last)
        if first == last:
            requests.append(
                dg.RunRequest(run_key=k0, partition_key=k0, asset_selection=list(market_keys), tags=SERIAL_TAG)
            )
        else:
            tags = {**range_tags(k0, k1), **SERIAL_TAG}
            requests.append(dg.RunRequest(run_key=f"{k0}...{k1}", asset_selection=list(market_keys), tags=tags))
    newest = ordered[-1]
    fresh = now - (newest + WINDOW_MS) <= MAX_SIGNAL_AGE_MS
    key = partition_key(newest)
    selection = None if fresh else list(market_keys)
    requests.append(dg.RunRequest(run_key=key, partition_key=key, asset_selection=selection, tags=SERIAL_TAG))
    return requests


def agg_trades_event(marker: Marker) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key="agg_trades",
        partition=marker.partition_key,
        metadata={
            "rows": marker.rows,
            "symbols": marker.symbols,
            "marker": dg.MetadataValue.path(str(marker.path)),
            **({"sealed_at": dg.MetadataValue.timestamp(marker.sealed_at / 1000)} if marker.sealed_at else {}),
        },
    )


def last_stored_window(paths: DataPaths) -> int | None:
    """Start of the newest 5-minute bar window in storage (e.g. after a backfill), or None."""
    days = stored_days(paths, "bars")
    if not days:
        return None
    return (
        pl.scan_parquet(day_file(paths, "bars", parse_day(days[-1]))).select(pl.col("open_time").max()).collect().item()
    )


def evaluate_markers(
    paths: DataPaths,
    cursor: str | None,
    first_window_ms: int,
    now: int,
    market_keys: Sequence[dg.AssetKey],
    has_run: Callable[[str], bool],
) -> dg.SensorResult | dg.SkipReason:
    """The sensor's decision, separated from Dagster so it can be reasoned about on its own.

    Only windows closed by `now` (this machine's clock) are requested. Without a cursor (first start) it continues
    after the newest stored bars, looking back at most MAX_CATCHUP_WINDOWS. A marker that cannot be read stops the
    tick there: earlier windows proceed, and the next tick fails naming the file until it is fixed (skipping it
    would lose the window silently).
    """
    if cursor:
        after = parse_partition_key(cursor)
    else:
        after = max(first_window_ms, now - MAX_CATCHUP_WINDOWS * WINDOW_MS) - 1
        stored = last_stored_window(paths)
        after = after if stored is None else max(after, stored)
    # A window still open by this machine's clock is not yet a Dagster partition: it is picked up next tick.
    windows = [w for w in list_marker_windows(paths, after) if w >= first_window_ms and w + WINDOW_MS <= now]
    if not windows:
        return dg.SkipReason(f"no sealed window after {cursor or 'start'}")
    markers: list[Marker] = []
    for w in windows:
        try:
            markers.append(read_marker(paths.marker_file(w)))
        except ValueError:
            if not markers:
                raise
            break
    to_request, handled = windows_to_launch(paths, [m.window_start for m in markers], now, has_run)
    if not handled:
        return dg.SkipReason(f"window {partition_key(markers[0].window_start)} is being launched by the trigger")
    return dg.SensorResult(
        run_requests=plan_window_requests(to_request, market_keys, now),
        asset_events=[agg_trades_event(m) for m in markers if m.window_start <= handled[-1]],
        cursor=partition_key(handled[-1]),
    )


def windows_to_launch(
    paths: DataPaths, windows: Sequence[int], now: int, has_run: Callable[[str], bool]
) -> tuple[list[int], list[int]]:
    """(windows the sensor requests, windows it is done with), in order; see lsq_pipeline.defs.market.claims.

    A window the trigger claimed is left to it once its run exists; a trigger claim with no run yet stops the tick
    there (the cursor stays before it) until the run appears or the claim is older than TRIGGER_GRACE_MS.
    """
    to_request: list[int] = []
    handled: list[int] = []
    for w in windows:
        decision = sensor_decision(paths.marker_claim(w), now, partial(has_run, partition_key(w)))
        if decision == "wait":
            break
        if decision == "request":
            to_request.append(w)
        handled.append(w)
    return to_request, handled


def marker_sensor_for(
    market_keys: Sequence[dg.AssetKey], first_window_ms: int, clock: Clock = SYSTEM_CLOCK
) -> dg.SensorDefinition:
    """The sensor over sealed-window markers that drives the window job; `clock` says what "now" is."""

    @dg.sensor(
        name="sealed_window_sensor",
        job_name=WINDOW_JOB,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests one run per sealed 5-minute window (run key = partition key), catching up in order.",
    )
    def sealed_window_sensor(context: dg.SensorEvaluationContext, lsq: LsqResource) -> dg.SensorResult | dg.SkipReason:
        def has_run(key: str) -> bool:
            return window_run_exists(context.instance, key)

        return evaluate_markers(lsq.paths, context.cursor, first_window_ms, clock.now_ms(), market_keys, has_run)

    return sealed_window_sensor


def rollup_automation(rollups: Sequence[dg.AssetsDefinition]) -> dg.AutomationConditionSensorDefinition:
    """Dagster's automation sensor over the rollups (STOPPED by default in 1.13, so declared RUNNING here)."""
    return dg.AutomationConditionSensorDefinition(
        "rollup_automation",
        target=dg.AssetSelection.assets(*rollups),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS * 5,
        description="Materialises each rollup partition once all of its 5-minute windows are stored.",
    )
