"""What Dagster pays to resolve a factor window's upstream partitions: the window's own (the lineage factors declare,
lsq_pipeline.defs.factors.assets.factor_deps) against the trailing 30 days of 5-minute windows they replaced.

    .venv/bin/python -m benchmarks partition_mapping
    PYTHONPATH=. .venv/bin/python benchmarks/bench_partition_mapping.py [--days 30] [--runs 5]

Both on the project's 5-minute partitions (lsq_pipeline.partitions.five_minute), for the last closed window of a
partition set started `--days` + 2 days ago; median wall seconds of `--runs` resolutions, and of listing the keys.
"""

from __future__ import annotations

import argparse
import statistics
from datetime import UTC, datetime, timedelta

import dagster as dg

from benchmarks.timing import wall_runs
from lsq.timelabels import WINDOWS_PER_DAY
from lsq_pipeline.partitions import five_minute


def resolve_seconds(mapping: dg.TimeWindowPartitionMapping, days: int, runs: int) -> tuple[float, float, int]:
    """(resolve, list keys, number of upstream keys) for the newest closed window, medians over `runs`."""
    now = datetime.now(UTC)
    start = (now - timedelta(days=days + 2)).strftime("%Y-%m-%d")
    partitions = five_minute(start)
    key = partitions.get_partition_keys(current_time=now)[-2]
    downstream = partitions.subset_with_partition_keys([key])

    def resolve() -> dg.PartitionsSubset:
        result = mapping.get_upstream_mapped_partitions_result_for_partitions(
            downstream, partitions, partitions, current_time=now
        )
        return result.partitions_subset

    resolve_times, subset = wall_runs(resolve, runs)
    list_times, keys = wall_runs(lambda: list(subset.get_partition_keys()), runs)
    return statistics.median(resolve_times), statistics.median(list_times), len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trailing = dg.TimeWindowPartitionMapping(start_offset=-(args.days * WINDOWS_PER_DAY - 1))
    for name, mapping in (
        ("the window's own", dg.TimeWindowPartitionMapping()),
        (f"trailing {args.days} days", trailing),
    ):
        resolve_s, list_s, n = resolve_seconds(mapping, args.days, args.runs)
        print(f"{name}: {n} upstream partitions, resolve {resolve_s:.3f} s, list keys {list_s:.3f} s (median)")


if __name__ == "__main__":
    main()
