"""The simulated exchange's symbols, loaded from the real filters in instruments.csv.

Prices and quantities are handled as integers on each symbol's grid (ticks of `tick_size`, steps of `step_size`) so
that every aggregate is exact; the formatting helpers turn them back into Binance's strings, which carry as many
decimals as the tick/step is written with (ADAUSDT's tick "0.00010" prints prices like "0.95700", as Binance does).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import resources

import numpy as np
import polars as pl

PERPETUAL_DELIVERY_MS = 4133404800000  # Binance's deliveryDate for perpetuals (2100-12-25)
ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]
TIME_IN_FORCE = ["GTC", "IOC", "FOK", "GTX"]
DEFAULT_RATE_LIMITS: tuple[dict[str, object], ...] = (
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
)
_ASSETS = (
    {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
    {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "-0.00100000"},
    {"asset": "BNB", "marginAvailable": False, "autoAssetExchange": "0"},
    {"asset": "ETH", "marginAvailable": True, "autoAssetExchange": "-5"},
    {"asset": "BUSD", "marginAvailable": True, "autoAssetExchange": "-10000"},
)
_LEADERS = ("BTCUSDT", "ETHUSDT")
_INDEX_SYMBOLS = frozenset({"DEFIUSDT", "BTCDOMUSDT"})


def _decimals(text: str) -> int:
    """Decimals a grid size is written with: '0.00010' -> 5, '1' -> 0."""
    exponent = Decimal(text).as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _units(size: Decimal, decimals: int) -> int:
    """The grid size as an integer count of 10**-decimals."""
    value = size.scaleb(decimals)
    if value != value.to_integral_value() or value <= 0:
        raise ValueError(f"grid size {size} is not a positive multiple of 1e-{decimals}")
    return int(value)


def _format_units(units: int, decimals: int) -> str:
    sign = "-" if units < 0 else ""
    units = abs(units)
    if decimals == 0:
        return f"{sign}{units}"
    scale = 10**decimals
    return f"{sign}{units // scale}.{units % scale:0{decimals}d}"


def format_units_series(units: np.ndarray, decimals: int) -> pl.Series:
    """Non-negative integers in units of 10**-decimals -> fixed-point strings (a Polars Series: no Python loop)."""
    values = pl.Series("v", np.asarray(units, dtype=np.int64))
    if len(values) and values.min() < 0:  # type: ignore[operator]  # Polars: min() of an Int64 Series is an int
        raise ValueError("format_units_series takes non-negative values")
    if decimals == 0:
        return values.cast(pl.String)
    scale = 10**decimals
    v = pl.col("v")
    text = pl.concat_str([(v // scale).cast(pl.String), pl.lit("."), (v % scale).cast(pl.String).str.zfill(decimals)])
    return pl.DataFrame([values]).select(text.alias("v")).to_series()


def format_units_array(units: np.ndarray, decimals: int) -> list[str]:
    """As `format_units_series`, as a list."""
    return format_units_series(units, decimals).to_list()


@dataclass(frozen=True)
class Instrument:
    """One symbol's contract specification, exactly as exchangeInfo reports it."""

    symbol: str
    pair: str
    contract_type: str
    status: str
    base_asset: str
    quote_asset: str
    margin_asset: str
    onboard_date: int
    price_precision: int
    quantity_precision: int
    base_asset_precision: int
    quote_precision: int
    maint_margin_percent: str
    required_margin_percent: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    max_num_orders: int
    max_num_algo_orders: int
    min_notional: Decimal
    percent_price_up: str
    percent_price_down: str
    percent_price_decimal: str
    liquidation_fee: str
    market_take_bound: str
    trigger_protect: str
    ref_price: Decimal
    raw: Mapping[str, str] = dataclasses.field(repr=False, compare=False, hash=False)

    @property
    def tradable(self) -> bool:
        """Whether the simulator generates trades for it (USDT-margined TRADING perpetuals only)."""
        return self.contract_type == "PERPETUAL" and self.status == "TRADING" and self.quote_asset == "USDT"

    @property
    def price_decimals(self) -> int:
        return _decimals(self.raw["tick_size"])

    @property
    def qty_decimals(self) -> int:
        return _decimals(self.raw["step_size"])

    @property
    def tick_units(self) -> int:
        """The tick in units of 10**-price_decimals (1 for every power-of-ten tick)."""
        return _units(self.tick_size, self.price_decimals)

    @property
    def step_units(self) -> int:
        return _units(self.step_size, self.qty_decimals)

    @property
    def min_qty_steps(self) -> int:
        return max(1, int(self.min_qty / self.step_size))

    @property
    def max_qty_steps(self) -> int:
        return int(self.max_qty / self.step_size)

    def format_price(self, ticks: int) -> str:
        return _format_units(int(ticks) * self.tick_units, self.price_decimals)

    def format_qty(self, steps: int) -> str:
        return _format_units(int(steps) * self.step_units, self.qty_decimals)

    def format_prices(self, ticks: np.ndarray) -> list[str]:
        return format_units_array(np.asarray(ticks, dtype=np.int64) * self.tick_units, self.price_decimals)

    def format_qtys(self, steps: np.ndarray) -> list[str]:
        return format_units_array(np.asarray(steps, dtype=np.int64) * self.step_units, self.qty_decimals)

    def price_series(self, ticks: np.ndarray) -> pl.Series:
        return format_units_series(np.asarray(ticks, dtype=np.int64) * self.tick_units, self.price_decimals)

    def qty_series(self, steps: np.ndarray) -> pl.Series:
        return format_units_series(np.asarray(steps, dtype=np.int64) * self.step_units, self.qty_decimals)

    def price_to_ticks(self, price: Decimal | str) -> int:
        """Exact conversion; a price off the tick grid is an error naming the symbol."""
        ticks = Decimal(price) / self.tick_size
        if ticks != ticks.to_integral_value():
            raise ValueError(f"{self.symbol}: price {price} is not a multiple of tick size {self.raw['tick_size']}")
        return int(ticks)

    def qty_to_steps(self, qty: Decimal | str) -> int:
        steps = Decimal(qty) / self.step_size
        if steps != steps.to_integral_value():
            raise ValueError(f"{self.symbol}: quantity {qty} is not a multiple of step size {self.raw['step_size']}")
        return int(steps)

    def with_onboard(self, onboard_ms: int) -> Instrument:
        """A copy listed at `onboard_ms`: the simulator's first trade of it happens exactly then."""
        return dataclasses.replace(self, onboard_date=int(onboard_ms))

    def delivery_date(self) -> int:
        """Quarterlies deliver at 08:00 UTC on the date in their name (_YYMMDD); everything else reports 2100-12-25."""
        _, sep, suffix = self.symbol.rpartition("_")
        if not sep or self.contract_type == "PERPETUAL":
            return PERPETUAL_DELIVERY_MS
        day = datetime.strptime(suffix, "%y%m%d").replace(hour=8, tzinfo=UTC)
        return int(day.timestamp() * 1000)

    def exchange_info_entry(self) -> dict[str, object]:
        r = self.raw
        return {
            "symbol": self.symbol,
            "pair": self.pair,
            "contractType": self.contract_type,
            "deliveryDate": self.delivery_date(),
            "onboardDate": self.onboard_date,
            "status": self.status,
            "maintMarginPercent": self.maint_margin_percent,
            "requiredMarginPercent": self.required_margin_percent,
            "baseAsset": self.base_asset,
            "quoteAsset": self.quote_asset,
            "marginAsset": self.margin_asset,
            "pricePrecision": self.price_precision,
            "quantityPrecision": self.quantity_precision,
            "baseAssetPrecision": self.base_asset_precision,
            "quotePrecision": self.quote_precision,
            "underlyingType": "INDEX" if self.symbol in _INDEX_SYMBOLS else "COIN",
            "underlyingSubType": [],
            "settlePlan": 0,
            "triggerProtect": self.trigger_protect,
            "liquidationFee": self.liquidation_fee,
            "marketTakeBound": self.market_take_bound,
            "filters": [
                {
                    "minPrice": r["min_price"],
                    "maxPrice": r["max_price"],
                    "filterType": "PRICE_FILTER",
                    "tickSize": r["tick_size"],
                },
                {"stepSize": r["step_size"], "filterType": "LOT_SIZE", "maxQty": r["max_qty"], "minQty": r["min_qty"]},
                {
                    "stepSize": r["market_step_size"],
                    "filterType": "MARKET_LOT_SIZE",
                    "maxQty": r["market_max_qty"],
                    "minQty": r["market_min_qty"],
                },
                {"limit": self.max_num_orders, "filterType": "MAX_NUM_ORDERS"},
                {"limit": self.max_num_algo_orders, "filterType": "MAX_NUM_ALGO_ORDERS"},
                {"notional": r["min_notional"], "filterType": "MIN_NOTIONAL"},
                {
                    "multiplierDown": self.percent_price_down,
                    "multiplierUp": self.percent_price_up,
                    "multiplierDecimal": self.percent_price_decimal,
                    "filterType": "PERCENT_PRICE",
                },
            ],
            "orderTypes": list(ORDER_TYPES),
            "timeInForce": list(TIME_IN_FORCE),
        }


_DECIMAL_FIELDS = {
    "tick_size",
    "min_price",
    "max_price",
    "step_size",
    "min_qty",
    "max_qty",
    "market_step_size",
    "market_min_qty",
    "market_max_qty",
    "min_notional",
    "ref_price",
}
_INT_FIELDS = {
    "onboard_date",
    "price_precision",
    "quantity_precision",
    "base_asset_precision",
    "quote_precision",
    "max_num_orders",
    "max_num_algo_orders",
}


def parse_instruments(text: str, source: str = "instruments.csv") -> list[Instrument]:
    """Rows of the instrument table -> Instruments; a bad value is an error naming the source, line and column."""
    names = {f.name for f in dataclasses.fields(Instrument)} - {"raw"}
    reader = csv.DictReader(io.StringIO(text))
    missing = names - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{source}: missing columns {sorted(missing)}")
    out: list[Instrument] = []
    for line, row in enumerate(reader, start=2):
        values: dict[str, object] = {}
        for name in names:
            cell = (row[name] or "").strip()
            try:
                if name in _DECIMAL_FIELDS:
                    number = Decimal(cell)
                    if not number.is_finite():
                        raise ValueError
                    values[name] = number
                elif name in _INT_FIELDS:
                    values[name] = int(cell)
                else:
                    values[name] = cell
            except (ValueError, ArithmeticError):
                raise ValueError(f"{source} line {line}: bad {name} {cell!r}") from None
        # Each value was parsed to its field's type above, which a dict[str, object] cannot say.
        out.append(Instrument(raw={k: (v or "").strip() for k, v in row.items()}, **values))  # type: ignore[arg-type]
    return out


@cache
def _all_instruments() -> tuple[Instrument, ...]:
    text = resources.files("simulator").joinpath("instruments.csv").read_text(encoding="utf-8")
    return tuple(parse_instruments(text))


def all_instruments() -> list[Instrument]:
    """Every row of instruments.csv (122 real symbols), in file order."""
    return list(_all_instruments())


def excluded_instruments() -> list[Instrument]:
    """Rows a USDT-perpetual universe filter must drop (BUSD, quarterly, PENDING_TRADING): listed, never traded."""
    return [i for i in _all_instruments() if not i.tradable]


MAX_SYMBOLS = 1_000


def derived(source: Instrument, generation: int) -> Instrument:
    """A made-up symbol with `source`'s contract and filters (BTCUSDT, 2 -> BTC2USDT): scale tests need more symbols
    than the 117 real tradable ones, and the market model generates any symbol name deterministically."""
    base = f"{source.base_asset}{generation}"
    return dataclasses.replace(
        source, symbol=f"{base}{source.quote_asset}", pair=f"{base}{source.quote_asset}", base_asset=base
    )


def select_instruments(k: int = 40, onboard: Mapping[str, int] | None = None) -> list[Instrument]:
    """The first `k` TRADING USDT perpetuals (BTCUSDT, ETHUSDT first), with optional listing-time overrides; beyond
    the real ones, derived symbols (see `derived`).

    `onboard` maps symbol -> ms of its first trade, for tests that need a symbol listed mid-way.
    """
    tradable = [i for i in _all_instruments() if i.tradable]
    if not 1 <= k <= MAX_SYMBOLS:
        raise ValueError(f"k must be 1..{MAX_SYMBOLS}, got {k}")
    ordered = [i for s in _LEADERS for i in tradable if i.symbol == s] + [
        i for i in tradable if i.symbol not in _LEADERS
    ]
    chosen = [
        ordered[n % len(ordered)] if n < len(ordered) else derived(ordered[n % len(ordered)], n // len(ordered))
        for n in range(k)
    ]
    overrides = dict(onboard or {})
    unknown = set(overrides) - {i.symbol for i in chosen}
    if unknown:
        raise ValueError(f"onboard overrides for symbols not selected: {sorted(unknown)}")
    return [i.with_onboard(overrides[i.symbol]) if i.symbol in overrides else i for i in chosen]


def instruments_by_symbol(symbols: Iterable[str]) -> list[Instrument]:
    """Instruments for the given Binance symbols; an unknown one is an error naming it."""
    table = {i.symbol: i for i in _all_instruments()}
    wanted = list(symbols)
    unknown = [s for s in wanted if s not in table]
    if unknown:
        raise ValueError(f"symbols not in instruments.csv: {unknown}")
    return [table[s] for s in wanted]


def exchange_info(
    instruments: Sequence[Instrument],
    server_time_ms: int,
    rate_limits: Sequence[Mapping[str, object]] | None = None,
) -> dict[str, object]:
    """GET /fapi/v1/exchangeInfo's body: the given symbols plus the never-traded ones a universe filter must skip."""
    listed = list(instruments)
    present = {i.symbol for i in listed}
    listed += [i for i in excluded_instruments() if i.symbol not in present]
    return {
        "timezone": "UTC",
        "serverTime": int(server_time_ms),
        "futuresType": "U_MARGINED",
        "rateLimits": [dict(r) for r in (rate_limits if rate_limits is not None else DEFAULT_RATE_LIMITS)],
        "exchangeFilters": [],
        "assets": [dict(a) for a in _ASSETS],
        "symbols": [i.exchange_info_entry() for i in listed],
    }
