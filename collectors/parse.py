"""Parsing of market stream frames and REST aggTrade rows into plain tuples, validated field by field.

The collector's hot path: one json.loads per frame, then only the fields the store needs are checked. Anything
that does not look exactly like Binance's payload raises `MalformedFrame` with the reason, so that garbage is counted
and never reaches the store. Prices and quantities stay strings here (converted to Decimal(38, 8) in bulk at flush
time), so they are checked against a decimal pattern with at most 8 fraction digits: exactness is the store's promise.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

_DECIMAL = re.compile(r"^\d{1,29}(\.\d{1,8})?$")
_SIGNED_DECIMAL = re.compile(r"^-?\d{1,29}(\.\d{1,8})?$")
MARK_PRICE_STREAMS = frozenset({"!markPrice@arr@1s", "!markPrice@arr"})


class MalformedFrame(ValueError):
    """A frame or row that is not a well-formed Binance payload; the message says what is wrong."""


class AggTrade(NamedTuple):
    symbol: str
    agg_trade_id: int
    price: str
    quantity: str
    first_trade_id: int
    last_trade_id: int
    transact_time: int
    is_buyer_maker: bool
    event_time: int


class MarkPrice(NamedTuple):
    symbol: str
    event_time: int
    mark_price: str
    index_price: str
    estimated_settle_price: str
    funding_rate: str
    next_funding_time: int


class Response(NamedTuple):
    """The answer to a SUBSCRIBE/UNSUBSCRIBE request: `error` is None on success."""

    request_id: int | str | None
    error: str | None


_INT64_LIMIT = 2**63  # ids and times are stored as Int64: a larger value would block every later flush


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if type(v) is not int or not 0 <= v < _INT64_LIMIT:
        raise MalformedFrame(f"field {key!r} must be an integer in [0, 2**63), got {v!r}")
    return v


def _dec(d: dict[str, Any], key: str, pattern: re.Pattern[str] = _DECIMAL) -> str:
    v = d.get(key)
    if type(v) is not str or not pattern.match(v):
        raise MalformedFrame(f"field {key!r} must be a decimal string with at most 8 decimals, got {v!r}")
    return v


def trade_fields(d: dict[str, Any]) -> tuple[int, str, str, int, int, int, bool]:
    """(a, p, q, f, l, T, m) of an aggTrade payload or REST row, validated."""
    if not isinstance(d, dict):
        raise MalformedFrame(f"an aggTrade must be a JSON object, got {type(d).__name__}")
    m = d.get("m")
    if type(m) is not bool:
        raise MalformedFrame(f"field 'm' must be a boolean, got {m!r}")
    first, last = _int(d, "f"), _int(d, "l")
    if last < first:
        raise MalformedFrame(f"last trade id {last} < first trade id {first}")
    return _int(d, "a"), _dec(d, "p"), _dec(d, "q"), first, last, _int(d, "T"), m


def agg_trade(stream: str, data: Any) -> AggTrade:
    """An aggTrade payload of stream `<sym>@aggTrade`; the payload's symbol must match the stream's."""
    if not isinstance(data, dict) or data.get("e") != "aggTrade":
        raise MalformedFrame(f"stream {stream!r} carried something other than an aggTrade event")
    symbol = data.get("s")
    if type(symbol) is not str or symbol.lower() + "@aggtrade" != stream.lower():
        raise MalformedFrame(f"aggTrade symbol {symbol!r} does not match stream {stream!r}")
    a, p, q, f, last, t, m = trade_fields(data)
    return AggTrade(symbol, a, p, q, f, last, t, m, _int(data, "E"))


def mark_prices(data: Any) -> list[MarkPrice]:
    """The markPriceUpdate events of an `!markPrice@arr` payload."""
    if not isinstance(data, list):
        raise MalformedFrame("a markPrice array stream must carry a JSON list")
    out = []
    for item in data:
        if not isinstance(item, dict) or item.get("e") != "markPriceUpdate" or type(item.get("s")) is not str:
            raise MalformedFrame(f"not a markPriceUpdate event: {str(item)[:80]}")
        out.append(
            MarkPrice(
                item["s"],
                _int(item, "E"),
                _dec(item, "p"),
                _dec(item, "i"),
                _dec(item, "P"),
                _dec(item, "r", _SIGNED_DECIMAL),
                _int(item, "T"),
            )
        )
    return out


def parse_frame(raw: str | bytes) -> AggTrade | list[MarkPrice] | Response:
    """One frame of a combined stream connection: an aggTrade, a markPrice array, or a request's response."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedFrame(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise MalformedFrame(f"frame must be a JSON object, got {type(msg).__name__}")
    stream = msg.get("stream")
    if stream is None:
        if "id" in msg and ("result" in msg or "error" in msg):
            error = msg.get("error")
            return Response(msg["id"], None if error is None else str(error))
        raise MalformedFrame("frame has neither 'stream' nor a request 'id'")
    if type(stream) is not str:
        raise MalformedFrame(f"'stream' must be a string, got {stream!r}")
    data = msg.get("data")
    if stream.endswith("@aggTrade"):
        return agg_trade(stream, data)
    if stream in MARK_PRICE_STREAMS:
        return mark_prices(data)
    raise MalformedFrame(f"unknown stream {stream!r}")


def rest_trade(symbol: str, row: Any, event_time: int = 0) -> AggTrade:
    """A row of GET /fapi/v1/aggTrades as an AggTrade (event_time unknown: 0)."""
    a, p, q, f, last, t, m = trade_fields(row)
    return AggTrade(symbol, a, p, q, f, last, t, m, event_time)
