"""Jobs and schedules of the market domain. The window job is what the marker sensor and `lsq trigger` launch for
each sealed 5-minute window."""

from datetime import timedelta

import dagster as dg

from lsq_pipeline.defs.market.keys import FUNDING_RATES, WINDOW_GROUP

WINDOW_JOB = "window_job"
# The asset groups of everything computed per sealed window: the market domain's bars, statistics and premium index,
# then the factor domain's factors, alpha and target positions (lsq_pipeline.defs.factors puts them in "factors").
# A group missing from the code location selects nothing.
WINDOW_GROUPS = (WINDOW_GROUP, "factors")

# All 5-minute assets of a window (and their checks) in one run, in process: no step subprocesses to wait for.
window_job = dg.define_asset_job(
    WINDOW_JOB,
    selection=dg.AssetSelection.groups(*WINDOW_GROUPS),
    executor_def=dg.in_process_executor,
    description="Bars, trade statistics, premium index and the factor/alpha/target-position assets of one window.",
)


funding_job = dg.define_asset_job("funding_job", selection=[FUNDING_RATES], executor_def=dg.in_process_executor)


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
