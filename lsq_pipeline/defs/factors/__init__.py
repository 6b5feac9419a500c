"""Factor domain: the researchers' calculators, the alpha and target positions of every sealed window."""

import dagster as dg

from lsq.config import Settings
from lsq_pipeline.defs.factors.assets import factor_assets
from lsq_pipeline.partitions import partitions_for


def defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=factor_assets(settings, partitions_for(settings).five_minute))
