"""lsq_pipeline: the Dagster code location of LSQ (see lsq_pipeline/README.md).

Backfill policies and partitioned asset checks are marked beta/preview by Dagster 1.13; we rely on them knowingly,
so their warnings are silenced for this package (by message, so that importing a light module such as
lsq_pipeline.cli does not have to import dagster). The window job mixes the bars' single-run backfill policy with
assets that have none, and Dagster warns each time it resolves the job (every process that loads the code location);
the job runs one window at a time (backfills go through `lsq backfill`'s range runs), so that warning is silenced too.
"""

import warnings

warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
warnings.filterwarnings("ignore", message=r"Asset job window_job materializes assets with varying BackfillPolicies")
