"""What one Dagster event costs on the instance's sqlite storage: Dagster's default against the pooled engines of
lsq_pipeline.storage, the same files and rows.

    .venv/bin/python benchmarks/bench_event_writes.py [--events 200] [--runs 5]

For each storage, a fresh instance in a temporary directory: `--events` partitioned materialisations reported one by
one, then a small run (one asset, four checks: ~25 events) through `materialize`, repeated; per event in ms and per
run in s (median).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from benchmarks.timing import wall_runs
from lsq_pipeline.storage import pooled_storage_config

CHECKS = [dg.AssetCheckSpec(f"check_{i}", asset="window") for i in range(4)]
FIVE_MINUTE = dg.TimeWindowPartitionsDefinition(
    start="2026-01-01-00:00", cron_schedule="*/5 * * * *", fmt="%Y-%m-%d-%H:%M", timezone="UTC"
)


@dg.asset(partitions_def=FIVE_MINUTE, check_specs=CHECKS)
def window(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("window %s", context.partition_key)
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name=c.name, passed=True) for c in CHECKS])


def per_event_ms(instance: dg.DagsterInstance, n: int) -> float:
    instance.report_runless_asset_event(dg.AssetMaterialization("series", partition="-1"))  # the asset exists
    start = time.perf_counter()
    for i in range(n):
        instance.report_runless_asset_event(dg.AssetMaterialization("series", partition=str(i)))
    return (time.perf_counter() - start) / n * 1000


def measure(home: Path, events: int, runs: int) -> str:
    keys = iter(FIVE_MINUTE.get_partition_keys()[: runs + 1])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        mats = per_event_ms(instance, events)
        times, result = wall_runs(lambda: dg.materialize([window], instance=instance, partition_key=next(keys)), runs)
        n = len(instance.all_logs(result.run_id))
    run_s = statistics.median(times)
    return f"materialisation {mats:.2f} ms/event, run of {n} events {run_s:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        default, pooled = Path(tmp) / "default", Path(tmp) / "pooled"
        default.mkdir()
        pooled.mkdir()
        (pooled / "dagster.yaml").write_text(yaml.safe_dump({"storage": pooled_storage_config(pooled)}))
        print(f"Dagster's sqlite storage:  {measure(default, args.events, args.runs)}")
        print(f"pooled sqlite storage:     {measure(pooled, args.events, args.runs)}")


if __name__ == "__main__":
    main()
