"""The daily roll of the factors' view panel (lsq.stores.factor_panel.roll_base): its job and schedule.

The panel's base holds the complete days before the current one. Written inside a window run, the day that just
ended would cost the first window of every day (a funding window) seconds of rewrite at 300 symbols; this job writes
it minutes after midnight instead: after the day's last window (stored by ~00:00:02) and the funding schedule's
completion of yesterday's funding (00:02), before the first window of the new day (its run starts 00:04:40). Should
it not run, window runs read the completed day from parquet, and rewrite the base themselves a day later.
"""

from datetime import UTC
from typing import Any

import dagster as dg

from lsq.stores.factor_panel import roll_base
from lsq.timelabels import DAY_MS, WINDOW_MS, parse_day
from lsq_pipeline.resources import LsqResource

ROLL_CRON = "3 0 * * *"


class RollConfig(dg.Config):
    day: str
    """The UTC day ('YYYY-MM-DD') whose windows the base is rolled for: its complete days are those before it."""


@dg.op(description="Writes the completed days before `day` into the factor view panel's base.")
def roll_factor_view(context: dg.OpExecutionContext, config: RollConfig, lsq: LsqResource) -> dg.Output[dict[str, Any]]:
    try:
        day_ms = parse_day(config.day)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from None
    # the history of the day's first window, as its window run asks for it: [end - history_days, end)
    end_ms = day_ms + WINDOW_MS
    figures = roll_base(lsq.paths, end_ms - lsq.settings.strategy.history_days * DAY_MS, end_ms)
    context.log.info(
        f"factor view base for {config.day}: {'rewritten' if figures['rewritten'] else 'already current'}, "
        f"{figures['days']} days from {figures['first_day']} (generation {figures['generation']})"
    )
    rows = {f"{kind}_rows": n for kind, n in figures["rows"].items()}
    metadata = {"rewritten": figures["rewritten"], "days": figures["days"], "first_day": figures["first_day"], **rows}
    return dg.Output(figures, metadata=metadata)


@dg.job(description="Rolls the factor view panel's base forward by the day that just ended (see view_roll).")
def factor_view_job() -> None:
    roll_factor_view()


@dg.schedule(
    job=factor_view_job,
    cron_schedule=ROLL_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def factor_view_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.astimezone(UTC).date().isoformat()
    return dg.RunRequest(run_key=day, run_config={"ops": {"roll_factor_view": {"config": {"day": day}}}})
