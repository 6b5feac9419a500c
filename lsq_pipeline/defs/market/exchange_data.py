"""Data only the exchange has: premium-index klines per 5-minute window and funding-rate history per day."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from lsq.timelabels import WINDOW_MS

MAX_KLINES = 1500
MAX_FUNDING = 1000
FETCH_THREADS = 8

PREMIUM_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "open_time": pl.Int64(),
    "close_time": pl.Int64(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
}
FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "funding_time": pl.Int64(),
    "funding_rate": pl.Float64(),
    "mark_price": pl.Float64(),
}


def kline_pages(start_ms: int, end_ms: int, interval_ms: int = WINDOW_MS) -> list[tuple[int, int, int]]:
    """(startTime, endTime inclusive, limit) requests covering [start, end) at ≤ 1500 klines each."""
    step = MAX_KLINES * interval_ms
    return [
        (lo, min(lo + step, end_ms) - 1, (min(lo + step, end_ms) - lo) // interval_ms)
        for lo in range(start_ms, end_ms, step)
    ]


def premium_rows(symbol: str, rows: Iterable[list[Any]]) -> pl.DataFrame:
    """premiumIndexKlines rows -> PREMIUM_SCHEMA frame."""
    data = [
        {
            "symbol": symbol,
            "open_time": int(r[0]),
            "close_time": int(r[6]),
            "open": float(r[1]),
            "high": float(r[2]),
            "low": float(r[3]),
            "close": float(r[4]),
        }
        for r in rows
    ]
    return pl.DataFrame(data, schema=PREMIUM_SCHEMA)


def funding_rows(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """fundingRate rows -> FUNDING_SCHEMA frame (markPrice may be absent or empty on old rows)."""
    data = [
        {
            "symbol": r["symbol"],
            "funding_time": int(r["fundingTime"]),
            "funding_rate": float(r["fundingRate"]),
            "mark_price": float(r["markPrice"]) if r.get("markPrice") not in (None, "") else None,
        }
        for r in rows
    ]
    return pl.DataFrame(data, schema=FUNDING_SCHEMA)


def fetch_premium_index(client: Any, symbols: Iterable[str], start_ms: int, end_ms: int) -> pl.DataFrame:
    """5-minute premium-index klines of [start, end) for `symbols` (python-binance Client, any mode)."""

    def one(symbol: str) -> pl.DataFrame:
        rows: list[list[Any]] = []
        for lo, hi, limit in kline_pages(start_ms, end_ms):
            rows += client.futures_premium_index_klines(
                symbol=symbol, interval="5m", startTime=lo, endTime=hi, limit=limit
            )
        frame = premium_rows(symbol, rows)
        return frame.filter(pl.col("open_time").is_between(start_ms, end_ms, closed="left")).unique("open_time")

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        frames = list(pool.map(one, sorted(set(symbols))))
    return pl.concat([pl.DataFrame(schema=PREMIUM_SCHEMA), *frames]).sort("symbol", "open_time")


def fetch_funding(client: Any, symbols: Iterable[str], start_ms: int, end_ms: int) -> pl.DataFrame:
    """Every funding event in [start, end) for `symbols`, whatever each symbol's funding interval (1 h, 4 h, 8 h)."""

    def one(symbol: str) -> pl.DataFrame:
        frames, lo = [], start_ms
        while lo < end_ms:
            rows = client.futures_funding_rate(symbol=symbol, startTime=lo, endTime=end_ms - 1, limit=MAX_FUNDING)
            frame = funding_rows(rows)
            frames.append(frame)
            if len(rows) < MAX_FUNDING:
                break
            lo = int(frame.select(pl.col("funding_time").max()).item()) + 1
        out = pl.concat([pl.DataFrame(schema=FUNDING_SCHEMA), *frames])
        return out.filter(pl.col("funding_time").is_between(start_ms, end_ms, closed="left")).unique("funding_time")

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        frames = list(pool.map(one, sorted(set(symbols))))
    return pl.concat([pl.DataFrame(schema=FUNDING_SCHEMA), *frames]).sort("symbol", "funding_time")
