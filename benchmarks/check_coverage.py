"""Asset check results of a running (or stopped) `make run`, per check: backfilled vs live windows, by status.

Tells whether the Checks tab is truthful: every window of a backfill and every live window should have a real result
(SUCCEEDED or FAILED), none left PLANNED (shown as "Skipped") beside a result without a partition.

    .venv/bin/python benchmarks/check_coverage.py    # the project's .dagster_home, or $DAGSTER_HOME
"""

from __future__ import annotations

import os
from collections import Counter

import dagster as dg

from lsq_pipeline.cli import dagster_env


def run_kind(tags: dict[str, str]) -> str:
    if tags.get("lsq/backfill") or tags.get("dagster/backfill"):
        return "backfill"
    return "live" if tags.get("lsq/window") else "other"


def main() -> None:
    from lsq_pipeline.definitions import defs

    instance = dg.DagsterInstance.from_config(os.environ.get("DAGSTER_HOME") or dagster_env()["DAGSTER_HOME"])
    runs = {r.run_id: r for r in instance.get_runs()}
    print(
        "runs:",
        ", ".join(
            f"{job} {status.value}: {n}"
            for (job, status), n in sorted(Counter((r.job_name, r.status) for r in runs.values()).items(), key=str)
        ),
    )
    for key in sorted(defs.resolve_asset_graph().asset_check_keys, key=str):
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=1_000_000)
        counts = Counter(
            (
                run_kind(dict(runs[r.run_id].tags) if r.run_id in runs else {}),
                "window" if r.partition else "range summary",
                r.status.value,
            )
            for r in history
        )
        shown = ", ".join(f"{kind} {scope} {status}={n}" for (kind, scope, status), n in sorted(counts.items()))
        print(f"{key.asset_key.to_user_string()}:{key.name}: {shown or 'no evaluation'}")


if __name__ == "__main__":
    main()
