"""Repeated wall-clock runs, shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
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
