"""Universe domain: which symbols exist and which are traded, per UTC day."""

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings
from lsq_pipeline.defs.universe.assets import universe_asset, universe_job, universe_schedule_for
from lsq_pipeline.partitions import partitions_for


def defs(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> dg.Definitions:
    data = settings.data
    partitions = partitions_for(settings)
    return dg.Definitions(
        assets=[universe_asset(partitions.universe_days, clock)],
        jobs=[universe_job],
        schedules=[universe_schedule_for(data.universe_refresh_time, data.timezone)],
    )
