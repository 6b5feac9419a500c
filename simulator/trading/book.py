"""The order book the simulated market shows, derived from the same spread and square-root impact that price taker
fills (margin.taker_prices), so that what a client reads in /depth is what its market order gets.

The book is the inverse of the fill model: the cumulative quantity resting up to price P is the largest quantity a
taker can take without its marginal price passing P (margin.quantity_within). A taker chunk whose cumulative
quantity is C therefore fills at the first level whose cumulative depth reaches C; levels the step grid leaves
empty (right at the touch, for coarse steps) are not shown, as Binance shows only levels that hold quantity.
"""

from __future__ import annotations

from decimal import Decimal

from simulator.trading.margin import ZERO, best_quote, quantity_within, sign

DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
# Empty ticks scanned per level shown before giving up (only ever reached for a symbol with a pathological grid).
_SCAN_PER_LEVEL = 64

Level = tuple[Decimal, Decimal]  # (price, quantity)


def book_side(
    taker_side: str, mid: Decimal, tick: Decimal, spread_ticks: int, step: Decimal, levels: int
) -> list[Level]:
    """The first `levels` non-empty levels a taker on `taker_side` meets: asks for a BUY, bids for a SELL."""
    direction = sign(taker_side)
    price = best_quote(taker_side, mid, tick, spread_ticks)
    out: list[Level] = []
    shown = ZERO
    for _ in range(levels * _SCAN_PER_LEVEL):
        if len(out) >= levels or price <= 0:
            break
        cumulative = quantity_within(taker_side, mid, tick, spread_ticks, price, step)
        if cumulative > shown:
            out.append((price, cumulative - shown))
            shown = cumulative
        price += direction * tick
    return out


def depth_weight(limit: int) -> int:
    """Binance's weight of GET /fapi/v1/depth by limit."""
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20
