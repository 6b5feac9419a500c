"""Latency of live windows in a running (or stopped) `make run`: window end -> marker -> bars -> target positions,
then execution: window end -> first order acknowledged -> schedule complete, and executed vs decision price.

Reads the markers under the data directory and the materialisations in the project's Dagster instance
(.dagster_home), so it measures the real path: collector, `dagster dev`'s sensor daemon, the run queue, the run.
The execution figures come from the `executions` asset's metadata (ExecutionReport: first_ack_ms, finished_ms,
slippage against the target file's decision price), one materialisation per account and window.
Not part of `make bench` (it needs a system that has been running): start `make run`, wait, then
`.venv/bin/python benchmarks/live_window_latency.py --hours 1`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import dagster as dg

from lsq.config import load_config
from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS, WINDOW_MS, format_day, partition_key
from lsq_pipeline.cli import dagster_env

# A marker later than this after its window's end was a catch-up after a (re)start, and a materialisation later than
# this after its marker came from a backfill: neither is the live path measured here.
LIVE_SLACK_S = 60.0


def stored_at(instance: dg.DagsterInstance, asset: str, key: str) -> float | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    return records[0].timestamp if records else None


def window_run(instance: dg.DagsterInstance, key: str) -> dg.RunRecord | None:
    """The live run of a window (the sensor's or the trigger's), if any."""
    runs = dg.RunsFilter(tags={"dagster/partition": key, "lsq/window": "serial"})
    records = instance.get_run_records(filters=runs, limit=1, ascending=True)
    return records[0] if records else None


def executions_since(instance: dg.DagsterInstance, since_s: float) -> list[dict[str, Any]]:
    """The `executions` materialisations after `since_s`: account, status and figures, oldest first."""
    filt = dg.AssetRecordsFilter(asset_key=dg.AssetKey("executions"), after_timestamp=since_s)
    rows = []
    for record in reversed(instance.fetch_materializations(filt, limit=10_000).records):
        materialization = record.asset_materialization
        if materialization is None:  # a materialisation record always has one; the type allows any event
            continue
        meta = {k: v.value for k, v in materialization.metadata.items()}
        rows.append({"account": record.partition_key, **meta, **run_phases(instance, record.run_id, meta)})
    return rows


def run_phases(instance: dg.DagsterInstance, run_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Where an execution run's time went before its first acknowledged order: target file written -> run created
    (the lane's or the sensor's submission) -> run started (the run launcher) -> first order acknowledged (inside
    the run: step start, reconcile, contract settings, rules, planning, the first request)."""
    run = instance.get_run_record_by_id(run_id)
    target = meta.get("target_file")
    first_ack_ms = meta.get("first_ack_ms")
    if run is None or run.start_time is None or not isinstance(target, str) or not os.path.exists(target):
        return {}
    created = run.create_timestamp.timestamp()
    phases = {
        "file_to_created_s": created - os.path.getmtime(target),
        "created_to_started_s": run.start_time - created,
        "launched_by": run.dagster_run.tags.get("user", "execution_sensor"),
    }
    if isinstance(first_ack_ms, int):
        phases["started_to_ack_s"] = first_ack_ms / 1000 - run.start_time
    return phases


def print_executions(rows: list[dict[str, Any]]) -> None:
    """Per window and account, then the medians over the windows that traded."""
    print("window          account     status      orders  filled USDT  ack s  done s  slip bps  (vs decision price)")
    for r in rows:
        ack = r.get("first_ack_after_window_end_s")
        done = r.get("complete_after_window_end_s")
        print(
            f"{r.get('window', '-'):15} {r['account']:11} {r.get('status', '-'):11} {r.get('orders_sent', 0):6} "
            f"{r.get('filled_notional', 0.0):12.2f} {'-' if ack is None else f'{ack:5.2f}':>6} "
            f"{'-' if done is None else f'{done:6.1f}':>7} {r.get('slippage_bps', 0.0):9.2f}"
        )
    traded = [r for r in rows if r.get("first_ack_after_window_end_s") is not None]
    print(f"window end -> first order acked:  {summary([r['first_ack_after_window_end_s'] for r in traded])}")
    print(f"window end -> schedule complete:  {summary([r['complete_after_window_end_s'] for r in traded])}")
    slips = [r["slippage_bps"] for r in traded]
    print(f"slippage vs decision price (bps): {summary(slips).replace(' s', '')}")
    for launcher in sorted({r["launched_by"] for r in rows if "launched_by" in r}):
        runs = [r for r in rows if r.get("launched_by") == launcher]
        print(f"runs launched by {launcher}: {len(runs)}")
        print(f"  target file -> run created:     {summary([r['file_to_created_s'] for r in runs])}")
        print(f"  run created -> run started:     {summary([r['created_to_started_s'] for r in runs])}")
        acked = [r["started_to_ack_s"] for r in runs if "started_to_ack_s" in r]
        print(f"  run started -> first order ack: {summary(acked)}")


def summary(values: list[float]) -> str:
    if not values:
        return "no windows"
    ordered = sorted(values)
    p90, p95 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.9, 0.95))
    return (
        f"median {statistics.median(ordered):.2f} s, p90 {p90:.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s, "
        f"n={len(ordered)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="windows sealed in the last N hours")
    parser.add_argument("--each", action="store_true", help="also print every window's figures")
    args = parser.parse_args()
    os.environ.update(dagster_env())
    paths = DataPaths(load_config().data_dir)
    since = time.time() - args.hours * 3600
    markers = []
    for day_ms in {int(since * 1000) // DAY_MS * DAY_MS, int(time.time() * 1000) // DAY_MS * DAY_MS}:
        folder = paths.markers / format_day(day_ms)
        markers += [m for m in folder.glob("*.json") if m.stat().st_mtime >= since] if folder.exists() else []
    sealed, bars, positions = [], [], []
    requested, started, computed, after_marker = [], [], [], []
    with dg.DagsterInstance.get() as instance:
        for marker in sorted(markers):
            window = int(json.loads(marker.read_text())["window_start"])
            end_s = (window + WINDOW_MS) / 1000
            marker_s = marker.stat().st_mtime
            if marker_s - end_s > LIVE_SLACK_S:
                continue
            sealed.append(marker_s - end_s)
            key = partition_key(window)
            bars_s = stored_at(instance, "bars_5m", key)
            if bars_s is not None and bars_s - marker_s < LIVE_SLACK_S:
                bars.append(bars_s - end_s)
                after_marker.append(bars_s - marker_s)
                run = window_run(instance, key)
                if run is not None and run.start_time is not None:
                    requested.append(run.create_timestamp.timestamp() - end_s)
                    started.append(run.start_time - end_s)
                    computed.append(bars_s - max(run.start_time, marker_s))
            positions_s = stored_at(instance, "target_positions", key)
            if positions_s is not None and positions_s - marker_s < LIVE_SLACK_S:
                positions.append(positions_s - end_s)
            if args.each:
                after = [f"{t - end_s:6.2f}" if t is not None else "     -" for t in (bars_s, positions_s)]
                print(f"{key}  sealed {marker_s - end_s:5.2f} s  bars {after[0]} s  target positions {after[1]} s")
    print(f"window end -> sealed marker:      {summary(sealed)}")
    print(f"window end -> bars_5m stored:     {summary(bars)}")
    print(f"window end -> target_positions:   {summary(positions)}")
    print(f"marker -> bars_5m stored:         {summary(after_marker)}")
    # `lsq trigger` launches a window's run ahead of its end (negative figures), and the run waits for the seal
    print(f"  window end -> run requested:    {summary(requested)}")
    print(f"  window end -> run started:      {summary(started)}")
    print(f"  seal or start -> bars stored:   {summary(computed)}")
    with dg.DagsterInstance.get() as instance:
        print_executions(executions_since(instance, since))


if __name__ == "__main__":
    main()
