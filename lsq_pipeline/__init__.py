"""lsq_pipeline: the Dagster code location of LSQ (see lsq_pipeline/README.md).

Backfill policies and partitioned asset checks are marked beta/preview by Dagster 1.13; we rely on them knowingly,
so their warnings are silenced here instead of being printed by every `lsq` command and every run.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
