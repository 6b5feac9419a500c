"""account_state_sensor: the watcher's snapshots -> `account_state` events and check evaluations, no run;
alert_sensor: failed checks and failed runs -> alerts (once, cool-down, "resolved").

Why a sensor and not a run: a snapshot arrives every minute per account, and a run costs a process start and
~2 s of Dagster bookkeeping (dagster-notes), 1,440 runs a day per account for a few numbers already on disk. A sensor
tick reads the store (milliseconds) and records runless events, which Dagster plots and checks like any
materialization.
"""

import json
from typing import Any

import dagster as dg
import polars as pl

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import AlertSettings, CheckThresholds
from lsq_pipeline.defs.monitoring.alerts import Alert, AlertBook, notify
from lsq_pipeline.defs.monitoring.assets import ACCOUNT_STATE, ACCOUNTS, state_metadata
from lsq_pipeline.defs.monitoring.checks import CHECKED_ACCOUNT_TAG, CHECKS_JOB, checks_request, evaluate
from lsq_pipeline.resources import LsqResource
from monitoring.state import account_view

STATE_INTERVAL_SECONDS = 15  # the watcher snapshots every minute: every full snapshot is seen
ALERT_INTERVAL_SECONDS = 15
BATCH = 500  # failed runs read per tick; more wait for the next tick
ACCOUNT_TAG = "lsq/account"


def account_state_sensor_for(thresholds: CheckThresholds, clock: Clock = SYSTEM_CLOCK) -> dg.SensorDefinition:
    """Per account and tick: if the store has a snapshot newer than the cursor's, one runless `account_state`
    materialization of it; the three checks judged, and when any level differs from the cursor's (or the account
    is new to it) one run of account_checks_job records them (a snapshot growing old turns `health` WARN without a
    new snapshot). A deviation not judged yet (converging) keeps the cursor's level, so it costs no run. The cursor
    is JSON {account: {"t": snapshot time_ms, "checks": {check: level}}}, so each snapshot is recorded once.
    Backlog after an outage is not replayed: the newest snapshot is recorded (the equity curve holds every minute).
    Accounts of the configuration missing from the `accounts` partitions are added (the execution domain removes
    vanished ones)."""

    @dg.sensor(
        name="account_state_sensor",
        job_name=CHECKS_JOB,
        minimum_interval_seconds=STATE_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records each account's newest stored snapshot as an account_state event (numbers plotted "
        "per account) with the deviation, exposure and health checks; launches no run.",
    )
    def account_state_sensor(context: dg.SensorEvaluationContext, lsq: LsqResource) -> dg.SensorResult:
        accounts = [a.account_id for a in lsq.settings.usable_accounts()[0]]
        existing = set(context.instance.get_dynamic_partitions(ACCOUNTS.name or ""))
        added = [a for a in accounts if a not in existing]
        cursor: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        now = clock.now_ms()
        events: list[dg.AssetMaterialization] = []
        requests: list[dg.RunRequest] = []
        for account in accounts:
            try:
                view = account_view(lsq.paths, account)
            except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
                context.log.warning(f"account {account}: its store could not be read ({type(exc).__name__}: {exc})")
                continue
            if view is None:
                continue
            seen = cursor.get(account, {})
            t = int(view.snapshot["time_ms"])
            fresh = t != seen.get("t")
            horizon = lsq.settings.execution.executor.algorithm_for(account).horizon_seconds
            held = seen.get("checks", {}).get("deviation", "OK")  # converging keeps the last judged level
            outcomes = evaluate(view, now, thresholds, horizon, held)
            if fresh:
                events.append(dg.AssetMaterialization(ACCOUNT_STATE, partition=account, metadata=state_metadata(view)))
            levels = {o.check: o.level for o in outcomes}
            if levels != seen.get("checks"):
                requests.append(checks_request(account, t, outcomes))
            cursor[account] = {"t": t, "checks": levels}
        return dg.SensorResult(
            asset_events=events,
            run_requests=requests,
            dynamic_partitions_requests=[ACCOUNTS.build_add_request(added)] if added else [],
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None if events or requests or added else "no new snapshot and no check changed",
        )

    return account_state_sensor


COMPLETED = ("SUCCEEDED", "FAILED")  # AssetCheckExecutionRecordStatus values of an evaluated check
HISTORY = 200  # newest executions of an account check read per tick (its runs happen on level changes only)


def check_states(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]
) -> list[tuple[str, str | None, dg.AssetCheckEvaluation]]:
    """(alert key, account, latest completed evaluation) per check: per account (partition) for the
    account_state checks, the latest over all partitions for the others (a window check failing, then passing on
    the next window, is one problem and its resolution)."""
    found: list[tuple[str, str | None, dg.AssetCheckEvaluation]] = []
    for key in check_keys:
        per_account = key.asset_key == ACCOUNT_STATE
        seen: set[str | None] = set()
        limit = HISTORY if per_account else 5  # the newest completed one is among the few newest
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=limit):
            account = record.partition if per_account else None
            event = record.event.dagster_event if record.event is not None else None
            if account in seen or record.status.value not in COMPLETED or event is None:
                continue
            seen.add(account)
            name = "/".join(p for p in (key.asset_key.to_user_string(), key.name, account) if p)
            found.append((name, account, event.event_specific_data))  # type: ignore[arg-type]
            if not per_account:
                break
    return found


def _check_alert(
    key: str, account: str | None, evaluation: dg.AssetCheckEvaluation, now_ms: int, book: AlertBook, cooldown_ms: float
) -> Alert | None:
    asset = evaluation.asset_key.to_user_string()
    partition = evaluation.partition
    severity = None if evaluation.passed else evaluation.severity.value
    where = f"{asset}[{partition}]" if partition else asset
    text = evaluation.description or ("passed" if evaluation.passed else "failed")
    return book.observe(
        key, severity, now_ms, cooldown_ms, f"{evaluation.check_name} on {where}", text, account=account,
        details={"asset": asset, "check": evaluation.check_name, "partition": partition},
    )  # fmt: skip


def _run_alert(
    instance: dg.DagsterInstance, record: dg.EventLogRecord, now_ms: int, book: AlertBook, cooldown_ms: float
) -> Alert | None:
    entry = record.event_log_entry
    run = instance.get_run_by_id(entry.run_id)
    job = run.job_name if run else "unknown job"
    account = (run.tags.get(ACCOUNT_TAG) or run.tags.get(CHECKED_ACCOUNT_TAG)) if run else None
    partition = run.tags.get("dagster/partition") if run else None
    key = "/".join(p for p in ("run", job, account) if p)
    text = entry.message or "the run failed"
    return book.event(
        key, now_ms, cooldown_ms, f"run of {job} failed" + (f" ({partition})" if partition else ""), text,
        account=account, details={"run_id": entry.run_id, "job": job, "partition": partition},
    )  # fmt: skip


def _failed_runs(instance: dg.DagsterInstance, after: int | None) -> list[dg.EventLogRecord]:
    if after is None:  # no cursor: only the newest, to start after it
        return list(instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records)
    records_filter = dg.RunStatusChangeRecordsFilter(dg.DagsterEventType.RUN_FAILURE, after_storage_id=after)
    return list(instance.fetch_run_status_changes(records_filter, limit=BATCH, ascending=True).records)


def alert_sensor_for(settings: AlertSettings, clock: Clock = SYSTEM_CLOCK) -> dg.SensorDefinition:
    """Each tick: every check's latest completed evaluation (per account for account_state) is compared with the
    alert book (data/monitoring/alerts.json), which says what is new; and the run failures after the cursor (an
    event storage id; a new cursor starts at the newest failure, history is never announced) are announced, one
    per job (and account) per cool-down. Cool-downs count on the injected clock."""
    cooldown_ms = settings.cooldown_seconds * 1000

    @dg.sensor(
        name="alert_sensor",
        minimum_interval_seconds=ALERT_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Failed checks and failed runs -> the log and the configured webhook: once per problem, "
        "a cool-down between repeats, one 'resolved' when a check passes again.",
    )
    def alert_sensor(context: dg.SensorEvaluationContext, lsq: LsqResource) -> dg.SensorResult:
        instance = context.instance
        now = clock.now_ms()
        book = AlertBook.load(lsq.paths.monitoring / "alerts.json")
        check_keys = sorted(context.repository_def.asset_graph.asset_check_keys) if context.repository_def else []
        alerts = [
            alert
            for key, account, evaluation in check_states(instance, check_keys)
            if (alert := _check_alert(key, account, evaluation, now, book, cooldown_ms)) is not None
        ]
        after = int(context.cursor) if context.cursor else None
        runs = _failed_runs(instance, after)
        if after is not None:
            alerts += [a for r in runs if (a := _run_alert(instance, r, now, book, cooldown_ms)) is not None]
        cursor = str(runs[-1].storage_id) if runs else (context.cursor or "0")
        if alerts:
            book.save()  # before sending: a crash mid-send loses an alert rather than repeating all of them
        for alert in alerts:
            context.log.info(alert.line())  # the tick's log in the UI
            notify(alert, settings)
        # A result without runs or events shows as a skipped tick in the UI whatever it did: say what was sent.
        sent = "; ".join(a.line() for a in alerts)
        return dg.SensorResult(
            cursor=cursor, skip_reason=f"sent {len(alerts)}: {sent}" if alerts else "nothing to announce"
        )

    return alert_sensor
