"""`target_positions` materialisations -> one execution run per account and window; the `accounts` partitions.

Each tick (every 2 s asked; Dagster's daemon loops every 5 s):
- syncs the `accounts` dynamic partitions with the enabled accounts of the configured mode (those with
  credentials): new ones added, vanished ones removed (their history stays in the instance);
- reads the `target_positions` materialisations after its cursor (an event storage id) and requests, per window and
  enabled account, one run of `execution_job` with run_key `{account}:{window}`, so a window executes at most once
  per account whatever the sensor sees twice, partition = account, tags `lsq/account` and `lsq/target_window`.
Runs of one account go one at a time (the `lsq/account` tag is limited per value in dagster.yaml); a target that
has gone stale by the time its run starts is skipped and reported by the run (run_account's staleness guard).
Without a cursor (a new instance, or the sensor reset) only the newest window is considered, and only while its
target is fresh by the injected clock: history is never executed.
"""

from collections.abc import Sequence

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.timelabels import WINDOW_MS, parse_partition_key
from lsq_pipeline.defs.execution.assets import ACCOUNT_TAG, ACCOUNTS, WINDOW_TAG
from lsq_pipeline.defs.execution.jobs import EXECUTION_JOB
from lsq_pipeline.resources import LsqResource

TARGET_POSITIONS = dg.AssetKey("target_positions")
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
) -> tuple[list[str], str]:
    """(windows whose target_positions materialised after `cursor`, in order; the new cursor)."""
    if cursor is None:
        newest = instance.fetch_materializations(TARGET_POSITIONS, limit=1).records
        if not newest:
            return [], "0"
        key = newest[0].partition_key
        fresh = key is not None and now_ms - (parse_partition_key(key) + WINDOW_MS) <= max_age_ms
        return ([key] if fresh and key else []), str(newest[0].storage_id)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=TARGET_POSITIONS, after_storage_id=int(cursor)), limit=BATCH, ascending=True
    ).records
    windows: list[str] = []
    for record in records:
        if record.partition_key is not None and record.partition_key not in windows:
            windows.append(record.partition_key)
    return windows, str(records[-1].storage_id) if records else cursor


def execution_sensor_for(clock: Clock = SYSTEM_CLOCK) -> dg.SensorDefinition:
    """The fan-out sensor; `clock` says what "now" is (whether a first tick's newest target is still fresh)."""

    @dg.sensor(
        name="execution_sensor",
        job_name=EXECUTION_JOB,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One execution run per enabled account for each target_positions window (run key "
        "account:window); keeps the accounts partitions in step with the configuration.",
    )
    def execution_sensor(context: dg.SensorEvaluationContext, lsq: LsqResource) -> dg.SensorResult:
        settings = lsq.settings
        accounts = [a.account_id for a in settings.usable_accounts()[0]]
        changes = partition_changes(accounts, context.instance.get_dynamic_partitions(ACCOUNTS.name or ""))
        max_age_ms = settings.execution.executor.max_target_age_seconds * 1000
        windows, cursor = new_windows(context.instance, context.cursor, clock.now_ms(), max_age_ms)
        requests = execution_requests(windows, accounts)
        skip = None if requests or changes else f"no new target_positions window (cursor {cursor})"
        return dg.SensorResult(
            run_requests=requests, dynamic_partitions_requests=changes, cursor=cursor, skip_reason=skip
        )

    return execution_sensor
