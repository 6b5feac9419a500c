"""A symbol's trading filters (from the instrument table) and the checks Binance applies with them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from simulator.errors import BinanceError
from simulator.trading import margin as m


@dataclass(frozen=True)
class Rules:
    """One symbol's trading filters, as Decimals."""

    symbol: str
    tick: Decimal
    min_price: Decimal
    max_price: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    percent_up: Decimal
    percent_down: Decimal
    maint_rate: Decimal
    price_precision: int
    qty_precision: int
    max_num_orders: int

    @classmethod
    def of(cls, inst: Any) -> Rules:
        def d(name: str) -> Decimal:
            return Decimal(str(getattr(inst, name)))

        return cls(
            symbol=inst.symbol,
            tick=d("tick_size"),
            min_price=d("min_price"),
            max_price=d("max_price"),
            step=d("step_size"),
            min_qty=d("min_qty"),
            max_qty=d("max_qty"),
            market_step=d("market_step_size"),
            market_min_qty=d("market_min_qty"),
            market_max_qty=d("market_max_qty"),
            min_notional=d("min_notional"),
            percent_up=d("percent_price_up"),
            percent_down=d("percent_price_down"),
            maint_rate=d("maint_margin_percent") / 100,
            price_precision=int(inst.price_precision),
            qty_precision=int(inst.quantity_precision),
            max_num_orders=int(inst.max_num_orders),
        )


def check_filters(rules: Rules, qty: Decimal, price: Decimal, is_market: bool) -> None:
    """PRICE_FILTER, LOT_SIZE / MARKET_LOT_SIZE and precision checks, with Binance's codes."""
    if qty <= 0:
        raise BinanceError(-4003, "Quantity less than or equal to zero.")
    if m.decimals(qty) > rules.qty_precision:
        raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
    if not is_market:
        if price <= 0:
            raise BinanceError(-4001, "Price less than 0.")
        if m.decimals(price) > rules.price_precision:
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if price < rules.min_price:
            raise BinanceError(-4013, "Price less than min price.")
        if price > rules.max_price:
            raise BinanceError(-4002, "Price greater than max price.")
        if not m.on_grid(price, rules.tick):
            raise BinanceError(-4014, "Price not increased by tick size.")
    step, low, high = (
        (rules.market_step, rules.market_min_qty, rules.market_max_qty)
        if is_market
        else (rules.step, rules.min_qty, rules.max_qty)
    )
    if qty < low:
        raise BinanceError(-4004, "Quantity less than min quantity.")
    if qty > high:
        raise BinanceError(-4005, "Quantity greater than max quantity.")
    if not m.on_grid(qty - low, step):
        raise BinanceError(-4023, "Quantity not increased by step size.")
