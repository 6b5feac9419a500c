"""Server time: the real wall clock, plus a skew that tests can set to prove clients cope with clock drift."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Clock:
    skew_ms: int = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.skew_ms
