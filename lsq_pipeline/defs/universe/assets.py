"""The `universe` asset (one partition per UTC day), its job and the daily refresh schedule, over lsq.universes."""

from datetime import UTC, timedelta

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.universes import build_universes
from lsq_pipeline.resources import LsqResource

UNIVERSE = dg.AssetKey("universe")


def universe_asset(universe_days: dg.DailyPartitionsDefinition, clock: Clock = SYSTEM_CLOCK) -> dg.AssetsDefinition:
    """`clock` tells a day still ahead (ranked by live tickers) from a past one (ranked by that day's volume)."""

    @dg.asset(
        name=UNIVERSE.path[0],
        partitions_def=universe_days,
        group_name="reference",
        kinds={"csv"},
        backfill_policy=dg.BackfillPolicy.single_run(),
        description="Trading universe of a UTC day: v1 all USDT perpetuals, v2 top N by volume with listing age.",
    )
    def universe(context: dg.AssetExecutionContext, lsq: LsqResource) -> dg.MaterializeResult:
        """One day, or every day of a backfill's range in one run with one kline request per symbol (metadata then
        describes the last day)."""
        days = context.partition_keys
        client, rules, now = lsq.rest(), lsq.settings.data.universe, clock.now_ms()
        built = build_universes(client, lsq.paths, rules, days, now)
        last = built[days[-1]]
        return dg.MaterializeResult(
            metadata={
                "days": len(days),
                "v1_symbols": len(last["v1"]),
                "v2_symbols": len(last["v2"]),
                "v2": ", ".join(last["v2"]["symbol"].to_list()),
                "path": dg.MetadataValue.path(str(lsq.paths.universe_file(days[-1], "v1").parent.parent)),
            }
        )

    return universe


universe_job = dg.define_asset_job("universe_job", selection=[UNIVERSE])


def universe_schedule_for(refresh_time: str, timezone: str) -> dg.ScheduleDefinition:
    """Builds tomorrow's universe (tomorrow in `timezone`) at `refresh_time` local time every day."""
    hour, minute = refresh_time.split(":")

    @dg.schedule(
        name="universe_schedule",
        job=universe_job,
        cron_schedule=f"{int(minute)} {int(hour)} * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        # universes are per UTC day: "tomorrow" is the UTC day after the refresh, whatever the local zone
        day = (context.scheduled_execution_time.astimezone(UTC).date() + timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return _schedule
