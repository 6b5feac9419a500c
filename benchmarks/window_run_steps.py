"""A window run's critical path, step by step: wall time of each step, events written, run total.

    .venv/bin/python benchmarks/window_run_steps.py [--runs 12] [--symbols 6] [--windows 3]

A temporary data directory filled as a fresh start fills it: the real simulator (in this process, on a free port),
then `run_backfill` of the last few closed windows (universe, trades, bars, premium index, funding). Then the window
job (the one the sealed-window sensor launches) is executed `--runs` times in process, cycling over those windows,
on a persistent sqlite DagsterInstance in a temporary DAGSTER_HOME with the project's dagster.yaml: the same storage
and event writes a live run pays, without the run launch (benchmarks/run_start_latency.py measures that). Step
times come from each run's STEP_START and STEP_SUCCESS/STEP_FAILURE events, "->bars" and "->targets" from RUN_START
to the bars_5m and target_positions materialisations; "events" counts every entry the run stored (each one a
write); "wall" is the whole execute_in_process call (run creation and its planned events included). Not part of
`make bench` (it is about Dagster's own overheads, not the maths).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the simulator fixture's builder
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.timing, when run as a script

from conftest import start_sim_server

from benchmarks.timing import percentile, temporary_home
from lsq.timelabels import DAY_MS, WINDOW_MS, format_day, now_ms, partition_key, window_start
from lsq_pipeline.backfill import run_backfill
from lsq_pipeline.cli import instance_yaml
from lsq_pipeline.definitions import build_definitions
from lsq_pipeline.defs.market.jobs import WINDOW_JOB
from lsq_pipeline.resources import LsqResource

STEP_END = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
# the two latencies, here from the run's start: bars stored, target positions written
MILESTONES = ("bars_5m", "target_positions")


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, float], int, dict[str, float]]:
    """Seconds from STEP_START to STEP_SUCCESS/FAILURE per step key, the number of stored log entries, and the
    seconds from RUN_START to the materialisation of each asset in MILESTONES."""
    began: dict[str, float] = {}
    took: dict[str, float] = {}
    reached: dict[str, float] = {}
    run_start = None
    entries = instance.all_logs(run_id)
    for entry in entries:
        event = entry.dagster_event
        if event is not None and event.event_type == dg.DagsterEventType.RUN_START:
            run_start = entry.timestamp
        if event is None or event.step_key is None:
            continue
        key = event.asset_key.to_user_string() if event.asset_key else None
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and key in MILESTONES:
            reached[key] = entry.timestamp - (run_start or entry.timestamp)
        if event.event_type == dg.DagsterEventType.STEP_START:
            began[event.step_key] = entry.timestamp
        elif event.event_type in STEP_END:
            took[event.step_key] = entry.timestamp - began.get(event.step_key, entry.timestamp)
    return took, len(entries), reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--symbols", type=int, default=6)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()

    work, home = temporary_home("lsq-windowsteps-")
    (home / "dagster.yaml").write_text(instance_yaml(home))
    sim = start_sim_server(work / "data", symbols=args.symbols)
    try:
        end = window_start(now_ms()) - WINDOW_MS
        start = end - args.windows * WINDOW_MS
        base = sim.settings
        settings = base.model_copy(
            update={"data": base.data.model_copy(update={"partitions_start": format_day(start - DAY_MS)})}
        )
        with dg.DagsterInstance.from_config(str(home)) as instance:
            report = run_backfill(settings, start, end, instance, progress=False)
            if not report.success:
                raise SystemExit(f"the backfill of the benchmark's windows failed: {report.runs}")
            job = build_definitions(settings, {"lsq": LsqResource.for_settings(settings)}).get_job_def(WINDOW_JOB)
            measure(job, instance, [partition_key(start + i * WINDOW_MS) for i in range(args.windows)], args.runs)
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


def measure(job: dg.JobDefinition, instance: dg.DagsterInstance, keys: list[str], runs: int) -> None:
    per_step: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    events: list[int] = []
    milestones: dict[str, list[float]] = defaultdict(list)
    print(f"{runs} window runs of {job.name}, in process, on a persistent sqlite instance")
    print("run  partition         wall s  run s  ->bars s  ->targets s  steps  events  status")
    for i in range(runs):
        key = keys[i % len(keys)]
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
        wall = time.perf_counter() - started
        record = instance.get_run_record_by_id(result.run_id)
        assert record is not None
        took, count, reached = step_seconds(instance, result.run_id)
        for step, seconds in took.items():
            per_step[step].append(seconds)
        for name, seconds in reached.items():
            milestones[name].append(seconds)
        totals.append(wall)
        events.append(count)
        run_s = (record.end_time or 0.0) - (record.start_time or 0.0)
        status = record.dagster_run.status.value
        bars, targets = (reached.get(m, float("nan")) for m in MILESTONES)
        print(
            f"{i + 1:>3}  {key}  {wall:>6.2f}  {run_s:>5.2f}  {bars:>8.2f}  {targets:>11.2f}"
            f"  {len(took):>5}  {count:>6}  {status}"
        )
    print("step                                   median s  p95 s")
    for step, values in sorted(per_step.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"{step:<38} {statistics.median(values):>8.3f}  {percentile(values, 0.95):>5.3f}")
    print(f"steps per run: {len(per_step)}, events per run: median {statistics.median(events):.0f}")
    for name, values in milestones.items():
        print(
            f"run start -> {name} stored: median {statistics.median(values):.2f} s, "
            f"p95 {percentile(values, 0.95):.2f} s"
        )
    print(
        f"window run: median {statistics.median(totals):.2f} s, p95 {percentile(totals, 0.95):.2f} s, "
        f"{statistics.median(events):.0f} events"
    )


if __name__ == "__main__":
    main()
