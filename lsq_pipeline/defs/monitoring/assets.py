"""`account_state` (one partition per account, recorded by a sensor from the watcher's snapshots) and
`strategy_report` (one partition per account and UTC day, written by a run), with the report's job and schedule."""

from datetime import timedelta

import dagster as dg

from lsq.timelabels import DAY_MS, parse_day
from lsq_pipeline.resources import LsqResource
from monitoring.report import account_report
from monitoring.state import AccountView

GROUP = "monitoring"
ACCOUNT_STATE = dg.AssetKey("account_state")
STRATEGY_REPORT = dg.AssetKey("strategy_report")
# The same partition set as the execution domain's (a dynamic partitions definition is its name).
ACCOUNTS = dg.DynamicPartitionsDefinition(name="accounts")
REPORT_JOB = "strategy_report_job"
REPORT_TIME_UTC = "10 0 * * *"  # 00:10 UTC: yesterday's income and last snapshots are stored by then

account_state = dg.AssetSpec(
    ACCOUNT_STATE,
    partitions_def=ACCOUNTS,
    group_name=GROUP,
    kinds={"parquet"},
    description="Each account's newest snapshot (equity, exposure, health, deviation, drawdown), recorded by "
    "account_state_sensor from the watcher's store (`lsq watch`): no run is launched for it.",
)


def state_metadata(view: AccountView) -> dict[str, dg.MetadataValue]:
    """The view's numbers (plotted per partition by the UI) and when the snapshot was taken."""
    meta: dict[str, dg.MetadataValue] = {k: dg.MetadataValue.float(v) for k, v in view.metadata().items()}
    meta["positions"] = dg.MetadataValue.int(view.exposure.positions)
    meta["snapshot_time"] = dg.MetadataValue.timestamp(int(view.snapshot["time_ms"]) / 1000)
    if view.target_ms is not None:
        meta["target_time"] = dg.MetadataValue.timestamp(view.target_ms / 1000)
    return meta


def report_partitions(start_day: str) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {"account": ACCOUNTS, "day": dg.DailyPartitionsDefinition(start_date=start_day, timezone="UTC")}
    )


# Headline figures of the day, as numbers for the UI's plots (the report keeps them exact, as strings).
HEADLINES = ("turnover", "fees", "funding", "price_pnl", "total_pnl", "transfers")


def strategy_report_asset(partitions: dg.MultiPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=STRATEGY_REPORT,
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"json", "csv"},
        description="One account's strategy report for one UTC day, from its fills, income and snapshots: "
        "data/monitoring/{account}/reports/{day}/report.json and a CSV per table.",
    )
    def strategy_report(context: dg.AssetExecutionContext, lsq: LsqResource) -> dg.MaterializeResult:
        key = context.partition_key
        if not isinstance(key, dg.MultiPartitionKey):
            raise TypeError(f"strategy_report runs on (account, day) partitions, not {key!r}")
        keys = key.keys_by_dimension
        account, day = keys["account"], keys["day"]
        start = parse_day(day)
        report = account_report(lsq.paths, account, start, start + DAY_MS)
        directory = lsq.paths.monitoring_account(account) / "reports" / day
        written = report.write(directory)
        totals = report.totals
        meta: dict[str, dg.MetadataValue] = {k: dg.MetadataValue.float(float(totals[k])) for k in HEADLINES}
        meta["fills"] = dg.MetadataValue.int(int(totals["fills"]))
        meta["windows"] = dg.MetadataValue.int(report.windows["window_ms"].n_unique() if report.windows.height else 0)
        meta["path"] = dg.MetadataValue.path(str(written[0]))
        return dg.MaterializeResult(metadata=meta)

    return strategy_report


strategy_report_job = dg.define_asset_job(REPORT_JOB, selection=[STRATEGY_REPORT])


@dg.schedule(
    cron_schedule=REPORT_TIME_UTC,
    job_name=REPORT_JOB,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Yesterday's strategy report of every account in the accounts partitions.",
)
def strategy_report_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    accounts = context.instance.get_dynamic_partitions(ACCOUNTS.name or "")
    if not accounts:
        return dg.SkipReason("no account in the accounts partitions yet")
    return [
        dg.RunRequest(run_key=f"{account}:{day}", partition_key=dg.MultiPartitionKey({"account": account, "day": day}))
        for account in sorted(accounts)
    ]
