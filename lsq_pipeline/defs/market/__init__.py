"""Market-data domain: trades seen by the collector, 5-minute bars and trade statistics with their checks, rollups,
premium index and funding rates; the window job, the sealed-window sensor (and `lsq trigger`, its fast lane)."""

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings
from lsq_pipeline.defs.market.assets import market_assets
from lsq_pipeline.defs.market.jobs import funding_job, funding_schedule, window_job
from lsq_pipeline.defs.market.sensors import marker_sensor_for, rollup_automation
from lsq_pipeline.partitions import partitions_for


def defs(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> dg.Definitions:
    partitions = partitions_for(settings)
    market = market_assets(partitions, clock)
    window_keys = [key for asset in market.window_assets for key in asset.keys]
    return dg.Definitions(
        assets=market.all,
        jobs=[window_job, funding_job],
        schedules=[funding_schedule],
        sensors=[
            marker_sensor_for(window_keys, partitions.first_window_ms, clock),
            rollup_automation(market.rollups),
        ],
    )
