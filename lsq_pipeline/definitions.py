"""The LSQ code location: every asset, check, job, schedule and sensor, merged from the domain modules.

`dagster dev` / `dagster definitions validate -m lsq_pipeline.definitions` load `defs` from here. The factor
assets (lsq_pipeline/factor_assets.py) are on the same 5-minute partitions and join the window job.
"""

import dagster as dg

from lsq.config import load_config
from lsq.timelabels import from_datetime
from lsq_pipeline import checks, factor_assets, jobs, sensors, universe
from lsq_pipeline.market import assets as market
from lsq_pipeline.partitions import FIVE_MINUTE
from lsq_pipeline.resources import LsqResource

MARKET_WINDOW_ASSETS = [market.window_stats_5m, market.premium_index_5m]


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """All definitions; tests pass their own `lsq` resource (temporary data directory, simulator endpoint)."""
    data = load_config().data
    factor_defs = dg.load_definitions_from_modules([factor_assets])
    factor_window_assets = [
        a for a in factor_defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.partitions_def == FIVE_MINUTE
    ]
    window_job = jobs.window_job_for([*MARKET_WINDOW_ASSETS, *factor_window_assets])
    market_keys = [k for a in MARKET_WINDOW_ASSETS for k in a.keys]
    first_window = from_datetime(FIVE_MINUTE.start)
    core = dg.Definitions(
        assets=[
            market.agg_trades,
            *MARKET_WINDOW_ASSETS,
            *market.ROLLUP_ASSETS,
            market.funding_rates,
            universe.universe,
        ],
        asset_checks=checks.BAR_CHECKS,
        jobs=[window_job, universe.universe_job, jobs.funding_job],
        schedules=[universe.universe_schedule_for(data.universe_refresh_time, data.timezone), jobs.funding_schedule],
        sensors=[
            sensors.marker_sensor_for(window_job, market_keys, first_window),
            dg.AutomationConditionSensorDefinition(
                "rollup_automation",
                target=dg.AssetSelection.assets(*market.ROLLUP_ASSETS),
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=sensors.SENSOR_INTERVAL_SECONDS * 5,
                description="Materialises each rollup partition once all of its 5-minute windows are stored.",
            ),
        ],
        resources=resources or {"lsq": LsqResource()},
        # Every run in process: a step subprocess costs ~1.7 s on this machine (dagster-notes), more than most steps.
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(core, factor_defs)


defs = build_definitions()
