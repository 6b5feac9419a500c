"""Server time: an `lsq.clock.Clock` (the wall clock by default, a FakeClock in tests) plus a skew that tests can set
to prove clients cope with clock drift."""

from __future__ import annotations

from dataclasses import dataclass, field

from lsq.clock import SYSTEM_CLOCK
from lsq.clock import Clock as BaseClock


@dataclass
class Clock:
    skew_ms: int = 0
    base: BaseClock = field(default=SYSTEM_CLOCK, repr=False)

    def now_ms(self) -> int:
        return self.base.now_ms() + self.skew_ms
