"""`target_positions` materialisations -> one execution run per account and window; the `accounts` partitions.

Each tick (every 2 s asked; Dagster's daemon loops every 5 s):
- syncs the `accounts` dynamic partitions with the enabled accounts of the configured mode (those with
  credentials): new ones added, vanished ones removed (their history stays in the instance);
- reads the `target_positions` materialisations after its cursor (an event storage id) and requests, per window and
  enabled account, one run of `execution_job` with run_key `{account}:{window}`, so a window executes at most once
  per account whatever the sensor sees twice, partition = account, tags `lsq/account` and `lsq/target_window`;
  except where `lsq trigger`'s execution lane (lsq_pipeline.defs.execution.lane) claimed the (account, window)
  first: left to it once its run exists, waited for (the cursor held) while the claim is young, taken over after
  the grace period.
Runs of one account go one at a time (the `lsq/account` tag is limited per value in dagster.yaml); a target that
has gone stale by the time its run starts is skipped and reported by the run (run_account's staleness guard).
Without a cursor (a new instance, or the sensor reset) only the newest window is considered, and only while its
target is fresh by the injected clock: history is never executed.
"""

from collections.abc import Callable, Sequence
from functools import partial

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.paths import DataPaths
from lsq.timelabels import WINDOW_MS, parse_partition_key
from lsq_pipeline.defs.execution.assets import ACCOUNT_TAG, ACCOUNTS, WINDOW_TAG
from lsq_pipeline.defs.execution.jobs import EXECUTION_JOB
from lsq_pipeline.defs.market.claims import sensor_decision
from lsq_pipeline.resources import LsqResource

TARGET_POSITIONS = dg.AssetKey("target_positions")
SENSOR_NAME = "execution_sensor"
SENSOR_INTERVAL_SECONDS = 2
BATCH = 100  # materialisations read per tick; more wait for the next tick


def run_key(account_id: str, window_key: str) -> str:
    return f"{account_id}:{window_key}"


def execution_requests(windows: Sequence[str], accounts: Sequence[str]) -> list[dg.RunRequest]:
    """One run per (window, account), windows in order: an account's older window runs (and is superseded or
    stale) before its newer one."""
    return [
        dg.RunRequest(
            run_key=run_key(account, window), partition_key=account, tags={ACCOUNT_TAG: account, WINDOW_TAG: window}
        )
        for window in windows
        for account in accounts
    ]


def partition_changes(
    wanted: Sequence[str], existing: Sequence[str]
) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
    added = [a for a in wanted if a not in existing]
    removed = [a for a in existing if a not in wanted]
    changes: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if added:
        changes.append(ACCOUNTS.build_add_request(added))
    if removed:
        changes.append(ACCOUNTS.build_delete_request(removed))
    return changes


def new_windows(
    instance: dg.DagsterInstance, cursor: str | None, now_ms: int, max_age_ms: float
) -> list[tuple[str, str | None]]:
    """(window, cursor once it is handled) for each window whose target_positions materialised after `cursor`, in
    order; the cursor of a window is the storage id of its record (or, without a cursor, the newest record's)."""
    if cursor is None:
        newest = instance.fetch_materializations(TARGET_POSITIONS, limit=1).records
        if not newest:
            return [("", "0")]
        key = newest[0].partition_key
        fresh = key is not None and now_ms - (parse_partition_key(key) + WINDOW_MS) <= max_age_ms
        return [(key if fresh and key else "", str(newest[0].storage_id))]
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=TARGET_POSITIONS, after_storage_id=int(cursor)), limit=BATCH, ascending=True
    ).records
    return [(r.partition_key or "", str(r.storage_id)) for r in records]


def execution_run_exists(instance: dg.DagsterInstance, account_id: str, window_key: str) -> bool:
    """Whether an execution run of the account and window (the lane's or the sensor's, any status) exists."""
    runs = dg.RunsFilter(tags={ACCOUNT_TAG: account_id, WINDOW_TAG: window_key})
    return bool(instance.get_run_records(filters=runs, limit=1))


def claimed_requests(
    paths: DataPaths,
    windows: Sequence[tuple[str, str | None]],
    accounts: Sequence[str],
    now_ms: int,
    has_run: Callable[[str, str], bool],
    cursor: str | None,
) -> tuple[list[dg.RunRequest], str | None]:
    """(the runs the sensor requests, its new cursor): per window in order, per account, what the claim says
    (lsq_pipeline.defs.market.claims.sensor_decision). A lane claim without a run that is still young holds the
    cursor before its window, whose other accounts are requested (again, by run key, on the next tick)."""
    requests: list[dg.RunRequest] = []
    done: set[str] = set()
    for window, after in windows:
        if window and window not in done:
            decisions = {
                a: sensor_decision(
                    paths.execution_claim(a, parse_partition_key(window)), now_ms, partial(has_run, a, window)
                )
                for a in accounts
            }
            requests += execution_requests([window], [a for a in accounts if decisions[a] == "request"])
            if "wait" in decisions.values():
                return requests, cursor
            done.add(window)
        cursor = after
    return requests, cursor


def execution_sensor_for(clock: Clock = SYSTEM_CLOCK) -> dg.SensorDefinition:
    """The fan-out sensor; `clock` says what "now" is (whether a first tick's newest target is still fresh)."""

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=EXECUTION_JOB,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One execution run per enabled account for each target_positions window (run key "
        "account:window) that `lsq trigger` has not launched; keeps the accounts partitions in step with the "
        "configuration.",
    )
    def execution_sensor(context: dg.SensorEvaluationContext, lsq: LsqResource) -> dg.SensorResult:
        settings = lsq.settings
        accounts = [a.account_id for a in settings.usable_accounts()[0]]
        changes = partition_changes(accounts, context.instance.get_dynamic_partitions(ACCOUNTS.name or ""))
        max_age_ms = settings.execution.executor.max_target_age_seconds * 1000
        now = clock.now_ms()
        windows = new_windows(context.instance, context.cursor, now, max_age_ms)
        requests, cursor = claimed_requests(
            lsq.paths, windows, accounts, now, partial(execution_run_exists, context.instance), context.cursor
        )
        skip = None if requests or changes else f"no new target_positions window (cursor {cursor})"
        return dg.SensorResult(
            run_requests=requests, dynamic_partitions_requests=changes, cursor=cursor, skip_reason=skip
        )

    return execution_sensor
