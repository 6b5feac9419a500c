"""Pure Decimal maths of a USDⓈ-M account: execution prices, position averaging, PnL, margin, liquidation.

Everything here is a small pure function so the arithmetic can be tested on its own; no floats anywhere.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal

ZERO = Decimal(0)
ONE = Decimal(1)
TAKER_FEE = Decimal("0.0004")
MAKER_FEE = Decimal("0.0002")
ENTRY_PLACES = Decimal("1e-10")  # entry prices keep more digits than any tick: they are averages
MONEY_PLACES = Decimal("1e-8")  # USDT amounts, as Binance shows them
# Market impact: a market order of this much notional moves its price by IMPACT_AT_REFERENCE (square-root law).
IMPACT_REFERENCE_NOTIONAL = Decimal(1_000_000)
IMPACT_AT_REFERENCE = Decimal("0.001")
MAX_MARKET_FILLS = 3

# Binance-like leverage brackets: (highest leverage allowed, largest position notional at that leverage).
LEVERAGE_BRACKETS: tuple[tuple[int, int], ...] = (
    (125, 50_000),
    (100, 250_000),
    (50, 3_000_000),
    (20, 15_000_000),
    (10, 50_000_000),
    (5, 100_000_000),
    (4, 200_000_000),
    (3, 300_000_000),
    (2, 500_000_000),
    (1, 800_000_000),
)


def sign(side: str) -> int:
    """+1 for BUY, -1 for SELL."""
    return 1 if side == "BUY" else -1


def fmt(x: Decimal) -> str:
    """Binance's string form of a number: plain notation, no exponent, trailing zeros dropped ("0" for zero)."""
    if x == 0:
        return "0"
    text = format(x.normalize(), "f")
    return text


def money(x: Decimal) -> Decimal:
    return x.quantize(MONEY_PLACES)


def on_grid(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_CEILING) * step


def decimals(value: Decimal) -> int:
    """Number of significant decimal places of `value` (trailing zeros ignored)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def half_spread_ticks(symbol: str) -> int:
    """A stable per-symbol half spread of 1 to 3 ticks, so symbols differ but runs are reproducible."""
    return 1 + zlib.crc32(symbol.encode()) % 3


def impact_fraction(notional: Decimal) -> Decimal:
    """Relative price impact of taking `notional` USDT at once: square root of its size against the reference."""
    if notional <= 0:
        return ZERO
    return IMPACT_AT_REFERENCE * (notional / IMPACT_REFERENCE_NOTIONAL).sqrt()


def split_quantity(qty: Decimal, step: Decimal, parts: int = MAX_MARKET_FILLS) -> list[Decimal]:
    """Split `qty` into at most `parts` step-aligned chunks (largest first), as a taker walks a few levels."""
    steps = int(qty / step)
    parts = max(1, min(parts, steps))
    base, extra = divmod(steps, parts)
    return [(base + (1 if i < extra else 0)) * step for i in range(parts)]


def taker_prices(side: str, mid: Decimal, tick: Decimal, chunks: list[Decimal], spread_ticks: int) -> list[Decimal]:
    """Execution price of each chunk of a taker order: mid ± half spread ± impact of the cumulative notional,
    rounded away from the taker onto the tick grid (a buyer never pays less than the grid allows)."""
    s = sign(side)
    prices: list[Decimal] = []
    cumulative = ZERO
    for chunk in chunks:
        cumulative += chunk * mid
        raw = mid + s * (spread_ticks * tick + mid * impact_fraction(cumulative))
        price = ceil_to(raw, tick) if s > 0 else floor_to(raw, tick)
        prices.append(max(price, tick))
    return prices


def quantity_within(
    side: str, mid: Decimal, tick: Decimal, spread_ticks: int, limit: Decimal, step: Decimal
) -> Decimal:
    """Largest step-aligned quantity a taker LIMIT order can take before spread plus impact passes its price
    (inverting the square-root impact law of `taker_prices`)."""
    room = (limit - mid) * sign(side) - spread_ticks * tick
    if room < 0:
        return ZERO
    notional = IMPACT_REFERENCE_NOTIONAL * (room / (mid * IMPACT_AT_REFERENCE)) ** 2
    return floor_to(notional / mid, step)


def best_quote(side: str, mid: Decimal, tick: Decimal, spread_ticks: int) -> Decimal:
    """The best price a taker on `side` would get: the ask for a buyer, the bid for a seller."""
    raw = mid + sign(side) * spread_ticks * tick
    return ceil_to(raw, tick) if side == "BUY" else floor_to(raw, tick)


@dataclass(frozen=True)
class FillEffect:
    """What one fill does to a position: the new signed amount and entry price, and the PnL realized."""

    amount: Decimal
    entry_price: Decimal
    realized_pnl: Decimal


def apply_fill(amount: Decimal, entry_price: Decimal, side: str, qty: Decimal, price: Decimal) -> FillEffect:
    """Apply a fill of `qty` at `price` to a signed position: average in when adding, realize PnL when reducing,
    and open the remainder at the fill price when the fill flips the position."""
    delta = sign(side) * qty
    new_amount = amount + delta
    if amount == 0 or (amount > 0) == (delta > 0):
        total = abs(amount) + qty
        entry = ((abs(amount) * entry_price + qty * price) / total).quantize(ENTRY_PLACES)
        return FillEffect(new_amount, entry, ZERO)
    closed = min(abs(amount), qty)
    direction = 1 if amount > 0 else -1
    realized = money(closed * (price - entry_price) * direction)
    if new_amount == 0:
        return FillEffect(ZERO, ZERO, realized)
    if (new_amount > 0) == (amount > 0):
        return FillEffect(new_amount, entry_price, realized)
    return FillEffect(new_amount, price, realized)


def unrealized_pnl(amount: Decimal, entry_price: Decimal, mark: Decimal) -> Decimal:
    return money(amount * (mark - entry_price))


def commission(qty: Decimal, price: Decimal, maker: bool) -> Decimal:
    return money(qty * price * (MAKER_FEE if maker else TAKER_FEE))


def funding_payment(amount: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    """Funding received (positive) or paid (negative): longs pay shorts when the rate is positive."""
    return money(-amount * mark * rate)


def initial_margin(notional: Decimal, leverage: int) -> Decimal:
    return abs(notional) / leverage


def maint_margin(notional: Decimal, maint_rate: Decimal) -> Decimal:
    return abs(notional) * maint_rate


def max_notional(leverage: int) -> Decimal:
    """Largest position notional allowed at `leverage` under LEVERAGE_BRACKETS."""
    allowed = [cap for max_lev, cap in LEVERAGE_BRACKETS if leverage <= max_lev]
    return Decimal(max(allowed) if allowed else 0)


def leverage_brackets(maint_rate: Decimal) -> list[dict[str, object]]:
    """The `brackets` of GET /fapi/v1/leverageBracket from LEVERAGE_BRACKETS: each bracket's notional range and
    highest leverage. The engine charges one maintenance rate per symbol at every size, so every bracket shows that
    rate and `cum` (the maintenance amount Binance adds when the rate steps up) is 0: what is shown is charged."""
    brackets: list[dict[str, object]] = []
    floor = 0
    for number, (leverage, cap) in enumerate(LEVERAGE_BRACKETS, start=1):
        brackets.append(
            {
                "bracket": number,
                "initialLeverage": leverage,
                "notionalCap": cap,
                "notionalFloor": floor,
                "maintMarginRatio": float(maint_rate),
                "cum": 0.0,
            }
        )
        floor = cap
    return brackets


def break_even_price(amount: Decimal, entry_price: Decimal) -> Decimal:
    """Price at which closing (as taker) returns the opening taker fee too: long ep(1+f)/(1-f), short ep(1-f)/(1+f)."""
    if amount == 0:
        return ZERO
    if amount > 0:
        return (entry_price * (ONE + TAKER_FEE) / (ONE - TAKER_FEE)).quantize(ENTRY_PLACES)
    return (entry_price * (ONE - TAKER_FEE) / (ONE + TAKER_FEE)).quantize(ENTRY_PLACES)


def liquidation_price(
    amount: Decimal, entry_price: Decimal, margin_balance: Decimal, maint_rate: Decimal, tick: Decimal
) -> Decimal:
    """Approximate liquidation price of one position, Binance's single-position formula without the bracket's
    maintenance amount:  LP = (WB - side*Q*EP) / (|Q|*MMR - side*Q)  where WB is the margin backing the position
    (the isolated wallet, or for cross the wallet balance less the other positions' maintenance margin plus their
    unrealized PnL). 0 when there is no position or the position cannot be liquidated (a fully funded long)."""
    if amount == 0:
        return ZERO
    q = abs(amount)
    s = 1 if amount > 0 else -1
    denominator = q * maint_rate - s * q
    if denominator == 0:
        return ZERO
    price = (margin_balance - s * q * entry_price) / denominator
    if price <= 0:
        return ZERO
    return price.quantize(tick, rounding=ROUND_DOWN)
