"""The collector's heartbeat file (data/collector/status.json) and its human-readable form for `lsq status`.

The collector rewrites the file atomically every couple of seconds; a reader judges liveness from `updated_at` and
whether the recorded pid still exists, so a crashed collector (SIGKILL leaves `running: true` behind) shows as stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lsq.paths import atomic_write_text
from lsq.runstate import pid_alive
from lsq.timelabels import now_ms, to_datetime

STALE_AFTER_MS = 10_000


def write_status(path: Path, status: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(status, indent=1, sort_keys=True))


def overwrite_status(path: Path, status: dict[str, Any]) -> None:
    """Rewrite the existing file's bytes in place, compactly: the fallback when the disk is too full for the atomic
    write (a new file needs new blocks; the old file's do not). A reader may rarely catch it half-written and is told
    the file is not JSON; the next write repairs it."""
    data = json.dumps(status, sort_keys=True, separators=(",", ":")).encode()
    with path.open("r+b") as fh:
        fh.write(data)
        fh.truncate()


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status written, or None if there is none; ValueError if the file is not a status object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        status = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"collector status {path} is not JSON: {exc}") from None
    if not isinstance(status, dict):
        raise ValueError(f"collector status {path} is not a JSON object")
    return status


def liveness(status: dict[str, Any], at_ms: int | None = None) -> str:
    """'running', 'stopped' (clean exit), 'stale' (no heartbeat lately) or 'dead' (its process is gone)."""
    at_ms = now_ms() if at_ms is None else at_ms
    if not status.get("running"):
        return "stopped"
    if not pid_alive(status.get("pid")):
        return "dead"
    if at_ms - int(status.get("updated_at", 0)) > STALE_AFTER_MS:
        return "stale"
    return "running"


def _when(ms: object) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return "never"
    return to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def _storage(storage: object) -> str:
    if not isinstance(storage, dict) or storage.get("state", "ok") == "ok":
        return "ok"
    line = (
        f"CANNOT WRITE {storage.get('path')}: {storage.get('state')} since {_when(storage.get('since'))}; "
        f"{storage.get('buffered_rows', 0)} rows held in memory (bound {storage.get('max_buffered_rows')})"
    )
    if storage.get("refusing_new_trades"):
        line += ", new trades left for REST repair"
    return line


def format_status(status: dict[str, Any], at_ms: int | None = None) -> str:
    """A few aligned lines an operator can read at a glance."""
    at_ms = now_ms() if at_ms is None else at_ms
    state = liveness(status, at_ms)
    age_s = (at_ms - int(status.get("updated_at", 0))) / 1000
    verdict = {
        "running": "running",
        "stopped": "not running (stopped cleanly)",
        "stale": f"STALE: no heartbeat for {age_s:.0f} s (hung?)",
        "dead": f"NOT RUNNING: process {status.get('pid')} is gone (crashed or killed)",
    }[state]
    conns = status.get("connections") or []
    up = sum(1 for c in conns if c.get("up"))
    sealed = status.get("last_sealed_window") or {}
    lines = [
        ("collector", f"{verdict}, pid {status.get('pid')}, started {_when(status.get('started_at'))}"),
        ("updated", f"{_when(status.get('updated_at'))} ({age_s:.1f} s ago)"),
        ("connections", f"{up}/{len(conns)} up, {status.get('reconnects', 0)} reconnects"),
        ("symbols", f"{status.get('symbols', 0)}"),
        ("messages", f"{status.get('messages_per_s', 0):.0f}/s, {status.get('messages_total', 0)} total"),
        (
            "sealing",
            f"last {sealed.get('partition_key', 'none')} (at {_when(sealed.get('sealed_at'))}), "
            f"next {status.get('next_window') or 'unknown'}",
        ),
        ("gaps", f"{status.get('gaps_open', 0)} open, {status.get('gaps_repaired', 0)} repaired"),
        ("duplicates", f"{status.get('duplicates_dropped', 0)} dropped"),
        ("malformed", f"{status.get('malformed_frames', 0)} frames"),
        ("last flush", _when(status.get("last_flush"))),
        ("storage", _storage(status.get("storage"))),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in lines)
