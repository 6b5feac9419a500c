"""What the collector knows about one symbol: id bookkeeping (last id, open id gaps), the trades not yet flushed
(as columns, ready for a DataFrame) and the sealing evidence."""

from __future__ import annotations

from typing import Any

from collectors.connection import StreamConnection
from collectors.parse import AggTrade
from collectors.sealing import NEVER, SymbolSeal
from lsq.timelabels import WINDOW_MS


class SymbolBook:
    """Everything the collector knows about one symbol: id bookkeeping, unflushed trades, sealing evidence."""

    def __init__(self, symbol: str, active_from: int) -> None:
        self.symbol = symbol
        self.conn: StreamConnection | None = None
        self.anchored = False
        self.verified = False
        self.epoch = 0
        self.last_id: int | None = None
        self.last_l: int | None = None
        self.tail = False
        self.last_time = NEVER
        self.gaps: list[list[int]] = []
        self.seal = SymbolSeal(active_from)
        self.counted_from = active_from
        self.counts: dict[int, int] = {}
        self.preanchor: list[AggTrade] = []
        self.inflight_min: int | None = None
        self._reset_buffer()

    def _reset_buffer(self) -> None:
        self.ids: list[int] = []
        self.prices: list[str] = []
        self.qtys: list[str] = []
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.times: list[int] = []
        self.makers: list[bool] = []
        self.buf_min: int | None = None

    def add(self, t: AggTrade) -> None:
        self.ids.append(t.agg_trade_id)
        self.prices.append(t.price)
        self.qtys.append(t.quantity)
        self.firsts.append(t.first_trade_id)
        self.lasts.append(t.last_trade_id)
        tt = t.transact_time
        self.times.append(tt)
        self.makers.append(t.is_buyer_maker)
        if self.buf_min is None or tt < self.buf_min:
            self.buf_min = tt
        if tt > self.last_time:
            self.last_time = tt
        w = tt - tt % WINDOW_MS
        self.counts[w] = self.counts.get(w, 0) + 1

    def take(self) -> dict[str, list[Any]] | None:
        """The unflushed trades as columns (now in flight), or None."""
        if not self.ids:
            return None
        cols: dict[str, list[Any]] = {
            "agg_trade_id": self.ids,
            "price": self.prices,
            "quantity": self.qtys,
            "first_trade_id": self.firsts,
            "last_trade_id": self.lasts,
            "transact_time": self.times,
            "is_buyer_maker": self.makers,
        }
        low = self.buf_min
        assert low is not None
        self.inflight_min = low if self.inflight_min is None else min(self.inflight_min, low)
        self._reset_buffer()
        return cols

    def give_back(self, cols: dict[str, list[Any]]) -> None:
        """Return columns whose write failed, to be written by the next flush."""
        for name, values in (
            ("ids", cols["agg_trade_id"]),
            ("prices", cols["price"]),
            ("qtys", cols["quantity"]),
            ("firsts", cols["first_trade_id"]),
            ("lasts", cols["last_trade_id"]),
            ("times", cols["transact_time"]),
            ("makers", cols["is_buyer_maker"]),
        ):
            getattr(self, name).extend(values)
        low = min(cols["transact_time"])
        self.buf_min = low if self.buf_min is None else min(self.buf_min, low)

    @property
    def buffered(self) -> int:
        """Trades held in memory, not yet handed to a flush."""
        return len(self.ids)

    def pending_min(self) -> int | None:
        values = [v for v in (self.buf_min, self.inflight_min) if v is not None]
        return min(values) if values else None

    def open_gap(self, lo: int, hi: int) -> None:
        """Mark ids lo..hi missing; a gap continuing the last one extends it (trades left out one by one while the
        buffer is full make one range to repair, not thousands)."""
        if lo > hi:
            return
        if self.gaps and self.gaps[-1][1] + 1 == lo:
            self.gaps[-1][1] = hi
            return
        self.gaps.append([lo, hi])
        self.gaps.sort()

    def fill(self, a: int) -> bool:
        """Remove id `a` from the open gaps; False if it was in none (a duplicate)."""
        for i, (lo, hi) in enumerate(self.gaps):
            if lo <= a <= hi:
                if lo == hi:
                    del self.gaps[i]
                elif a == lo:
                    self.gaps[i][0] = a + 1
                elif a == hi:
                    self.gaps[i][1] = a - 1
                else:
                    self.gaps[i][1] = a - 1
                    self.gaps.insert(i + 1, [a + 1, hi])
                return True
        return False
