"""`lsq backfill`: trades and every pipeline asset for a time range, recorded on the Dagster instance."""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from collectors.history import parse_utc
from lsq.config import PROJECT_ROOT, load_config
from lsq.paths import DataPaths
from lsq.timelabels import now_ms
from lsq_pipeline import warm_worker

if TYPE_CHECKING:  # Dagster and the assets load only when the command runs, not for every `lsq --help`
    import dagster as dg

    from lsq_pipeline.backfill import BackfillReport

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
# Dagster's automation reads each updated partition's materialisation time up to this many partitions per asset,
# else warns ("N updated partitions, exceeding the maximum of 100") and uses the tick's time for all of them: after
# every backfill, for bars_5m and the rollups. The times come from one query per asset, so allow a year of windows.
AUTOMATION_PARTITIONS = {"DAGSTER_MAX_PARTITIONS_FOR_DA_TIMESTAMP_FETCH": str(366 * 288)}


# The storage section of the project's dagster.yaml locates the sqlite files by the environment, which a process
# opening a home by its path (DagsterInstance.from_config, `lsq run` preparing it) may not have set.
HOME_FROM_ENV = "base_dir:\n        env: DAGSTER_HOME"


def instance_yaml(home: Path) -> str:
    """The project's dagster.yaml as the instance in `home` uses it: the storage's directory written in."""
    text = (PROJECT_ROOT / "dagster.yaml").read_text()
    return text.replace(HOME_FROM_ENV, f"base_dir: {json.dumps(str(home.resolve()))}")


def dagster_env(home: Path | None = None) -> dict[str, str]:
    """DAGSTER_HOME (absolute) for `dagster dev` and our commands: `home`, else $DAGSTER_HOME, else .dagster_home in
    the project; with the instance-wide settings Dagster takes from the environment (AUTOMATION_PARTITIONS).

    The project's home is kept in step with the project's dagster.yaml; a home the operator chose keeps its own
    dagster.yaml (ours is only written there when it has none). Either way as `instance_yaml` renders it.
    """
    chosen = home or (Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else None)
    target_home = (chosen or DEFAULT_DAGSTER_HOME).resolve()
    target_home.mkdir(parents=True, exist_ok=True)
    target = target_home / "dagster.yaml"
    rendered = instance_yaml(target_home)
    if not target.exists() or (chosen is None and target.read_text() != rendered):
        target.write_text(rendered)
    return {"DAGSTER_HOME": str(target_home), **AUTOMATION_PARTITIONS}


def prepare_instance(env: dict[str, str]) -> None:
    """Create the instance's storage under env's DAGSTER_HOME once, before several processes open it at the same time
    (on a fresh home they would race to create the same sqlite tables: "table runs already exists")."""
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]):
        pass


def _instance() -> "dg.DagsterInstance":
    """The persistent instance: $DAGSTER_HOME when set, else the project's .dagster_home."""
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        os.environ.update(dagster_env())
    return dg.DagsterInstance.get()


def _backfill_instance() -> "dg.DagsterInstance":
    """The persistent instance as `_instance`, writing range runs' events in batches (lsq_pipeline.storage)."""
    from lsq_pipeline.storage import backfill_instance

    if not os.environ.get("DAGSTER_HOME"):
        os.environ.update(dagster_env())
    return backfill_instance(Path(os.environ["DAGSTER_HOME"]))


def _print_report(report: "BackfillReport") -> None:
    failed = [name for name, ok in report.runs.items() if not ok]
    print(
        f"lsq backfill: {report.windows} windows, {len(report.symbols)} symbols, {report.trades_written} new trades; "
        + ", ".join(
            f"{k} {v:.1f} s (cpu {report.cpu_seconds.get(k, 0.0):.1f} s)"
            for k, v in report.seconds.items()
            if v >= 0.05
        )
    )
    if failed:
        print(f"lsq backfill: failed runs: {', '.join(failed)} (see the Dagster UI for their logs)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from lsq_pipeline.backfill import history_range, recent_range, run_backfill

    settings = load_config(args.config)
    if args.history:
        start, end = history_range(settings.strategy.history_days, now_ms())
    elif args.recent:
        start, end = recent_range(DataPaths(settings.data_dir), now_ms())
    elif args.start is None:
        print("lsq backfill: give --start (and optionally --end), --recent or --history", file=sys.stderr)
        return 2
    else:
        start, end = args.start, args.end if args.end is not None else now_ms()
    if end <= start:
        print(f"lsq backfill: nothing to do: the range ends at or before it starts ({start} >= {end})")
        return 0 if args.recent else 2
    try:
        with _backfill_instance() as instance:
            report = run_backfill(settings, start, end, instance, import_trades=not args.no_trades)
    except ValueError as exc:
        print(f"lsq backfill: {exc}", file=sys.stderr)
        return 2
    _print_report(report)
    _hint_history(settings.strategy.history_days, DataPaths(settings.data_dir))
    return 0 if report.success else 1


def _hint_history(history_days: int, paths: DataPaths) -> None:
    """Say so when the stored bars cover fewer days than the calculators ask for (a fresh start)."""
    from lsq.stores.panels import stored_days

    days = len(stored_days(paths, "bars"))
    if days < history_days:
        print(
            f"lsq backfill: bars are stored for {days} of the {history_days} days strategy.history_days asks for; "
            "run `lsq backfill --history` to fill them"
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "backfill",
        help="import trades for a UTC range and materialise bars, stats, rollups, premium index and funding",
        description="Ranges are UTC, start inclusive, end exclusive, clamped to closed 5-minute windows.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--start", type=parse_utc, help="YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
    p.add_argument("--end", type=parse_utc, help="YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC, default: now)")
    which.add_argument(
        "--history",
        action="store_true",
        help="fill the history the strategy asks for: strategy.history_days back from now (what the factor assets "
        "say to run when their history is short)",
    )
    which.add_argument(
        "--recent",
        action="store_true",
        help="fill from the last stored window (at most since yesterday 00:00 UTC) to now: what a fresh start needs",
    )
    p.add_argument("--no-trades", action="store_true", help="use the trades already stored; import nothing")
    p.set_defaults(func=run)
    t = subparsers.add_parser(
        "trigger",
        help="launch each fresh sealed window's run the moment its marker appears, and each account's "
        "execution run the moment its target file does",
    )
    t.add_argument("--dagster-url", default="http://127.0.0.1:3000", help="the Dagster webserver (default %(default)s)")
    t.set_defaults(func=run_trigger)
    w = subparsers.add_parser("warm-worker", help="fork window runs from a process that has imported the code location")
    warm_worker.add_arguments(w)
    w.set_defaults(func=warm_worker.run)


def run_trigger(args: argparse.Namespace) -> int:
    from lsq_pipeline.defs.execution.lane import ExecutionLane, graphql_execution_submit
    from lsq_pipeline.defs.market.claims import window_done
    from lsq_pipeline.defs.market.trigger import MarkerTrigger, graphql_submit, watch
    from lsq_pipeline.submit import graphql_submitter

    settings = load_config(args.config)
    paths = DataPaths(settings.data_dir)
    accounts = [a.account_id for a in settings.usable_accounts()[0]]
    max_age_ms = int(settings.execution.executor.max_target_age_seconds * 1000)
    with _instance() as instance:
        windows = MarkerTrigger(paths, graphql_submit(args.dagster_url), lambda key: window_done(instance, key))
        executions = ExecutionLane(
            paths, accounts, graphql_execution_submit(graphql_submitter(args.dagster_url)), max_age_ms
        )
        logging.getLogger("lsq.trigger").info(
            "watching %s for sealed windows and %s for the targets of %s", paths.markers, paths.positions, accounts
        )
        watch([windows, executions])
    return 0
