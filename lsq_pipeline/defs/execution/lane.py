"""The execution fast lane of `lsq trigger`: an account's execution run is submitted the moment its window's target
file appears, instead of after the window run's materialisation, the sensor daemon's next tick (every 5 s at best)
and its run request.

`target_positions` writes data/positions/{account}_target_positions_{stamp}.json atomically while its step is still
running; the lane polls for the files of the fresh windows (the one just closed and the one before, while younger
than execution.executor.max_target_age_seconds) every 50 ms and submits, per account, exactly the run
execution_sensor would request: job `execution_job`, partition = account, tags `lsq/account` and
`lsq/target_window`. Who launches an (account, window) is decided by a claim file per pair
(DataPaths.execution_claim, lsq_pipeline.defs.market.claims): the sensor leaves a lane claim alone once its run
exists, waits while it is young, and takes it over after TRIGGER_GRACE_MS (the lane died between claiming and
submitting, or the webserver refused). The lane's runs also carry the sensor's run key and name tags, so should the
sensor take over a claim whose run then appears late, Dagster's own run-key check (fetch_existing_runs in
dagster/_daemon/sensor.py matches `dagster/run_key` and `dagster/sensor_name`) still launches it once. Accounts
without a target file for the window (sizing skipped them) stay with the sensor, which reports them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from lsq.paths import DataPaths
from lsq.targets import positions_file
from lsq.timelabels import WINDOW_MS, partition_key, window_start
from lsq_pipeline.defs.execution.assets import ACCOUNT_TAG, WINDOW_TAG
from lsq_pipeline.defs.execution.jobs import EXECUTION_JOB
from lsq_pipeline.defs.execution.sensors import SENSOR_NAME, run_key
from lsq_pipeline.defs.market.claims import claim_file
from lsq_pipeline.submit import Submit
from lsq_pipeline.tags import PARTITION_TAG

log = logging.getLogger("lsq.trigger")

LANE_TAG = {"lsq/trigger": "targets"}
# Dagster's run-key tags (dagster._core.storage.tags): the sensor daemon skips a request whose run key already has
# a run carrying the sensor's name.
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


def execution_tags(account_id: str, window_key: str) -> dict[str, str]:
    """The tags of the lane's run: the sensor's request's partition and tags, its run key and name."""
    return {
        PARTITION_TAG: account_id,
        ACCOUNT_TAG: account_id,
        WINDOW_TAG: window_key,
        RUN_KEY_TAG: run_key(account_id, window_key),
        SENSOR_NAME_TAG: SENSOR_NAME,
        **LANE_TAG,
    }


@dataclass
class ExecutionLane:
    """`submit(account, window key) -> run id` launches one account's run of a window; `accounts` are the enabled
    accounts of the configured mode."""

    paths: DataPaths
    accounts: Sequence[str]
    submit: Callable[[str, str], str]
    max_age_ms: int
    seen: set[tuple[str, int]] = field(default_factory=set)

    def step(self, now: int) -> list[tuple[str, str]]:
        """One poll at local time `now`; the (account, window key) pairs launched. Every ready pair is claimed
        first, then all are submitted at once (a submission takes seconds on a loaded machine: one after another,
        the last account's claim could go to the sensor's slow path). A failed submission is logged; its claim
        stays for the sensor to take over."""
        closed = window_start(now) - WINDOW_MS
        self.seen = {(a, w) for a, w in self.seen if w >= closed - WINDOW_MS}
        ready: list[tuple[str, str]] = []
        for window in (closed - WINDOW_MS, closed):
            if now - (window + WINDOW_MS) > self.max_age_ms:
                continue
            for account in self.accounts:
                if (account, window) in self.seen or not positions_file(self.paths, account, window).exists():
                    continue
                self.seen.add((account, window))
                if claim_file(self.paths.execution_claim(account, window), "trigger", now):
                    ready.append((account, partition_key(window)))  # else the sensor's (or an earlier lane's)
        if not ready:
            return []
        with ThreadPoolExecutor(max_workers=len(ready)) as pool:
            launched = list(pool.map(self._launch, ready))
        return [pair for pair, ok in zip(ready, launched, strict=True) if ok]

    def _launch(self, pair: tuple[str, str]) -> bool:
        account, key = pair
        try:
            run_id = self.submit(account, key)
        except Exception as exc:
            log.warning(
                "could not launch %s's execution of window %s (the sensor will take it over): %s", account, key, exc
            )
            return False
        log.info("launched %s's execution of window %s as run %s", account, key, run_id)
        return True


def graphql_execution_submit(submit: Submit) -> Callable[[str, str], str]:
    """The lane's launch: `execution_job` for (account, window key) through the webserver's `submit`."""
    return lambda account, key: submit(EXECUTION_JOB, execution_tags(account, key))
