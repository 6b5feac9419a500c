"""Timeout streaks of calculators across window runs, so a hanging calculator stops costing a timeout every window.

After `strategy.alpha.timeout_streak` timeouts in a row a calculator is skipped for `cooldown_windows` windows of
wall time (by the injected clock), then tried again; a success resets its streak, and one more timeout after the
cool-down starts the next one at once.

The state lives in data/factors/health.json because every window run is its own process (Dagster launches one run
per window): memory would forget the streak between windows. It is small, written atomically, and losing it only
means a hanging calculator is tried again. Two runs finishing at the same moment (a live and a catch-up window)
may overwrite each other's update; the streak is then one timeout shorter, which is harmless.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsq.config import AlphaSettings
from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import WINDOW_MS, to_datetime

log = logging.getLogger(__name__)


def health_file(paths: DataPaths) -> Path:
    return paths.factors / "health.json"


@dataclass(frozen=True)
class Streak:
    timeouts: int = 0
    skip_until_ms: int = 0


@dataclass
class CalculatorHealth:
    """Per calculator: consecutive timeouts and the wall time (UTC ms) until which it is skipped."""

    streaks: dict[str, Streak] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> CalculatorHealth:
        """The stored state; a missing or unreadable file is a fresh start (logged), never an error."""
        try:
            raw = json.loads(path.read_text())
            return cls({str(k): Streak(int(v["timeouts"]), int(v["skip_until_ms"])) for k, v in raw.items()})
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("calculator health %s unreadable (%s): starting without timeout streaks", path, exc)
            return cls()

    def save(self, path: Path) -> None:
        """Write the state atomically; a failed write is logged, never raised: the window's results matter more."""
        state: dict[str, Any] = {
            name: {"timeouts": s.timeouts, "skip_until_ms": s.skip_until_ms}
            for name, s in sorted(self.streaks.items())
            if s.timeouts
        }
        try:
            atomic_write_text(path, json.dumps(state, indent=1))
        except OSError as exc:
            log.warning("cannot write calculator health %s: %s; timeout streaks are not kept", path, exc)

    def skip_reason(self, name: str, now_ms: int) -> str | None:
        """Why `name` is not run now, or None if it runs."""
        streak = self.streaks.get(name, Streak())
        if now_ms >= streak.skip_until_ms:
            return None
        until = to_datetime(streak.skip_until_ms).strftime("%Y-%m-%d %H:%M UTC")
        return f"skipped until {until}: timed out {streak.timeouts} times in a row (cool-down)"

    def record(self, name: str, timed_out: bool, now_ms: int, settings: AlphaSettings) -> str | None:
        """Count one run's outcome; returns a message when this timeout starts a cool-down."""
        if not timed_out:
            self.streaks.pop(name, None)
            return None
        timeouts = self.streaks.get(name, Streak()).timeouts + 1
        if timeouts < settings.timeout_streak or settings.cooldown_windows == 0:
            self.streaks[name] = Streak(timeouts)
            return None
        until = now_ms + settings.cooldown_windows * WINDOW_MS
        self.streaks[name] = Streak(timeouts, until)
        return (
            f"calculator {name} timed out {timeouts} times in a row: skipped for {settings.cooldown_windows} windows, "
            f"until {to_datetime(until).strftime('%Y-%m-%d %H:%M UTC')}"
        )
