"""`lsq trigger`: launches each live window's run PRELAUNCH_MS before the window closes (the live fast lane), and,
composed with it in `watch`, each account's execution run the moment its target file appears
(lsq_pipeline.defs.execution.lane).

Submitting a run, the queue's dequeue (at most every second) and its start cost 2-4 s under load, before the run's
first step. Done ahead of the window's end, none of that follows the seal: the run's window assets wait for the
collector's marker (lsq_pipeline.defs.market.seal), and the bars follow it by their own compute time.

Dagster 1.13's sensor daemon evaluates sensors at most every 5 s (MIN_INTERVAL_LOOP_TIME in dagster/_daemon/sensor.py,
not configurable), so with the sensor alone a marker waits 0-5 s before its run is even requested. The trigger polls
every 50 ms and submits the window job through the webserver's GraphQL API
(lsq_pipeline.submit), with the sensor's tags, so the run is queued, limited and shown exactly like a sensor run.

It takes only the live path: the window about to close (or just closed), while its signal is fresh, and only once the
previous window's run exists (the sensor's or its own) or its bars are stored (the last window of a backfill), so
runs stay in window order and the first window after a start takes the fast lane too. Ahead of its seal, a window is
launched only when the previous one is sealed: while the collector is down or behind, no runs pile up waiting.
Catch-up after an outage, and everything while no trigger runs (a plain `dagster dev`), stays with the sensor. The
two never launch the same window: see lsq_pipeline.defs.market.claims.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.paths import DataPaths
from lsq.timelabels import WINDOW_MS, partition_key, window_start
from lsq_pipeline.defs.market.claims import SERIAL_TAG, read_claim, try_claim
from lsq_pipeline.defs.market.jobs import WINDOW_JOB
from lsq_pipeline.defs.market.seal import MAX_SIGNAL_AGE_MS
from lsq_pipeline.submit import graphql_submitter
from lsq_pipeline.tags import AWAIT_SEAL_TAG, PARTITION_TAG

log = logging.getLogger("lsq.trigger")

TRIGGER_TAG = {"lsq/trigger": "marker"}
POLL_SECONDS = 0.05
PRELAUNCH_MS = 20_000


@dataclass
class MarkerTrigger:
    """Which window to launch next. `submit(partition_key) -> run id` launches; `has_run(partition_key)` tells
    whether the next window may follow a window: its run exists in the instance (queued or later) or its bars are
    stored (claims.window_done)."""

    paths: DataPaths
    submit: Callable[[str], str]
    has_run: Callable[[str], bool]
    expected: int | None = None

    def step(self, now: int) -> str | None:
        """One poll at local time `now`; the partition key launched, if any."""
        newest = window_start(now + PRELAUNCH_MS) - WINDOW_MS  # the open window from PRELAUNCH_MS before its end
        if self.expected is None or now - (self.expected + WINDOW_MS) > MAX_SIGNAL_AGE_MS:
            self.expected = newest  # started, or the expected window went stale: what lies before is the sensor's
        while self.expected < newest and self._sealed(self.expected + WINDOW_MS) and not self._sealed(self.expected):
            self.expected += WINDOW_MS  # never sealed (the collector started after it): the backfill's, not ours
        window = self.expected
        if window > newest:
            return None
        sealed = self._sealed(window)
        previous_sealed = self._sealed(window - WINDOW_MS)
        if not sealed and not previous_sealed:
            return None
        if read_claim(self.paths, window) is not None:
            self.expected = window + WINDOW_MS  # already the sensor's
            return None
        # Only behind the previous window's run (which may be the sensor's, claimed but not yet submitted) or its
        # stored bars: the serial queue then runs them in order, and this window's bars see the previous closes. A
        # previous window the collector never sealed (it started during this one) is the backfill's, not the
        # queue's: nothing to wait for.
        if previous_sealed and not self.has_run(partition_key(window - WINDOW_MS)):
            return None
        self.expected = window + WINDOW_MS
        if not try_claim(self.paths, window, "trigger", now):
            return None
        key = partition_key(window)
        log.info("launched window %s as run %s", key, self.submit(key))
        return key

    def _sealed(self, window: int) -> bool:
        return self.paths.marker_file(window).exists()


def graphql_submit(url: str, timeout_s: int = 10) -> Callable[[str], str]:
    """Submit the window job for a partition through the Dagster webserver at `url`."""
    submit = graphql_submitter(url, timeout_s)
    return lambda key: submit(WINDOW_JOB, {PARTITION_TAG: key, **SERIAL_TAG, **TRIGGER_TAG, **AWAIT_SEAL_TAG})


class Lane(Protocol):
    """One fast lane of `lsq trigger`: `step(now)` launches what has become ready."""

    def step(self, now: int) -> object: ...


def watch(lanes: Sequence[Lane], clock: Clock = SYSTEM_CLOCK) -> None:
    """Poll every lane forever (until interrupted); one lane failing holds up no other."""
    while True:
        for lane in lanes:
            try:
                lane.step(clock.now_ms())
            except Exception as exc:  # the claim stays: the sensor takes the run over after its grace period
                log.warning("could not launch a run (the sensor will take it over): %s", exc)
        clock.sleep(POLL_SECONDS)
