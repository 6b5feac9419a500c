"""Who launches a sealed window's run: the marker trigger (fast lane) or the sensor (catch-up and fallback).

Both may see the same marker at the same moment, and a window must be processed once. Whoever first creates the
window's claim file (beside its marker; created by hard-linking a complete temporary file, so it is atomic and
never half-written) launches the run. The sensor launches what it claims with run_key = partition key, so a sensor
tick that fails after claiming is simply repeated. A trigger claim whose run never appeared in the instance (the
trigger died between claiming and submitting, or the webserver refused) is taken over by the sensor after
TRIGGER_GRACE_MS. The execution lane's claims (one per account and window) follow the same rules (sensor_decision).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dagster as dg

from lsq.paths import DataPaths, create_exclusive
from lsq_pipeline.defs.market.keys import BARS_5M
from lsq_pipeline.tags import PARTITION_TAG

Claimant = Literal["trigger", "sensor"]
Decision = Literal["request", "leave", "wait"]
TRIGGER_GRACE_MS = 30_000
# Every window run carries this tag, limited to one at a time in dagster.yaml, so windows are processed in order
# and a window's bars never read the previous close before the windows before it are stored.
SERIAL_TAG = {"lsq/window": "serial"}


@dataclass(frozen=True)
class Claim:
    by: Claimant
    at_ms: int


def read_claim(paths: DataPaths, window_ms: int) -> Claim | None:
    """The window's claim, or None."""
    return read_claim_file(paths.marker_claim(window_ms))


def try_claim(paths: DataPaths, window_ms: int, by: Claimant, now_ms: int) -> bool:
    """Claim the window for `by`; False when someone already holds it."""
    return claim_file(paths.marker_claim(window_ms), by, now_ms)


def release_claim(paths: DataPaths, window_ms: int) -> None:
    """Give the window's claim up (a launched run whose window was never sealed), so the sensor may take it."""
    paths.marker_claim(window_ms).unlink(missing_ok=True)


def read_claim_file(path: Path) -> Claim | None:
    """The claim in `path`, or None. A claim that cannot be parsed counts as the sensor's (it launches by run key)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Claim("sensor", 0)
    by = raw.get("by") if isinstance(raw, dict) else None
    at = raw.get("at_ms") if isinstance(raw, dict) else None
    return Claim(by if by in ("trigger", "sensor") else "sensor", int(at) if isinstance(at, int) else 0)


def claim_file(path: Path, by: Claimant, now_ms: int) -> bool:
    """Create the claim `path` for `by`; False when someone already holds it. The execution lane's claims
    (lsq_pipeline.defs.execution.lane) are the same files, one per account and window."""
    return create_exclusive(path, json.dumps({"by": by, "at_ms": now_ms}).encode())


def sensor_decision(path: Path, now_ms: int, has_run: Callable[[], bool]) -> Decision:
    """What the sensor does with a claimable item (claim file `path`): it claims it if nobody has, and "request"s
    what it holds; a trigger's claim is "left" to the trigger once `has_run()`, "wait"s while younger than
    TRIGGER_GRACE_MS without a run, then is taken over ("request")."""
    claim = read_claim_file(path)
    if claim is None and claim_file(path, "sensor", now_ms):
        return "request"
    claim = claim or read_claim_file(path)
    if claim is None or claim.by == "sensor":
        return "request"
    if has_run():
        return "leave"
    return "wait" if now_ms - claim.at_ms < TRIGGER_GRACE_MS else "request"


def window_run_exists(instance: dg.DagsterInstance, key: str) -> bool:
    """Whether a window run (the trigger's or the sensor's, any status) exists for the partition."""
    runs = dg.RunsFilter(tags={PARTITION_TAG: key, **SERIAL_TAG})
    return bool(instance.get_run_records(filters=runs, limit=1))


def window_done(instance: dg.DagsterInstance, key: str) -> bool:
    """Whether the next window may follow this one: it has a window run (any status), or its bars were stored by
    another run, e.g. the backfill of a fresh start (whose last window has no window run of its own)."""
    if window_run_exists(instance, key):
        return True
    stored = dg.AssetRecordsFilter(asset_key=BARS_5M, asset_partitions=[key])
    return bool(instance.fetch_materializations(stored, limit=1).records)
