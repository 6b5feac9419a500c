"""Binance's public USDⓈ-M market-data REST endpoints over a `MarketLike`, with Binance's parameter validation.

Handlers never let an exception escape other than `BinanceError`: a bad parameter gets the code Binance answers
(-1102 missing, -1121 unknown symbol, -1100/-1130 bad values, -1120 bad interval, -1127/-1128 bad aggTrades ranges).
Generation can take tens of milliseconds per symbol-day, so the heavy handlers run in a small pool of their own
(`MarketWork`): a burst of history requests then queues behind itself, never in front of the stream pump (which has
its own thread) nor on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from lsq.timelabels import HOUR_MS
from simulator.clock import Clock
from simulator.errors import BinanceError, bad_param, invalid_symbol, mandatory_missing
from simulator.instruments import exchange_info
from simulator.market import KLINE_INTERVALS, MarketLike, NoTradesError, UnknownSymbolError
from simulator.ratelimit import FUNDING_QUOTA
from simulator.routing import Endpoint, Handler, Request

KLINE_LIMIT = (500, 1500)  # (default, max)
REST_WORKERS = 2  # threads for heavy market handlers: a bound on the CPU a burst of history requests can take
AGG_TRADES_LIMIT = (500, 1000)
FUNDING_LIMIT = (100, 1000)
_INT_RE = re.compile(r"^-?[0-9]{1,20}$")


def invalid_interval() -> BinanceError:
    return BinanceError(-1120, "Invalid interval.")


def invalid_value(name: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")


def range_too_long() -> BinanceError:
    return BinanceError(-1127, "More than 1 hours between startTime and endTime.")


def bad_combination() -> BinanceError:
    return BinanceError(-1128, "Combination of optional parameters invalid.")


def _int_param(params: Mapping[str, str], name: str, required: bool = False) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise mandatory_missing(name)
        return None
    if not _INT_RE.match(raw):
        raise bad_param(name, raw)
    value = int(raw)
    if value < 0:
        raise invalid_value(name)
    return value


def _limit(params: Mapping[str, str], bounds: tuple[int, int]) -> int:
    default, maximum = bounds
    value = _int_param(params, "limit")
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise invalid_value("limit")
    return value


def _symbol(market: MarketLike, params: Mapping[str, str], required: bool = True) -> str | None:
    symbol = params.get("symbol")
    if not symbol:
        if required:
            raise mandatory_missing("symbol")
        return None
    if symbol not in market.instruments:
        raise invalid_symbol()
    return symbol


def _interval(params: Mapping[str, str]) -> str:
    interval = params.get("interval")
    if not interval:
        raise mandatory_missing("interval")
    if interval not in KLINE_INTERVALS:
        raise invalid_interval()
    return interval


def _time_range(params: Mapping[str, str]) -> tuple[int | None, int | None]:
    start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
    if start is not None and end is not None and start > end:
        raise bad_combination()
    return start, end


def kline_weight(params: Mapping[str, str]) -> int:
    """Binance's weight by limit: <100 → 1, <500 → 2, ≤1000 → 5, else 10 (an unparsable limit weighs the default)."""
    raw = params.get("limit", "")
    limit = int(raw) if raw.isdigit() else KLINE_LIMIT[0]
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def ticker_weight(params: Mapping[str, str]) -> int:
    return 1 if params.get("symbol") else 40


_T = TypeVar("_T")


class MarketWork:
    """The bounded thread pool heavy market reads run in (klines, aggTrades, funding, bulk files).

    asyncio's default pool is shared with everything else in the process; a few slow history requests there once
    held the stream pump back for minutes. Here they wait for each other only."""

    def __init__(self, workers: int = REST_WORKERS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-market-rest")

    async def run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def market_endpoints(
    market: MarketLike,
    clock: Clock,
    rate_limits: Sequence[Mapping[str, object]] | None = None,
    work: MarketWork | None = None,
) -> list[Endpoint]:
    """The public endpoints; `rate_limits` is what exchangeInfo advertises (Binance's defaults when None); heavy
    reads run in `work` (a pool of its own when None)."""
    pool = work or MarketWork()

    async def _run(fn: Callable[[], Any]) -> Any:
        """Run market work in the pool; a lookup failure the validation missed still answers as Binance would."""
        try:
            return await pool.run(fn)
        except UnknownSymbolError:
            raise invalid_symbol() from None
        except NoTradesError:  # asked about a symbol that is not trading yet
            raise invalid_symbol() from None

    async def ping(req: Request) -> dict[str, Any]:
        return {}

    async def server_time(req: Request) -> dict[str, Any]:
        return {"serverTime": clock.now_ms()}

    async def info(req: Request) -> dict[str, Any]:
        now = req.server_time_ms
        listed = [
            i if market.first_trade_ms(i.symbol) <= now else dataclasses.replace(i, status="PENDING_TRADING")
            for i in market.instruments.values()
        ]
        return exchange_info(listed, now, rate_limits)

    def kline_handler(rows: Callable[..., list[list[Any]]]) -> Handler:
        """klines and premiumIndexKlines take the same parameters and differ only in the rows they serve."""

        async def handler(req: Request) -> Any:
            p = req.params
            symbol = _symbol(market, p)
            assert symbol is not None
            interval = _interval(p)
            start, end = _time_range(p)
            limit = _limit(p, KLINE_LIMIT)
            now = req.server_time_ms
            return await _run(lambda: rows(symbol, interval, start, end, limit, now_ms=now))

        return handler

    klines = kline_handler(market.klines)
    premium_klines = kline_handler(market.premium_index_klines)

    async def agg_trades(req: Request) -> Any:
        p = req.params
        symbol = _symbol(market, p)
        assert symbol is not None
        from_id = _int_param(p, "fromId")
        start, end = _time_range(p)
        limit = _limit(p, AGG_TRADES_LIMIT)
        if from_id is not None and (start is not None or end is not None):
            raise bad_combination()
        if start is not None and end is not None and end - start >= HOUR_MS:
            raise range_too_long()
        now = req.server_time_ms
        return await _run(lambda: _agg_trades(market, symbol, from_id, start, end, limit, now))

    async def ticker(req: Request) -> Any:
        symbol = _symbol(market, req.params, required=False)
        now = req.server_time_ms
        if symbol is not None:
            return await _run(lambda: market.ticker_24h(symbol, now))
        return await _run(lambda: [market.ticker_24h(s, now) for s in _live_symbols(market, now)])

    async def funding(req: Request) -> Any:
        p = req.params
        symbol = _symbol(market, p, required=False)
        start, end = _time_range(p)
        limit = _limit(p, FUNDING_LIMIT)
        now = req.server_time_ms
        if symbol is not None:
            return await _run(lambda: market.funding_rates(symbol, start, end, limit, now_ms=now))
        return await _run(lambda: _all_symbols_funding(market, start, end, limit, now))

    async def premium_index(req: Request) -> Any:
        symbol = _symbol(market, req.params, required=False)
        now = req.server_time_ms
        if symbol is not None:
            return await _run(lambda: market.premium_index(symbol, now))
        return await _run(lambda: [market.premium_index(s, now) for s in _live_symbols(market, now)])

    return [
        Endpoint("GET", "/fapi/v1/ping", ping, 1),
        Endpoint("GET", "/fapi/v1/time", server_time, 1),
        Endpoint("GET", "/fapi/v1/exchangeInfo", info, 1),
        Endpoint("GET", "/fapi/v1/klines", klines, kline_weight),
        Endpoint("GET", "/fapi/v1/premiumIndexKlines", premium_klines, kline_weight),
        Endpoint("GET", "/fapi/v1/aggTrades", agg_trades, 20),
        Endpoint("GET", "/fapi/v1/ticker/24hr", ticker, ticker_weight),
        # Binance: no request weight, a quota of 500 requests per 5 min per IP shared with fundingInfo.
        Endpoint("GET", "/fapi/v1/fundingRate", funding, 0, quota=FUNDING_QUOTA),
        Endpoint("GET", "/fapi/v1/premiumIndex", premium_index, 1),
    ]


def _live_symbols(market: MarketLike, now_ms: int) -> list[str]:
    """Symbols already listed at `now_ms` (a symbol due to list later is not in the all-symbols answers yet)."""
    return [s for s in market.instruments if market.first_trade_ms(s) <= now_ms]


def _all_symbols_funding(
    market: MarketLike, start: int | None, end: int | None, limit: int, now: int
) -> list[dict[str, Any]]:
    """Every symbol's settlements in time order, the first `limit` from `start` (the latest `limit` without one).

    Settlement times are cheap and rates are not, so the times are chosen first and only the chosen ones priced:
    a request from the epoch over 40 symbols prices `limit` settlements, not 40 × `limit`."""
    stop = now if end is None else min(end, now)
    chosen: list[tuple[int, str]] = []
    for symbol in market.instruments:
        step = market.funding_interval_hours(symbol) * HOUR_MS
        lo = start if start is not None else stop - limit * step
        times = market.funding_times(symbol, lo, stop + 1)
        times = times[:limit] if start is not None else times[-limit:]
        chosen.extend((t, symbol) for t in times)
    chosen = heapq.nsmallest(limit, chosen) if start is not None else sorted(heapq.nlargest(limit, chosen))
    rows: list[dict[str, Any]] = []
    for symbol in {s for _, s in chosen}:
        times = [t for t, s in chosen if s == symbol]
        rows += market.funding_rates(symbol, times[0], times[-1], len(times), now_ms=now)
    rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
    return rows


def _agg_trades(
    market: MarketLike,
    symbol: str,
    from_id: int | None,
    start: int | None,
    end: int | None,
    limit: int,
    now: int,
) -> list[dict[str, object]]:
    """Binance's selection: by fromId; else by time (T in [start, end], one hour at most); else the latest."""
    if from_id is not None:
        return market.trades_from_id(symbol, from_id, limit, end_ms=now).to_rest_rows()
    if start is None and end is None:
        next_id = market.first_id_at(symbol, now + 1)
        return market.trades_from_id(symbol, max(0, next_id - limit), limit, end_ms=now).to_rest_rows()
    if start is None:
        assert end is not None
        start = end - HOUR_MS + 1
    if end is None:
        end = start + HOUR_MS - 1
    block = market.trades(symbol, start, min(end, now) + 1)
    return block[:limit].to_rest_rows()
