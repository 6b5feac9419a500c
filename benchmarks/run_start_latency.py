"""Run-start latency of real window runs under a real `dagster dev`: submit -> started and started -> finished.

    .venv/bin/python benchmarks/run_start_latency.py [--runs 12] [--storage sqlite|postgres|postgres-nullpool]
        [--symbols 5] [--launcher warm|default]

A temporary home: the simulator (`lsq sim serve`), `lsq backfill` of the last few closed windows (trades, universe,
bars), then `dagster dev` on the project's workspace and dagster.yaml. `--storage postgres` puts the instance on a
throw-away server from tests/postgres_server.py with the project's pooled storage (lsq_pipeline.postgres_storage);
`postgres-nullpool` with dagster-postgres' own, a new connection per write. Each run is submitted exactly as
`lsq trigger` submits it (GraphQL, the window job, the live path's tags) and awaited before the next one; the times
are the run records' own (created, started, ended). `--launcher warm` (the project's dagster.yaml) starts the warm
run worker beside `dagster dev`, as `lsq run` does; `--launcher default` drops the run_launcher section (Dagster's
DefaultRunLauncher: a `dagster api execute_run` process per run). Each run's start is broken down from its events:
queued (submitted -> RUN_STARTING: the coordinator's dequeue), process (-> "Started process for run": a new
process and its imports, or a fork), init (-> RUN_START). Not part of `make bench` (it starts a whole Dagster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # postgres_server, shared with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.timing, when run as a script

from benchmarks.timing import percentile, temporary_home
from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import HOUR_MS, WINDOW_MS, format_day, now_ms, partition_key, to_datetime, window_start
from lsq_pipeline.cli import instance_yaml as project_instance_yaml
from lsq_pipeline.defs.market.claims import try_claim
from lsq_pipeline.defs.market.trigger import graphql_submit

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = 3
DEADLINE_S = 180.0


def wait_http(url: str, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {deadline_s:.0f} s")


@contextlib.contextmanager
def started(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """A child in its own process group, stopped (with its children) on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def storage(kind: str) -> Iterator[dict[str, object] | None]:
    if kind == "sqlite":
        yield None
        return
    from postgres_server import postgres_server

    with postgres_server() as server:
        yield server.storage_config(server.create_database("dagster"), pooled=kind == "postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--storage", choices=("sqlite", "postgres", "postgres-nullpool"), default="sqlite")
    parser.add_argument("--symbols", type=int, default=5)
    parser.add_argument("--launcher", choices=("warm", "default"), default="warm")
    parser.add_argument("--sim-port", type=int, default=8797)
    parser.add_argument("--dagster-port", type=int, default=3097)
    args = parser.parse_args()

    work, home = temporary_home("lsq-runstart-")
    sim = f"127.0.0.1:{args.sim_port}"
    end = window_start(now_ms()) - WINDOW_MS
    start = end - WINDOWS * WINDOW_MS
    config = {
        "data": {"data_dir": str(work / "data"), "partitions_start": format_day(start - HOUR_MS * 24)},
        "binance": {"mock": {"rest_url": f"http://{sim}", "ws_url": f"ws://{sim}", "data_url": f"http://{sim}/data"}},
    }
    (work / "lsq.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "LSQ_CONFIG": str(work / "lsq.yaml"), "DAGSTER_HOME": str(home)}
    bin_dir = Path(sys.executable).parent
    try:
        with storage(args.storage) as pg, contextlib.ExitStack() as stack:
            instance_yaml = yaml.safe_load(project_instance_yaml(home))
            if pg is not None:
                instance_yaml["storage"] = pg
            if args.launcher == "default":
                del instance_yaml["run_launcher"]
            (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
            sim_cmd = [str(bin_dir / "lsq"), "sim", "serve", "--port", str(args.sim_port)]
            stack.enter_context(started([*sim_cmd, "--symbols", str(args.symbols)], env, work / "sim.log"))
            wait_http(f"http://{sim}/fapi/v1/ping", 60)
            fmt = "%Y-%m-%dT%H:%M"
            backfill = [
                "backfill",
                "--start",
                to_datetime(start).strftime(fmt),
                "--end",
                to_datetime(end).strftime(fmt),
            ]
            subprocess.run([str(bin_dir / "lsq"), *backfill], env=env, cwd=ROOT, check=True, capture_output=True)
            if args.launcher == "warm":
                stack.enter_context(started([str(bin_dir / "lsq"), "warm-worker"], env, work / "worker.log"))
            dagster = [str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(args.dagster_port)]
            stack.enter_context(started([*dagster, "-w", "workspace.yaml"], env, work / "dagster.log"))
            url = f"http://127.0.0.1:{args.dagster_port}"
            wait_http(f"{url}/server_info", DEADLINE_S)
            windows = [start + i * WINDOW_MS for i in range(WINDOWS)]
            seal_and_claim(DataPaths(work / "data"), windows)
            measure(url, home, [partition_key(w) for w in windows], args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def seal_and_claim(paths: DataPaths, windows: list[int]) -> None:
    """What the collector and `lsq trigger` leave before the trigger submits a window: its marker and the trigger's
    claim (the run's window assets check both: lsq_pipeline.defs.market.seal)."""
    for window in windows:
        marker = {"window_start": window, "window_end": window + WINDOW_MS, "rows": 0, "symbols": []}
        atomic_write_text(paths.marker_file(window), json.dumps(marker))
        try_claim(paths, window, "trigger", now_ms())


def phases(instance: dg.DagsterInstance, run_id: str, submitted: float) -> tuple[float, float, float]:
    """(queued, process, init) seconds of a run's start, from its events' timestamps."""
    starting = process = began = submitted
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.RUN_STARTING:
            starting = entry.timestamp
        elif event.event_type == dg.DagsterEventType.ENGINE_EVENT and "Started process for run" in entry.message:
            process = entry.timestamp
        elif event.event_type == dg.DagsterEventType.RUN_START:
            began = entry.timestamp
    return starting - submitted, process - starting, began - process


def measure(url: str, home: Path, keys: list[str], args: argparse.Namespace) -> None:
    submit = graphql_submit(url, timeout_s=60)
    to_start: list[float] = []
    to_end: list[float] = []
    total: list[float] = []
    parts: list[tuple[float, float, float]] = []
    print(f"storage {args.storage}, launcher {args.launcher}: {args.runs} window runs, one after another")
    print("run  partition         submit->started s  (queued  process  init)  started->finished s  status")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for i in range(args.runs):
            key = keys[i % len(keys)]
            submitted = time.time()
            run_id = submit(key)
            deadline = time.monotonic() + DEADLINE_S
            while (record := instance.get_run_record_by_id(run_id)) is None or not record.dagster_run.is_finished:
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run_id} did not finish within {DEADLINE_S:.0f} s")
                time.sleep(0.05)
            began, ended = record.start_time or submitted, record.end_time or time.time()
            to_start.append(began - submitted)
            to_end.append(ended - began)
            total.append(ended - submitted)
            parts.append(phases(instance, run_id, submitted))
            queued, process, init = parts[-1]
            status = record.dagster_run.status.value
            print(
                f"{i + 1:>3}  {key}  {to_start[-1]:>17.2f}  ({queued:>6.2f}  {process:>7.2f}  {init:>4.2f})"
                f"  {to_end[-1]:>19.2f}  {status}"
            )
    medians = [statistics.median(p[j] for p in parts) for j in range(3)]
    print("start phases: median queued {:.2f} s, process {:.2f} s, init {:.2f} s".format(*medians))
    print(f"submit -> started: median {statistics.median(to_start):.2f} s, p95 {percentile(to_start, 0.95):.2f} s")
    print(f"started -> finished: median {statistics.median(to_end):.2f} s, p95 {percentile(to_end, 0.95):.2f} s")
    print(f"submit -> finished: median {statistics.median(total):.2f} s, p95 {percentile(total, 0.95):.2f} s")


if __name__ == "__main__":
    main()
