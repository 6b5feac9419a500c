"""The LSQ code location: the domains' definitions (lsq_pipeline/defs/), merged, built from one Settings.

`dagster dev` / `dagster definitions validate -m lsq_pipeline.definitions` load `defs` from here. The configuration is
read once, at the bottom of this module; everything else (partitions, factor lineage, schedules) is built from the
Settings passed in, so tests build a code location from their own Settings without touching the environment.
"""

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings, load_config
from lsq_pipeline.defs import execution, factors, market, monitoring, universe
from lsq_pipeline.resources import LsqResource


def build_definitions(
    settings: Settings, resources: dict[str, object] | None = None, clock: Clock = SYSTEM_CLOCK
) -> dg.Definitions:
    """Every domain's definitions over `settings`; `resources` replace the default `lsq` resource (tests point it
    at a temporary data directory and a simulator), `clock` is the sensors' and the universe's notion of "now".
    An unset `data.partitions_start` is fixed here, once, so that every domain's partitions start on the same day."""
    start = settings.first_partition_day(clock.now_ms())
    settings = settings.model_copy(update={"data": settings.data.model_copy(update={"partitions_start": start})})
    shared = dg.Definitions(
        resources=resources or {"lsq": LsqResource.for_settings(settings)},
        # Every run in process: a step subprocess costs ~1.7 s on this machine (dagster-notes), more than most steps.
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(
        market.defs(settings, clock),
        universe.defs(settings, clock),
        factors.defs(settings),
        execution.defs(settings, clock),
        monitoring.defs(settings, clock),
        shared,
    )


defs = build_definitions(load_config())
