"""Parsing a request's parameters as Binance does: one clear error (with Binance's code) naming the bad parameter."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from simulator.errors import BinanceError, bad_param, mandatory_missing

CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
PRICE_MATCHES = (
    "NONE",
    "OPPONENT",
    "OPPONENT_5",
    "OPPONENT_10",
    "OPPONENT_20",
    "QUEUE",
    "QUEUE_5",
    "QUEUE_10",
    "QUEUE_20",
)
MAX_BATCH_ORDERS = 5
# Binance's documented incomeType values; the simulator books TRANSFER, REALIZED_PNL, FUNDING_FEE and COMMISSION.
INCOME_TYPES = (
    "TRANSFER",
    "WELCOME_BONUS",
    "REALIZED_PNL",
    "FUNDING_FEE",
    "COMMISSION",
    "INSURANCE_CLEAR",
    "REFERRAL_KICKBACK",
    "COMMISSION_REBATE",
    "API_REBATE",
    "CONTEST_REWARD",
    "CROSS_COLLATERAL_TRANSFER",
    "OPTIONS_PREMIUM_FEE",
    "OPTIONS_SETTLE_PROFIT",
    "INTERNAL_TRANSFER",
    "AUTO_EXCHANGE",
    "DELIVERED_SETTELMENT",
    "COIN_SWAP_DEPOSIT",
    "COIN_SWAP_WITHDRAW",
    "POSITION_LIMIT_INCREASE_FEE",
    "STRATEGY_UMFUTURES_TRANSFER",
    "FEE_RETURN",
    "BFUSD_REWARD",
)


def parse_decimal(params: Mapping[str, str], name: str) -> Decimal:
    text = params.get(name)
    if text is None or text == "":
        raise mandatory_missing(name)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise bad_param(name, text) from None
    if not value.is_finite():
        raise bad_param(name, text)
    return value


def parse_int(params: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise bad_param(name, text) from None


def parse_bool(params: Mapping[str, str], name: str) -> bool | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if text.lower() not in ("true", "false"):
        raise bad_param(name, text)
    return text.lower() == "true"


def choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], code: int, what: str) -> str:
    value = params.get(name)
    if not value:
        raise mandatory_missing(name)
    if value not in allowed:
        raise BinanceError(code, f"Invalid {what}.")
    return value


def parse_batch(params: Mapping[str, str]) -> list[dict[str, str]]:
    """The `batchOrders` parameter: a JSON list of at most 5 order objects, their values as strings."""
    text = params.get("batchOrders")
    if not text:
        raise mandatory_missing("batchOrders")
    try:
        orders = json.loads(text)
    except ValueError:
        raise BinanceError(-1130, "Data sent for parameter 'batchOrders' is not valid: not a JSON list.") from None
    if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders) or not orders:
        raise BinanceError(-1130, "Data sent for parameter 'batchOrders' is not valid: a list of order objects.")
    if len(orders) > MAX_BATCH_ORDERS:
        raise BinanceError(
            -1130, f"Data sent for parameter 'batchOrders' is not valid: at most {MAX_BATCH_ORDERS} orders."
        )
    return [{k: _as_param(v) for k, v in o.items()} for o in orders]


def _as_param(value: object) -> str:
    """A JSON value as the string a form parameter would carry (booleans as Binance's "true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def time_range(params: Mapping[str, str]) -> tuple[int | None, int | None]:
    """startTime and endTime; a range that ends before it starts is refused, not answered with an empty list."""
    start, end = parse_int(params, "startTime"), parse_int(params, "endTime")
    if start is not None and end is not None and start > end:
        raise BinanceError(-1130, f"Data sent for parameter 'startTime' is not valid: {start} is after endTime {end}.")
    return start, end


def limit_param(params: Mapping[str, str], default: int, maximum: int) -> int:
    """`limit`, `default` when absent, refused outside 1..`maximum`."""
    limit = parse_int(params, "limit", default)
    assert limit is not None
    if not 1 <= limit <= maximum:
        raise BinanceError(-1130, f"Data sent for parameter 'limit' is not valid: must be 1..{maximum}.")
    return limit
