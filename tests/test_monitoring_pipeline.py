"""Pipeline health from the parts' own files: running, stale, dead, stopped and missing; the marker lag."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import WINDOW_MS
from monitoring.pipeline import pipeline_health
from monitoring.store import AccountStore

NOW = 1_798_761_600_000 + 3_600_000  # 2027-01-01 01:00


def test_health_of_every_part(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    empty = pipeline_health(paths, ["a"], NOW)
    assert empty["collector"]["state"] == "missing" and empty["marker"]["lag_ms"] is None
    assert empty["watchers"]["a"]["state"] == "missing"

    me = os.getpid()
    atomic_write_text(paths.collector_status, json.dumps({"running": True, "pid": me, "updated_at": NOW - 2_000}))
    for window in (NOW - 3 * WINDOW_MS, NOW - 2 * WINDOW_MS):
        atomic_write_text(paths.marker_file(window), "{}")
    AccountStore(paths, "a").write_status({"stream": "up", "pid": me, "updated_ms": NOW - 200_000})
    AccountStore(paths, "b").write_status({"stream": "up", "pid": 2**22 + 12345, "updated_ms": NOW})
    AccountStore(paths, "c").write_status({"stream": "stopped", "pid": me, "updated_ms": NOW - 10**7})
    health = pipeline_health(paths, ["a", "b", "c"], NOW)
    assert health["collector"]["state"] == "running" and health["collector"]["age_ms"] == 2_000
    assert health["marker"] == {"window_end_ms": NOW - WINDOW_MS, "lag_ms": WINDOW_MS}
    assert {a: w["state"] for a, w in health["watchers"].items()} == {"a": "stale", "b": "dead", "c": "stopped"}
