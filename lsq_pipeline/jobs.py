"""Jobs and schedules. The window job is what the marker sensor launches for each sealed 5-minute window."""

from collections.abc import Sequence
from datetime import timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from lsq_pipeline.market.assets import funding_rates


def window_job_for(assets: Sequence[dg.AssetsDefinition | dg.AssetKey]) -> UnresolvedAssetJobDefinition:
    """All 5-minute assets of a window (and their checks) in one run, in process: no step subprocesses to wait for."""
    return dg.define_asset_job(
        "window_job",
        selection=dg.AssetSelection.assets(*assets),
        executor_def=dg.in_process_executor,
        description="Bars, trade statistics, premium index and the factor/alpha/target-position assets of one window.",
    )


funding_job = dg.define_asset_job("funding_job", selection=[funding_rates], executor_def=dg.in_process_executor)


@dg.schedule(
    job=funding_job,
    cron_schedule="2 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def funding_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """Hourly refresh of today's funding events; in the first hour of a day, yesterday's are completed too."""
    now = context.scheduled_execution_time
    days = [now.date()] + ([now.date() - timedelta(days=1)] if now.hour == 0 else [])
    stamp = now.strftime("%Y-%m-%dT%H")
    return [dg.RunRequest(run_key=f"{d.isoformat()}@{stamp}", partition_key=d.isoformat()) for d in days]
