"""When a 5-minute window is complete: pure rules, no I/O.

A symbol's window [t, t+5m) is sealed when the collector holds, in the store, every aggTrade of the symbol with
T < t+5m. Evidence that nothing before a time X is missing ("complete before X"):
  - ids are contiguous per symbol, so with no id gap open, an accepted trade with T = X proves every trade with T < X
    is held (Binance's ids grow with time);
  - for quiet symbols, the server-time heartbeat E of the connection carrying the symbol: once E passed X + lag and the
    symbol's tail was verified against the exchange since the connection (re)subscribed, anything before X would
    have arrived;
  - faster, for quiet symbols right after a window ends: a 24 h ticker requested at server time K whose `lastId`
    (a trade id) is at most the `l` of the last aggTrade held proves nothing before K is missing.
While a gap is open the evidence freezes. Completeness is then capped by the oldest trade not yet flushed, so a
marker never announces data a reader cannot see. Windows seal strictly in order, each for every symbol active then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lsq.timelabels import WINDOW_MS, partition_key

NEVER = -1


def advance_complete_before(
    current: int, *, last_time: int, heartbeat_ms: int | None, lag_ms: int, gaps_open: bool, verified: bool
) -> int:
    """New 'complete before' time of a symbol; monotone, frozen while an id gap is open."""
    if gaps_open:
        return current
    out = max(current, last_time)
    if verified and heartbeat_ms is not None:
        out = max(out, heartbeat_ms - lag_ms)
    return out


def ticker_confirms(exchange_last_trade_id: int | None, held_last_trade_id: int | None) -> bool:
    """True when the exchange's latest trade (from the ticker) is one the collector already holds."""
    if exchange_last_trade_id is None:
        return True
    return held_last_trade_id is not None and exchange_last_trade_id <= held_last_trade_id


def sealed_through(complete_before: int, pending_min_time: int | None) -> int:
    """Windows ending at or before the result are sealed: complete, and everything before it flushed."""
    return complete_before if pending_min_time is None else min(complete_before, pending_min_time)


def window_sealed(window_start: int, sealed_through_ms: int) -> bool:
    return window_start + WINDOW_MS <= sealed_through_ms


@dataclass
class SymbolSeal:
    """Sealing state of one symbol; `active_from` is the first window it must appear in."""

    active_from: int
    complete_before: int = NEVER

    def update(self, *, last_time: int, heartbeat_ms: int | None, lag_ms: int, gaps_open: bool, verified: bool) -> None:
        self.complete_before = advance_complete_before(
            self.complete_before,
            last_time=last_time,
            heartbeat_ms=heartbeat_ms,
            lag_ms=lag_ms,
            gaps_open=gaps_open,
            verified=verified,
        )

    def confirm(self, at_ms: int) -> None:
        """Completeness before `at_ms` proven directly against the exchange."""
        self.complete_before = max(self.complete_before, at_ms)


def windows_to_seal(
    next_window: int,
    sealed: Mapping[str, int],
    active_from: Mapping[str, int],
    server_time_ms: int,
    lag_ms: int,
) -> list[tuple[int, list[str]]]:
    """Consecutive windows from `next_window` that can be sealed now, each with its sorted symbols.

    `sealed` maps symbol -> sealed_through. A window with no active symbol seals on server time alone.
    """
    if next_window % WINDOW_MS:
        raise ValueError(f"window start {next_window} is not on a 5-minute boundary")
    out: list[tuple[int, list[str]]] = []
    t = next_window
    while True:
        end = t + WINDOW_MS
        symbols = sorted(s for s, start in active_from.items() if start <= t)
        if symbols:
            if not all(sealed.get(s, NEVER) >= end for s in symbols):
                break
        elif server_time_ms - lag_ms < end:
            break
        out.append((t, symbols))
        t = end
    return out


def marker_payload(window_start: int, symbols: list[str], rows: int, sealed_at_ms: int) -> dict[str, object]:
    """The JSON body of a window's marker file."""
    return {
        "window_start": window_start,
        "window_end": window_start + WINDOW_MS,
        "partition_key": partition_key(window_start),
        "symbols": symbols,
        "rows": rows,
        "sealed_at": sealed_at_ms,
    }
