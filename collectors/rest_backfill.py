"""A paced, verified REST fetcher of aggTrades by id, shared by `lsq backfill-trades` and the collector's gap repair.

GET /fapi/v1/aggTrades?symbol=S&fromId=N&limit=1000 (weight 20) returns trades with ids N, N+1, ... in order.
Pacing follows what the exchange says: the limit is exchangeInfo's REQUEST_WEIGHT per minute, the current use is
each response's X-MBX-USED-WEIGHT-1M, and before a request that would pass `headroom` of the limit the fetcher sleeps
until the exchange's next minute. A 429 or 418 is answered by waiting Retry-After (Binance: keep sending after a 429
and the IP is banned); 5xx and connection errors are retried with exponential backoff. Every batch is checked to
continue the ids exactly where the previous one ended; a hole is requested again by fromId, never skipped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import polars as pl

from collectors.bulk import DECIMAL_PATTERN
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.schema import TRADE_SCHEMA
from lsq.timelabels import MINUTE_MS

log = logging.getLogger(__name__)

AGG_TRADES_PATH = "/fapi/v1/aggTrades"
AGG_TRADES_WEIGHT = 20
AGG_TRADES_LIMIT = 1000
DEFAULT_WEIGHT_LIMIT = 2400
MAX_RETRIES = 8
MAX_HOLE_RETRIES = 3

OnBatch = Callable[[pl.DataFrame], Awaitable[None] | None]


class RestFetchError(RuntimeError):
    """The exchange kept failing, or served ids that are not contiguous even when asked again."""


@dataclass
class WeightPacer:
    """Client-side view of the exchange's request-weight budget for the current minute (shared by all tasks).

    `clock_offset_ms` is server time minus local time (from GET /fapi/v1/time), so the minute rolls over when the
    exchange's does.
    """

    limit: int = DEFAULT_WEIGHT_LIMIT
    headroom: float = 0.8
    clock_offset_ms: int = 0
    used: int = 0
    minute: int = -1
    waited_s: float = 0.0
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def server_ms(self) -> int:
        return self.clock.now_ms() + self.clock_offset_ms

    async def acquire(self, weight: int) -> None:
        """Wait until `weight` more fits under headroom x limit in the exchange's current minute."""
        async with self._lock:
            while True:
                now = self.server_ms()
                if now // MINUTE_MS != self.minute:
                    self.minute, self.used = now // MINUTE_MS, 0
                if self.used + weight <= self.limit * self.headroom:
                    self.used += weight
                    return
                await self._sleep((self.minute + 1) * MINUTE_MS - now + 250)

    def observe(self, headers: Any) -> None:
        """Take the exchange's own count (X-MBX-USED-WEIGHT-1M) as the truth for the current minute."""
        value = headers.get("X-MBX-USED-WEIGHT-1M")
        if value is not None and value.isdigit():
            minute = self.server_ms() // MINUTE_MS
            if minute == self.minute:
                self.used = max(self.used, int(value))
            else:
                self.minute, self.used = minute, int(value)

    async def penalty(self, seconds: float) -> None:
        """The exchange refused us (429/418): nobody sends until it said we may."""
        async with self._lock:
            await self._sleep(seconds * 1000)
            self.minute, self.used = -1, 0

    async def _sleep(self, ms: float) -> None:
        seconds = max(0.0, ms / 1000)
        self.waited_s += seconds
        log.info("request weight: pausing %.1f s", seconds)
        await self.clock.asleep(seconds)


@dataclass
class RestSource:
    """Where and how to call the exchange: an aiohttp session, the REST base URL and the shared pacer."""

    session: aiohttp.ClientSession
    rest_url: str
    pacer: WeightPacer = field(default_factory=WeightPacer)
    requests: int = 0
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False)

    def __post_init__(self) -> None:
        self.pacer.clock = self.clock

    def url(self, path: str) -> str:
        return self.rest_url.rstrip("/") + path

    async def get(self, path: str, params: dict[str, Any], weight: int) -> Any:
        """GET a public endpoint, paced and retried; returns the decoded JSON or raises RestFetchError."""
        delay = 0.5
        for attempt in range(MAX_RETRIES):
            await self.pacer.acquire(weight)
            try:
                async with self.session.get(self.url(path), params=params) as response:
                    self.requests += 1
                    self.pacer.observe(response.headers)
                    if response.status == 200:
                        return await response.json(content_type=None)
                    body = (await response.text())[:300]
                    if response.status in (418, 429):
                        wait = _retry_after(response.headers, fallback=60.0)
                        log.warning("GET %s: HTTP %d, waiting %.0f s as asked: %s", path, response.status, wait, body)
                        await self.pacer.penalty(wait)
                        continue
                    if response.status < 500:
                        raise RestFetchError(f"GET {path} {params}: HTTP {response.status} {body}")
                    log.warning("GET %s: HTTP %d (attempt %d): %s", path, response.status, attempt + 1, body)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                # a dropped connection, a body cut short or a 200 that is not JSON: retried like a 5xx
                log.warning("GET %s: %s (attempt %d)", path, exc, attempt + 1)
            await self.clock.asleep(delay)
            delay = min(delay * 2, 30.0)
        raise RestFetchError(f"GET {path} {params}: still failing after {MAX_RETRIES} attempts")

    async def configure(self) -> None:
        """Learn the exchange's clock offset and advertised REQUEST_WEIGHT limit (exchangeInfo rateLimits).

        An exchange that cannot be reached at all fails at once (no retries), with its URL in the message.
        """
        before = self.clock.now_ms()
        try:
            async with self.session.get(self.url("/fapi/v1/ping")) as response:
                await response.read()
        except aiohttp.ClientConnectionError as exc:
            raise RestFetchError(f"cannot reach the exchange at {self.rest_url}: {exc}") from None
        server = await self.get("/fapi/v1/time", {}, 1)
        after = self.clock.now_ms()
        self.pacer.clock_offset_ms = int(server["serverTime"]) - (before + after) // 2
        info = await self.get("/fapi/v1/exchangeInfo", {}, 1)
        self.pacer.limit = weight_limit_per_minute(info.get("rateLimits", []))

    async def server_time_ms(self) -> int:
        return int((await self.get("/fapi/v1/time", {}, 1))["serverTime"])


def weight_limit_per_minute(rate_limits: list[dict[str, Any]]) -> int:
    """The REQUEST_WEIGHT limit normalised to one minute (the smallest if several are given)."""
    per_minute = []
    for rule in rate_limits:
        if rule.get("rateLimitType") != "REQUEST_WEIGHT":
            continue
        unit = {"SECOND": 1 / 60, "MINUTE": 1, "HOUR": 60, "DAY": 1440}.get(str(rule.get("interval")))
        if unit:
            per_minute.append(int(rule["limit"] / (unit * int(rule.get("intervalNum", 1)))))
    return min(per_minute) if per_minute else DEFAULT_WEIGHT_LIMIT


def _retry_after(headers: Any, fallback: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(1.0, float(value))
    except (TypeError, ValueError):
        return fallback


def rows_to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """REST aggTrade rows {a, p, q, f, l, T, m} -> TRADE_SCHEMA (prices/quantities parsed exactly from strings)."""
    try:
        frame = pl.DataFrame(
            {
                "agg_trade_id": [r["a"] for r in rows],
                "price": [r["p"] for r in rows],
                "quantity": [r["q"] for r in rows],
                "first_trade_id": [r["f"] for r in rows],
                "last_trade_id": [r["l"] for r in rows],
                "transact_time": [r["T"] for r in rows],
                "is_buyer_maker": [r["m"] for r in rows],
            },
            schema={**TRADE_SCHEMA, "price": pl.String(), "quantity": pl.String()},
            strict=True,
        )
    except (KeyError, TypeError, pl.exceptions.PolarsError) as exc:
        raise RestFetchError(f"malformed aggTrades rows from the exchange: {exc!r}"[:300]) from None
    exact = pl.col("price").str.contains(DECIMAL_PATTERN) & pl.col("quantity").str.contains(DECIMAL_PATTERN)
    bad = frame.filter(~exact | pl.any_horizontal(pl.all().is_null()))
    if bad.height:
        raise RestFetchError(f"aggTrade {bad.row(0)} has a price/quantity that is not a decimal with <= 8 places")
    return frame.with_columns(pl.col("price", "quantity").cast(pl.Decimal(38, 8)))


@dataclass(frozen=True)
class Until:
    """Where a fetch stops: after agg id `last_id` (inclusive) and/or before transact_time `end_ms` (exclusive)."""

    last_id: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if self.last_id is None and self.end_ms is None:
            raise ValueError("Until needs last_id or end_ms")


async def fetch_agg_trades_from_id(
    source: RestSource, symbol: str, from_id: int, until: Until, on_batch: OnBatch
) -> int:
    """Fetch `symbol`'s aggTrades from `from_id` until `until`, handing contiguous batches (TRADE_SCHEMA) to on_batch.

    Stops at `until`, or when the exchange has nothing newer (caught up with now). Returns the number of trades
    delivered. Ids are verified contiguous from `from_id`: a batch with a hole is cut at the hole and the rest is
    requested again from the first missing id; a hole that persists raises RestFetchError.
    """
    next_id = int(from_id)
    delivered = 0
    hole_retries = 0
    while until.last_id is None or next_id <= until.last_id:
        rows = await source.get(
            AGG_TRADES_PATH, {"symbol": symbol, "fromId": next_id, "limit": AGG_TRADES_LIMIT}, AGG_TRADES_WEIGHT
        )
        if not isinstance(rows, list):
            raise RestFetchError(f"{symbol} fromId={next_id}: expected a list of aggTrades, got {str(rows)[:200]}")
        if not rows:
            break
        batch = rows_to_frame(rows)
        ids = batch["agg_trade_id"]
        expected = pl.int_range(next_id, next_id + batch.height, eager=True, dtype=pl.Int64)
        breaks = (ids != expected).arg_true()
        contiguous = int(breaks[0]) if breaks.len() else batch.height
        if contiguous < batch.height:
            missing_from = next_id + contiguous
            hole_retries = hole_retries + 1 if contiguous == 0 else 1
            log.warning(
                "%s: expected id %d, got %d; asking again from %d", symbol, missing_from, ids[contiguous], missing_from
            )
            if hole_retries > MAX_HOLE_RETRIES:
                raise RestFetchError(
                    f"{symbol}: the exchange skips ids from {missing_from} (got {ids[contiguous]}; "
                    f"asked {hole_retries} times)"
                )
            batch = batch.head(contiguous)
            await source.clock.asleep(0.2 * hole_retries)
        else:
            hole_retries = 0
        done = False
        if until.last_id is not None and batch.height and batch["agg_trade_id"][-1] >= until.last_id:
            batch = batch.filter(pl.col("agg_trade_id") <= until.last_id)
            done = True
        if until.end_ms is not None:
            before = batch.filter(pl.col("transact_time") < until.end_ms)
            done = done or before.height < batch.height
            batch = before
        if batch.height:
            result = on_batch(batch)
            if inspect.isawaitable(result):
                await result
            delivered += batch.height
            next_id = int(batch["agg_trade_id"][-1]) + 1
        if done or (len(rows) < AGG_TRADES_LIMIT and contiguous == len(rows)):
            break
    return delivered


async def first_id_at_or_after(source: RestSource, symbol: str, start_ms: int, end_ms: int) -> int | None:
    """The id of the first aggTrade with transact_time in [start_ms, end_ms), or None if there is none.

    Binance accepts startTime/endTime at most one hour apart, so quiet stretches are walked an hour at a time.
    """
    hour = 60 * MINUTE_MS
    t = start_ms
    while t < end_ms:
        stop = min(t + hour, end_ms) - 1
        rows = await source.get(
            AGG_TRADES_PATH, {"symbol": symbol, "startTime": t, "endTime": stop, "limit": 1}, AGG_TRADES_WEIGHT
        )
        if rows:
            return int(rows[0]["a"])
        t = stop + 1
    return None


__all__ = [
    "RestFetchError",
    "RestSource",
    "Until",
    "WeightPacer",
    "fetch_agg_trades_from_id",
    "first_id_at_or_after",
    "rows_to_frame",
    "weight_limit_per_minute",
]
