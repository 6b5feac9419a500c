"""The order book the simulated market shows, derived from the same spread and square-root impact that price taker
fills (margin.taker_prices), so that what a client reads in /depth is what its market order gets.

The book is the inverse of the fill model: the cumulative quantity resting up to price P is the largest quantity a
taker can take without its marginal price passing P (margin.quantity_within). A taker chunk whose cumulative
quantity is C therefore fills at the first level whose cumulative depth reaches C; levels the step grid leaves
empty (right at the touch, for coarse steps) are not shown, as Binance shows only levels that hold quantity.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from simulator.errors import BinanceError, mandatory_missing
from simulator.trading import margin as m
from simulator.trading.margin import ZERO, best_quote, quantity_within, sign
from simulator.trading.params import parse_int

if TYPE_CHECKING:
    from simulator.trading.ledger import Ledger

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


def book_of(ledger: Ledger, symbol: str, levels: int, now: int) -> tuple[list[Level], list[Level]]:
    """(bids, asks) of `symbol` at `now`, from the fill model."""
    rules = ledger.rules(symbol)
    mid = ledger.mid_price(symbol, now)
    spread = m.half_spread_ticks(symbol)
    bids = book_side("SELL", mid, rules.tick, spread, rules.step, levels)
    asks = book_side("BUY", mid, rules.tick, spread, rules.step, levels)
    return bids, asks


def depth(ledger: Ledger, params: Mapping[str, str], now: int) -> dict:
    """GET /fapi/v1/depth."""
    symbol = params.get("symbol") or ""
    if not symbol:
        raise mandatory_missing("symbol")
    limit = parse_int(params, "limit", 500)
    if limit not in DEPTH_LIMITS:
        raise BinanceError(-1130, f"Data sent for parameter 'limit' is not valid: must be one of {list(DEPTH_LIMITS)}.")
    bids, asks = book_of(ledger, symbol, limit, now)
    return {
        "lastUpdateId": now,
        "E": now,
        "T": now,
        "bids": [[m.fmt(p), m.fmt(q)] for p, q in bids],
        "asks": [[m.fmt(p), m.fmt(q)] for p, q in asks],
    }


def book_ticker(ledger: Ledger, params: Mapping[str, str], now: int) -> dict | list[dict]:
    """GET /fapi/v1/ticker/bookTicker: the top of the book of one symbol, or of every listed symbol."""
    symbol = params.get("symbol") or None

    def top(s: str) -> dict:
        bids, asks = book_of(ledger, s, 1, now)
        return {
            "symbol": s,
            "bidPrice": m.fmt(bids[0][0]) if bids else "0",
            "bidQty": m.fmt(bids[0][1]) if bids else "0",
            "askPrice": m.fmt(asks[0][0]) if asks else "0",
            "askQty": m.fmt(asks[0][1]) if asks else "0",
            "time": now,
            "lastUpdateId": now,
        }

    if symbol:
        return top(symbol)
    listed = []
    for s in ledger.symbols():
        try:
            listed.append(top(s))
        except BinanceError:  # not listed yet at `now`
            continue
    return listed
