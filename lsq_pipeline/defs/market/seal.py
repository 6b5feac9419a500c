"""A window's run may start before the window closes: `lsq trigger` launches it PRELAUNCH_MS ahead
(lsq_pipeline.defs.market.trigger), so that submitting, queueing and starting it are over when the window ends, and
its first step (bars, trade statistics, premium index) waits here for the collector's marker. From the seal on, the
run costs only its own steps.

Only runs tagged AWAIT_SEAL_TAG wait. Every other run of a window asset (the sensor's, a backfill, one launched by
hand) starts after the seal as before, and is refused while its window is still open: the window in progress is a
partition (so the trigger can launch it), but its trades are not complete.

A waiting run holds its window's claim (lsq_pipeline.defs.market.claims). If the marker has not come MAX_SIGNAL_AGE_MS
after the window's end (the collector is down or far behind), the run gives the claim up and fails, naming the
cause; the sealed-window sensor then processes the window when its marker lands, as it does any catch-up. A retry of
that run finds the claim gone and stops at once, so no window is processed twice.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from lsq.clock import Clock
from lsq.paths import DataPaths
from lsq.timelabels import partition_key
from lsq_pipeline.defs.market.claims import read_claim, release_claim
from lsq_pipeline.tags import AWAIT_SEAL_TAG

# A window that ended longer ago than this gets its bars but no factors or target positions: orders from a stale
# signal would be wrong (the sensor's rule). It also bounds how long a launched run waits for its window's seal.
MAX_SIGNAL_AGE_MS = 10 * 60_000
POLL_SECONDS = 0.02


def await_seal(
    paths: DataPaths, start_ms: int, end_ms: int, tags: Mapping[str, str], clock: Clock, log: dg.DagsterLogManager
) -> None:
    """Return once the run may read the trades of [start_ms, end_ms); dg.Failure (one clear message) otherwise."""
    key = partition_key(start_ms)
    if not all(tags.get(k) == v for k, v in AWAIT_SEAL_TAG.items()):
        if end_ms > clock.now_ms():
            raise dg.Failure(f"window {key} has not closed yet: its trades are incomplete; run it once it has")
        return
    claim = read_claim(paths, start_ms)
    if claim is None or claim.by != "trigger":
        raise dg.Failure(f"window {key} is no longer this run's to process (its claim was given up or taken over)")
    marker = paths.marker_file(start_ms)
    deadline = end_ms + MAX_SIGNAL_AGE_MS
    waited = False
    while not marker.exists():
        if clock.now_ms() >= deadline:
            release_claim(paths, start_ms)
            raise dg.Failure(
                f"window {key} was not sealed within {MAX_SIGNAL_AGE_MS // 60_000} minutes of its end: is the "
                "collector (`lsq collect`) running? The sealed-window sensor processes it once its marker appears."
            )
        if not waited:
            log.info(f"window {key}: waiting for the collector's seal")
            waited = True
        clock.sleep(POLL_SECONDS)
    if waited:
        log.info(f"window {key}: sealed, {(clock.now_ms() - end_ms) / 1000:.2f} s after its end")
