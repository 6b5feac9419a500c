"""What `lsq run` is running: data/run/state.json, rewritten atomically whenever a part starts or ends.

`lsq stop` reads the supervisor's pid from it and signals it; `lsq status` and the web monitor read each part's pid
and start time from it. Only the standard library and lsq.paths are imported, so `lsq status` stays quick.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lsq.paths import DataPaths, atomic_write_text


def state_path(paths: DataPaths) -> Path:
    return paths.root / "run" / "state.json"


def write_state(paths: DataPaths, state: dict[str, Any]) -> None:
    atomic_write_text(state_path(paths), json.dumps(state, indent=1, sort_keys=True))


def read_state(paths: DataPaths) -> dict[str, Any] | None:
    """The last state written, or None when `lsq run` never ran here; ValueError for a file that is not a state."""
    path = state_path(paths)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"run state {path} is not JSON: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("parts", []), list):
        raise ValueError(f"run state {path} is not a run state object")
    return state


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) answers signal 0 but is gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def part_state(part: dict[str, Any]) -> str:
    """'running', 'finished' (a one-shot that ended well), 'exited N', or 'dead' (gone without a recorded end)."""
    code = part.get("exit_code")
    if code is not None:
        return "finished" if code == 0 and part.get("oneshot") else f"exited {code}"
    return "running" if pid_alive(part.get("pid")) else "dead"


def supervisor_running(state: dict[str, Any]) -> bool:
    return bool(state.get("running")) and pid_alive(state.get("pid"))


def format_state(state: dict[str, Any]) -> str:
    """`lsq status`'s lines for `lsq run` and each part it started."""
    from lsq.timelabels import to_datetime

    def when(ms: object) -> str:
        return to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(ms, int) and ms > 0 else "?"

    verdict = "running" if supervisor_running(state) else "not running"
    lines = [f"{'lsq run':<16} {verdict}, pid {state.get('pid')}, started {when(state.get('started_at'))}"]
    for part in state.get("parts", []):
        started = when(part.get("started_at"))
        lines.append(f"{part.get('name', '?'):<16} {part_state(part)}, pid {part.get('pid')}, started {started}")
    return "\n".join(lines)
