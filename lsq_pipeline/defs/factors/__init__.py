"""Factor domain: the researchers' calculators, the alpha and target positions of every sealed window, and the daily
roll of the calculators' view panel."""

import dagster as dg

from lsq.config import Settings
from lsq_pipeline.defs.factors.assets import factor_assets
from lsq_pipeline.defs.factors.view_roll import factor_view_job, factor_view_schedule
from lsq_pipeline.partitions import partitions_for


def defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=factor_assets(settings, partitions_for(settings).five_minute),
        jobs=[factor_view_job],
        schedules=[factor_view_schedule],
    )
