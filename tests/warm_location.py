"""A small code location for the warm launcher's tests (tests/test_warm_launcher.py): one asset job, and one whose
op holds its run until a file appears, so a test can act on a run that is STARTED."""

import os
import time
from pathlib import Path

import dagster as dg

HOLD_DEADLINE_S = 120.0


@dg.asset
def warm_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("warm asset computed in pid %s", os.getpid())
    return dg.MaterializeResult(metadata={"pid": os.getpid()})


@dg.op
def hold(context: dg.OpExecutionContext) -> None:
    """Wait for $WARM_RELEASE_FILE (or the deadline): the run stays STARTED meanwhile."""
    release = Path(os.environ["WARM_RELEASE_FILE"])
    deadline = time.monotonic() + HOLD_DEADLINE_S
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    context.log.info("released")


@dg.job(executor_def=dg.in_process_executor)
def hold_job() -> None:
    hold()


defs = dg.Definitions(
    assets=[warm_asset],
    jobs=[dg.define_asset_job("warm_job", selection=[warm_asset], executor_def=dg.in_process_executor), hold_job],
)
