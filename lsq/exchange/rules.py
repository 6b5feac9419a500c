"""Symbol trading rules from exchangeInfo and leverage brackets: the one place sizing and execution learn how a
quantity or price must look before the exchange accepts it.

Quantities sit on the grid `minQty + k x stepSize` of LOT_SIZE (limit orders) or MARKET_LOT_SIZE (market orders);
prices on `tickSize`; MIN_NOTIONAL bounds every order that is not reduce-only; PERCENT_PRICE bounds limit prices
around the mark price. Brackets give, per leverage, the largest position notional allowed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Protocol

from lsq.clock import SYSTEM_CLOCK, Clock

ZERO = Decimal(0)


def to_decimal(value: object, what: str) -> Decimal:
    """A finite Decimal from an exchange string or number, else a ValueError naming `what`."""
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"{what} is not finite: {value!r}")
    return out


@dataclass(frozen=True)
class Bracket:
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal


@dataclass(frozen=True)
class SymbolRules:
    """One symbol's filters. Only the lot-size fields are required, so sizing tests can state just what they use."""

    symbol: str
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    max_qty: Decimal = Decimal("1e12")
    market_step_size: Decimal | None = None
    market_min_qty: Decimal | None = None
    market_max_qty: Decimal | None = None
    tick_size: Decimal = Decimal("1e-8")
    min_price: Decimal = ZERO
    max_price: Decimal = Decimal("1e12")
    percent_up: Decimal | None = None
    percent_down: Decimal | None = None
    status: str = "TRADING"

    @property
    def trading(self) -> bool:
        return self.status == "TRADING"

    def lot(self, market: bool) -> tuple[Decimal, Decimal, Decimal]:
        """(step, minQty, maxQty) of the order type: MARKET_LOT_SIZE for market orders when published."""
        if market and self.market_step_size is not None:
            return (
                self.market_step_size,
                self.market_min_qty if self.market_min_qty is not None else self.min_qty,
                self.market_max_qty if self.market_max_qty is not None else self.max_qty,
            )
        return self.step_size, self.min_qty, self.max_qty

    def floor_qty(self, qty: Decimal, market: bool) -> Decimal:
        """The largest grid quantity <= |qty| (0 below minQty); sign kept."""
        return self._on_grid(qty, market, ROUND_DOWN)

    def ceil_qty(self, qty: Decimal, market: bool) -> Decimal:
        """The smallest grid quantity >= |qty|; sign kept (for reduce-only closes, which the exchange trims)."""
        return self._on_grid(qty, market, ROUND_CEILING)

    def _on_grid(self, qty: Decimal, market: bool, rounding: str) -> Decimal:
        step, low, _ = self.lot(market)
        size = abs(qty)
        if size == 0:
            return ZERO
        if size < low:
            if rounding == ROUND_DOWN:
                return ZERO
            size = low
        steps = ((size - low) / step).to_integral_value(rounding=rounding)
        out = low + steps * step
        return out if qty > 0 else -out

    def floor_price(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value(rounding=ROUND_FLOOR) * self.tick_size

    def ceil_price(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value(rounding=ROUND_CEILING) * self.tick_size

    def clamp_limit_price(self, price: Decimal, mark: Decimal, side: str) -> Decimal:
        """A limit price on the tick grid inside PRICE_FILTER and PERCENT_PRICE around `mark`."""
        high, low = self.max_price, self.min_price
        if self.percent_up is not None and mark > 0:
            high = min(high, mark * self.percent_up)
        if self.percent_down is not None and mark > 0:
            low = max(low, mark * self.percent_down)
        price = min(max(price, low), high)
        on_grid = self.floor_price(price) if side == "BUY" else self.ceil_price(price)
        if on_grid > high:
            on_grid = self.floor_price(high)
        if on_grid < low:
            on_grid = self.ceil_price(low)
        return on_grid


def parse_exchange_info(exchange_info: Mapping[str, Any]) -> dict[str, SymbolRules]:
    """Symbol -> rules from a futures exchangeInfo answer; symbols without LOT_SIZE are left out."""
    out: dict[str, SymbolRules] = {}
    for entry in exchange_info.get("symbols", []):
        name = entry["symbol"]
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        lot = filters.get("LOT_SIZE")
        if lot is None:
            continue

        def d(f: Mapping[str, Any] | None, key: str, default: str | None = None, name: str = name) -> Decimal | None:
            if f is None or f.get(key) is None:
                return None if default is None else Decimal(default)
            return to_decimal(f[key], f"{name} {key}")

        step = to_decimal(lot["stepSize"], f"{name} stepSize")
        if step <= 0:
            raise ValueError(f"{name}: stepSize must be positive, got {lot['stepSize']!r}")
        market, price, pct = filters.get("MARKET_LOT_SIZE"), filters.get("PRICE_FILTER"), filters.get("PERCENT_PRICE")
        market_step = d(market, "stepSize")
        out[name] = SymbolRules(
            symbol=name,
            step_size=step,
            min_qty=d(lot, "minQty", "0") or ZERO,
            min_notional=d(filters.get("MIN_NOTIONAL"), "notional", "0") or ZERO,
            max_qty=d(lot, "maxQty", "1e12") or Decimal("1e12"),
            market_step_size=market_step if market_step and market_step > 0 else None,
            market_min_qty=d(market, "minQty"),
            market_max_qty=d(market, "maxQty"),
            tick_size=d(price, "tickSize", "1e-8") or Decimal("1e-8"),
            min_price=d(price, "minPrice", "0") or ZERO,
            max_price=d(price, "maxPrice", "1e12") or Decimal("1e12"),
            percent_up=d(pct, "multiplierUp"),
            percent_down=d(pct, "multiplierDown"),
            status=str(entry.get("status", "TRADING")),
        )
    return out


def parse_leverage_brackets(answer: Sequence[Mapping[str, Any]]) -> dict[str, list[Bracket]]:
    """Symbol -> brackets (by rising notional) from GET /fapi/v1/leverageBracket."""
    out: dict[str, list[Bracket]] = {}
    for entry in answer:
        brackets = [
            Bracket(
                int(b["initialLeverage"]),
                to_decimal(b.get("notionalFloor", 0), f"{entry['symbol']} notionalFloor"),
                to_decimal(b["notionalCap"], f"{entry['symbol']} notionalCap"),
            )
            for b in entry.get("brackets", [])
        ]
        out[entry["symbol"]] = sorted(brackets, key=lambda b: b.notional_cap)
    return out


def max_notional_at(brackets: Sequence[Bracket], leverage: int) -> Decimal | None:
    """Largest position notional allowed at `leverage` (None when the symbol has no brackets)."""
    allowed = [b.notional_cap for b in brackets if leverage <= b.initial_leverage]
    if not brackets:
        return None
    return max(allowed) if allowed else ZERO


class _InfoClient(Protocol):
    def futures_exchange_info(self) -> dict[str, Any]: ...
    def futures_leverage_bracket(self) -> list[dict[str, Any]]: ...


class RulesProvider:
    """exchangeInfo rules (and, with a signed client, the account's leverage brackets), fetched once and refreshed
    after `ttl_s`: they rarely change within an hour, and planning must not cost a request per symbol."""

    def __init__(self, client: _InfoClient, clock: Clock = SYSTEM_CLOCK, ttl_s: float = 3600.0) -> None:
        self._client = client
        self._clock = clock
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._rules: dict[str, SymbolRules] = {}
        self._rate_limits: list[dict[str, Any]] = []
        self._loaded_at: float | None = None
        self._brackets: dict[str, list[Bracket]] = {}
        self._brackets_at: float | None = None

    def _refresh(self) -> None:
        now = self._clock.monotonic()
        if self._loaded_at is not None and now - self._loaded_at < self._ttl_s:
            return
        info = self._client.futures_exchange_info()
        self._rules = parse_exchange_info(info)
        self._rate_limits = list(info.get("rateLimits", []))
        self._loaded_at = now

    def rules(self) -> dict[str, SymbolRules]:
        with self._lock:
            self._refresh()
            return dict(self._rules)

    def rate_limits(self) -> list[dict[str, Any]]:
        """exchangeInfo `rateLimits` (REQUEST_WEIGHT and ORDERS per interval)."""
        with self._lock:
            self._refresh()
            return list(self._rate_limits)

    def brackets(self) -> dict[str, list[Bracket]]:
        """Symbol -> leverage brackets of the client's account (GET /fapi/v1/leverageBracket, signed)."""
        with self._lock:
            now = self._clock.monotonic()
            if self._brackets_at is None or now - self._brackets_at >= self._ttl_s:
                self._brackets = parse_leverage_brackets(self._client.futures_leverage_bracket())
                self._brackets_at = now
            return dict(self._brackets)
