"""Monitoring domain: `account_state` per account (recorded from the watcher's store by a sensor, no runs), its
deviation/exposure/health checks, the daily `strategy_report` per account, and the alert sensor."""

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings
from lsq_pipeline.defs.monitoring.assets import (
    account_state,
    report_partitions,
    strategy_report_asset,
    strategy_report_job,
    strategy_report_schedule,
)
from lsq_pipeline.defs.monitoring.checks import account_checks, account_checks_job
from lsq_pipeline.defs.monitoring.sensors import account_state_sensor_for, alert_sensor_for


def defs(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> dg.Definitions:
    """Thresholds and alert settings from `settings`; paths and accounts from the `lsq` resource at run time."""
    monitoring = settings.monitoring
    start = settings.data.partitions_start or settings.first_partition_day(clock.now_ms())
    return dg.Definitions(
        assets=[account_state, strategy_report_asset(report_partitions(start))],
        asset_checks=account_checks(monitoring.checks, clock),
        jobs=[strategy_report_job, account_checks_job],
        schedules=[strategy_report_schedule],
        sensors=[account_state_sensor_for(monitoring.checks, clock), alert_sensor_for(monitoring.alerts, clock)],
    )
