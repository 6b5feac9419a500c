"""lsq_pipeline: the Dagster code location of LSQ (see lsq_pipeline/README.md).

Backfill policies and partitioned asset checks are marked beta/preview by Dagster 1.13; we rely on them knowingly,
so their warnings are silenced for this package (by message, so that importing a light module such as
lsq_pipeline.cli does not have to import dagster).
"""

import warnings

warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
