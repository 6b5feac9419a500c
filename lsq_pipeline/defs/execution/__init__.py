"""Execution domain: the `executions` asset (one partition per trading account), `execution_job` and
`execution_sensor`, which fans each `target_positions` window out to one run per account."""

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings
from lsq_pipeline.defs.execution.assets import executions_asset
from lsq_pipeline.defs.execution.jobs import execution_job
from lsq_pipeline.defs.execution.sensors import execution_sensor_for


def defs(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> dg.Definitions:
    """The accounts, their algorithms and the staleness limit are read from the `lsq` resource's configuration,
    by the sensor and by the runs alike, so the two always agree; `settings` keeps the domains' common signature."""
    return dg.Definitions(assets=[executions_asset(clock)], jobs=[execution_job], sensors=[execution_sensor_for(clock)])
