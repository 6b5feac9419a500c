"""Time as an injected object, so that whatever time decides (window ends, seals, schedules, TWAP slices) is tested
with a fake clock instead of waiting for the wall clock.

Product code takes a `Clock` and defaults to `SYSTEM_CLOCK`; tests pass a `FakeClock` and move it with `advance`.
Wall time (`now_ms`, UTC epoch milliseconds) and elapsed time (`monotonic`, seconds) are separate because the wall
clock may step (NTP) while intervals must not.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """UTC wall time in epoch milliseconds."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps back; only differences mean anything."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block this thread for `seconds` of this clock's time."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend this task for `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clocks of this machine."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        # asyncio is imported where it runs (it is loaded already): lsq.config uses this module, and `lsq status`
        # answers without asyncio's ~20 ms import.
        import asyncio

        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK: Clock = SystemClock()


class FakeClock:
    """A clock that moves only when told: `advance` by hand, or `sleep`/`asleep`, which advance instantly.

    Sleeping advances both wall and monotonic time by the slept amount, so a loop that sleeps until a deadline
    reaches it at once and in order; thread-safe, so a runner thread and a test thread may share one.
    """

    def __init__(self, now_ms: int = 1_700_000_000_000, monotonic: float = 1_000.0) -> None:
        self._now_ms = now_ms
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now_ms(self) -> int:
        with self._lock:
            return self._now_ms

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds` (never back)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        with self._lock:
            self._now_ms += round(seconds * 1000)
            self._monotonic += seconds

    def set_ms(self, now_ms: int) -> None:
        """Jump the wall clock forward to `now_ms`, moving the monotonic clock by the same amount."""
        self.advance((now_ms - self.now_ms()) / 1000)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        import asyncio

        self.sleep(seconds)
        await asyncio.sleep(0)
