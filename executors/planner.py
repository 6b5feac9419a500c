"""From positions and targets to orders: pure functions, no I/O, so every rule is tested on plain values.

Positions are keyed by (symbol, positionSide) with signed amounts (SHORT legs negative). In one-way mode the only
side is BOTH; in hedge mode (dual_side) a net target t becomes LONG max(t, 0) and SHORT min(t, 0).

Rules a desk expects, in order of application:
- symbols absent from the target, or no longer TRADING, go to 0 (a symbol unknown to exchangeInfo is reported);
- pre-trade limits clip targets: max share per symbol and the leverage bracket per symbol, then max gross leverage
  scales the whole book (never increasing any position);
- a move smaller than the no-trade band (USDT) is skipped unless it closes the position (closes are never banded);
- reductions and closes come before opens, so margin is freed first; a one-way flip is a reduce-only close then an
  open of the new side;
- quantities sit on the order type's grid (MARKET_LOT_SIZE for market, LOT_SIZE for limit), rounded toward zero,
  except one-way closes to zero, rounded up (the exchange trims a reduce-only order to the position), so a
  position off the market grid still closes; MIN_NOTIONAL applies to every order that is not reduce-only (in hedge
  mode closes are not reduce-only orders: a leg too small to close is topped up first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from lsq.exchange.rules import ZERO, Bracket, SymbolRules, max_notional_at

Key = tuple[str, str]  # (symbol, positionSide)
REDUCE, OPEN = "R", "O"


@dataclass(frozen=True)
class Limits:
    """Pre-trade limits; None disables one."""

    max_order_notional: Decimal | None = None
    max_gross_leverage: Decimal | None = None
    max_symbol_share: Decimal | None = None  # of equity x max_gross_leverage (else of equity)
    leverage: int | None = None  # the account's leverage, for the brackets


@dataclass(frozen=True)
class ChildOrder:
    symbol: str
    position_side: str
    side: str  # BUY | SELL
    quantity: Decimal  # positive, on the grid of `market`
    reduce_only: bool  # a reduction (in hedge mode sent without the reduceOnly flag, which Binance refuses there)
    leg: str  # R (reduce/close) or O (open)
    market: bool = True
    price: Decimal | None = None  # limit price when not market
    part: int = 0  # index when a move is split by max quantity or max order notional
    price_match: str | None = None  # limit priced by the exchange (priceMatch) instead of `price`


@dataclass
class LimitedTargets:
    targets: dict[str, Decimal]
    notes: dict[str, str] = field(default_factory=dict)


def sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


def leg_targets(net: Mapping[str, Decimal], dual_side: bool) -> dict[Key, Decimal]:
    """(symbol, positionSide) -> signed amount wanted, from net targets per symbol."""
    out: dict[Key, Decimal] = {}
    for symbol, t in net.items():
        if dual_side:
            out[(symbol, "LONG")] = max(t, ZERO)
            out[(symbol, "SHORT")] = min(t, ZERO)
        else:
            out[(symbol, "BOTH")] = t
    return out


def net_of(legs: Mapping[Key, Decimal]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for (symbol, _), amount in legs.items():
        out[symbol] = out.get(symbol, ZERO) + amount
    return out


def universe_targets(
    targets: Mapping[str, Decimal], held: Iterable[str], rules: Mapping[str, SymbolRules]
) -> tuple[dict[str, Decimal], dict[str, str]]:
    """Every target or held symbol -> net target; held symbols absent from the target and symbols not trading -> 0."""
    out: dict[str, Decimal] = {}
    notes: dict[str, str] = {}
    for symbol in sorted(set(targets) | set(held)):
        wanted = targets.get(symbol, ZERO)
        r = rules.get(symbol)
        if r is None:
            notes[symbol] = "not in exchangeInfo: cannot trade"
            continue
        if not r.trading and wanted != 0:
            notes[symbol] = f"status {r.status}: target set to 0"
            wanted = ZERO
        out[symbol] = wanted
    return out, notes


def apply_limits(
    targets: Mapping[str, Decimal],
    current: Mapping[str, Decimal],
    prices: Mapping[str, Decimal],
    equity: Decimal,
    rules: Mapping[str, SymbolRules],
    brackets: Mapping[str, list[Bracket]],
    limits: Limits,
) -> LimitedTargets:
    """Clip net targets to the per-symbol limits, then scale increases down to the gross-leverage limit."""
    out: dict[str, Decimal] = {}
    notes: dict[str, str] = {}
    book = equity * (limits.max_gross_leverage or Decimal(1))
    for symbol, t in targets.items():
        price = prices.get(symbol, ZERO)
        cap: Decimal | None = None
        if limits.max_symbol_share is not None:
            cap = limits.max_symbol_share * book
        if limits.leverage is not None and symbol in brackets:
            bracket_cap = max_notional_at(brackets[symbol], limits.leverage)
            if bracket_cap is not None and (cap is None or bracket_cap < cap):
                cap = bracket_cap
        if cap is not None and price > 0 and abs(t) * price > cap:
            clipped = rules[symbol].floor_qty(cap / price * sign(t), market=False) if symbol in rules else ZERO
            notes[symbol] = f"target {t} clipped to {clipped} by a {cap:.2f} USDT cap"
            t = clipped
        out[symbol] = t
    if limits.max_gross_leverage is not None:
        gross = sum((abs(t) * prices.get(s, ZERO) for s, t in out.items()), ZERO)
        if gross > book and gross > 0:
            scale = book / gross
            for symbol, t in out.items():
                was = current.get(symbol, ZERO)
                scaled = rules[symbol].floor_qty(t * scale, market=False) if symbol in rules else ZERO
                # never increase a position because of scaling: keep what is held when it lies between
                if sign(was) == sign(t) and abs(scaled) < abs(was) <= abs(t):
                    scaled = was
                out[symbol] = scaled
            notes["*"] = f"gross {gross:.2f} USDT over {book:.2f} (max_gross_leverage): targets scaled by {scale:.4f}"
    return LimitedTargets(out, notes)


def banded(
    desired: Mapping[Key, Decimal], current: Mapping[Key, Decimal], prices: Mapping[str, Decimal], band: Decimal
) -> tuple[dict[Key, Decimal], list[str]]:
    """Desired legs with moves inside the no-trade band replaced by the current amount (closes are kept)."""
    out = dict(desired)
    skipped = []
    for key, d in desired.items():
        c = current.get(key, ZERO)
        price = prices.get(key[0], ZERO)
        if d != c and d != 0 and abs(d - c) * price < band:
            out[key] = c
            skipped.append(key[0])
    return out, sorted(set(skipped))


def plan_moves(
    current: Mapping[Key, Decimal],
    desired: Mapping[Key, Decimal],
    rules: Mapping[str, SymbolRules],
    prices: Mapping[str, Decimal],
    *,
    market: bool = True,
) -> tuple[list[ChildOrder], dict[str, str]]:
    """The orders taking `current` to `desired` (reductions first), and why any move was not ordered."""
    orders: list[ChildOrder] = []
    skipped: dict[str, str] = {}
    for key in sorted(set(current) | set(desired)):
        symbol, position_side = key
        c, d = current.get(key, ZERO), desired.get(key, ZERO)
        if d == c:
            continue
        r = rules.get(symbol)
        price = prices.get(symbol, ZERO)
        if r is None or price <= 0:
            skipped[symbol] = "no rules or price"
            continue
        to_zero = d == 0 or sign(d) == -sign(c)
        if c != 0 and (to_zero or abs(d) < abs(c)):
            amount = abs(c) if to_zero else abs(c) - abs(d)
            hedge = position_side != "BOTH"
            # one-way closes round up (a reduce-only order is trimmed to the position); hedge-mode closes are
            # refused beyond the leg, so they round down
            qty = r.ceil_qty(amount, market) if to_zero and not hedge else r.floor_qty(amount, market)
            if hedge and qty * price < r.min_notional:
                if to_zero and abs(c) * price < r.min_notional:
                    # hedge-mode closes are not reduce-only orders, so MIN_NOTIONAL applies: top the leg up first,
                    # the next pass closes it whole
                    top = r.ceil_qty(r.min_notional * Decimal("1.05") / price, market)
                    orders.append(ChildOrder(symbol, position_side, _side(c), top, False, OPEN, market))
                    skipped[symbol] = f"dust {amount} under MIN_NOTIONAL in hedge mode: topped up to close"
                else:
                    skipped[symbol] = f"reduction {qty} under MIN_NOTIONAL in hedge mode: carried"
            elif qty > 0:
                orders.append(ChildOrder(symbol, position_side, _side(-c), qty, True, REDUCE, market))
            else:
                skipped[symbol] = f"reduction {amount} under one step"
        if d != 0 and (c == 0 or sign(d) != sign(c) or abs(d) > abs(c)):
            amount = abs(d) if (c == 0 or sign(d) != sign(c)) else abs(d) - abs(c)
            qty = r.floor_qty(amount, market)
            if qty == 0:
                skipped[symbol] = f"increase {amount} under one step"
            elif qty * price < r.min_notional:
                skipped[symbol] = f"increase {qty} under MIN_NOTIONAL {r.min_notional}"
            else:
                orders.append(ChildOrder(symbol, position_side, _side(d), qty, False, OPEN, market))
    orders.sort(key=lambda o: (o.leg != REDUCE, o.symbol, o.position_side))
    return orders, skipped


def _side(amount: Decimal) -> str:
    """The side that moves a position toward the sign of `amount`."""
    return "BUY" if amount > 0 else "SELL"


def split_order(
    order: ChildOrder, rules: SymbolRules, price: Decimal, max_order_notional: Decimal | None
) -> list[ChildOrder]:
    """Pieces within the grid's maxQty and the max order notional; reduce-only remainders keep their rounding."""
    _, low, high = rules.lot(order.market)
    cap = high
    if max_order_notional is not None and price > 0:
        cap = min(cap, max(low, rules.floor_qty(max_order_notional / price, order.market)))
    if order.quantity <= cap:
        return [order]
    pieces = []
    left = order.quantity
    while left > 0:
        qty = min(cap, left)
        if left - qty < low and left - qty > 0:  # do not leave an unsendable tail
            qty = rules.floor_qty(left / 2, order.market) or left
        pieces.append(qty)
        left -= qty
    return [
        ChildOrder(order.symbol, order.position_side, order.side, q, order.reduce_only, order.leg, order.market,
                   order.price, i, order.price_match)
        for i, q in enumerate(pieces)
    ]  # fmt: skip
