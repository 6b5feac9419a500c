"""Repeated wall-clock runs, percentiles and temporary Dagster homes, shared by the benchmarks."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")


def wall_runs(fn: Callable[[], _T], runs: int) -> tuple[list[float], _T]:
    """Wall seconds of each of `runs` calls (at least one) and the last call's result, for the figures it prints."""
    times: list[float] = []
    while True:
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if len(times) >= runs:
            return times, result


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (nearest rank): with a dozen runs, p95 is the slowest but none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def temporary_home(prefix: str) -> tuple[Path, Path]:
    """A fresh work directory and an empty Dagster home inside it: (work, work/dagster_home)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    home = work / "dagster_home"
    home.mkdir()
    return work, home
