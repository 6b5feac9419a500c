"""The execution job: one account's `executions` partition per run, in process, never retried automatically."""

import dagster as dg

from lsq_pipeline.defs.execution.assets import EXECUTIONS
from lsq_pipeline.tags import MAX_RETRIES_TAG

EXECUTION_JOB = "execution_job"

# Its own job, so an execution run (a TWAP lasts most of the window) never holds up the next window's run. Not
# retried by the instance's run_retries: a failed rebalance is re-executed by hand after a look (safe: the journal
# and deterministic client order ids make a second run place nothing already placed); the next window re-plans anyway.
execution_job = dg.define_asset_job(
    EXECUTION_JOB,
    selection=[EXECUTIONS],
    executor_def=dg.in_process_executor,
    tags={MAX_RETRIES_TAG: "0"},
    description="One account's rebalance toward one target window (requested by execution_sensor).",
)
