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
from lsq_pipeline.defs.monitoring.checks import evaluate
from lsq_pipeline.resources import LsqResource
from monitoring.state import account_view

STATE_INTERVAL_SECONDS = 15  # the watcher snapshots every minute: every full snapshot is seen
ALERT_INTERVAL_SECONDS = 15
BATCH = 500  # events read per tick and kind; more wait for the next tick
ACCOUNT_TAG = "lsq/account"


def account_state_sensor_for(thresholds: CheckThresholds, clock: Clock = SYSTEM_CLOCK) -> dg.SensorDefinition:
    """Per account and tick: if the store has a snapshot newer than the cursor's, one `account_state`
    materialization of it and the three checks' evaluations; else the checks only where their level changed
    (a snapshot growing old turns `health` WARN without a new snapshot). The cursor is JSON
    {account: {"t": snapshot time_ms, "checks": {check: level}}}, so each snapshot is recorded once. Backlog after
    an outage is not replayed: the newest snapshot is recorded (the equity curve holds every minute). Accounts of
    the configuration missing from the `accounts` partitions are added (the execution domain removes vanished ones)."""

    @dg.sensor(
        name="account_state_sensor",
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
        events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
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
            outcomes = evaluate(view, now, thresholds)
            if fresh:
                events.append(dg.AssetMaterialization(ACCOUNT_STATE, partition=account, metadata=state_metadata(view)))
            before = seen.get("checks", {})
            events.extend(o.evaluation(account) for o in outcomes if fresh or before.get(o.check) != o.level)
            cursor[account] = {"t": t, "checks": {o.check: o.level for o in outcomes}}
        return dg.SensorResult(
            asset_events=events,
            dynamic_partitions_requests=[ACCOUNTS.build_add_request(added)] if added else [],
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None if events or added else "no new snapshot and no check changed",
        )

    return account_state_sensor


def _check_alert(record: dg.EventLogRecord, now_ms: int, book: AlertBook, cooldown_ms: float) -> Alert | None:
    evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
    asset = evaluation.asset_key.to_user_string()
    partition = evaluation.partition
    account = partition if evaluation.asset_key == ACCOUNT_STATE else None
    key = "/".join(p for p in (asset, evaluation.check_name, account) if p)
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
    account = run.tags.get(ACCOUNT_TAG) if run else None
    partition = run.tags.get("dagster/partition") if run else None
    key = "/".join(p for p in ("run", job, account) if p)
    text = entry.message or "the run failed"
    return book.event(
        key, now_ms, cooldown_ms, f"run of {job} failed" + (f" ({partition})" if partition else ""), text,
        account=account, details={"run_id": entry.run_id, "job": job, "partition": partition},
    )  # fmt: skip


def _newest_storage_id(instance: dg.DagsterInstance, kind: dg.DagsterEventType) -> int:
    newest = instance.get_event_records(dg.EventRecordsFilter(event_type=kind), limit=1, ascending=False)
    return newest[0].storage_id if newest else 0


def alert_sensor_for(settings: AlertSettings, clock: Clock = SYSTEM_CLOCK) -> dg.SensorDefinition:
    """Reads the check evaluations and run failures after its cursor (event storage ids, JSON {"checks": id,
    "runs": id}; a new cursor starts at the newest, history is never announced) and sends what the alert book
    (data/monitoring/alerts.json) says is new. Cool-downs count on the injected clock."""
    cooldown_ms = settings.cooldown_seconds * 1000
    kinds = {"checks": dg.DagsterEventType.ASSET_CHECK_EVALUATION, "runs": dg.DagsterEventType.RUN_FAILURE}

    @dg.sensor(
        name="alert_sensor",
        minimum_interval_seconds=ALERT_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Failed checks and failed runs -> the log and the configured webhook: once per problem, "
        "a cool-down between repeats, one 'resolved' when a check passes again.",
    )
    def alert_sensor(context: dg.SensorEvaluationContext, lsq: LsqResource) -> dg.SensorResult:
        instance = context.instance
        if not context.cursor:
            start = {name: _newest_storage_id(instance, kind) for name, kind in kinds.items()}
            return dg.SensorResult(cursor=json.dumps(start), skip_reason="started: alerting from now on")
        cursor: dict[str, int] = json.loads(context.cursor)
        now = clock.now_ms()
        book = AlertBook.load(lsq.paths.monitoring / "alerts.json")
        alerts: list[Alert] = []
        for name, kind in kinds.items():
            records = instance.get_event_records(
                dg.EventRecordsFilter(event_type=kind, after_cursor=cursor[name]), limit=BATCH, ascending=True
            )
            for record in records:
                if name == "checks":
                    alert = _check_alert(record, now, book, cooldown_ms)
                else:
                    alert = _run_alert(instance, record, now, book, cooldown_ms)
                if alert is not None:
                    alerts.append(alert)
            if records:
                cursor[name] = records[-1].storage_id
        if alerts:
            book.save()  # before sending: a crash mid-send loses an alert rather than repeating all of them
        for alert in alerts:
            notify(alert, settings, context.log)
        return dg.SensorResult(cursor=json.dumps(cursor), skip_reason=None if alerts else "nothing to announce")

    return alert_sensor
