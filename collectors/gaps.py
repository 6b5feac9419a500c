"""The REST calls the collector makes besides fetching aggTrade ranges (which collectors.rest_backfill does), all
through the same `RestSource`, so one weight budget paces everything the process sends to the exchange."""

from __future__ import annotations

import polars as pl

from collectors.parse import AggTrade, MalformedFrame, rest_trade
from collectors.rest_backfill import AGG_TRADES_LIMIT, AGG_TRADES_PATH, AGG_TRADES_WEIGHT, RestFetchError, RestSource
from lsq.timelabels import HOUR_MS

TICKER_ALL_WEIGHT = 40


async def last_trade_ids(source: RestSource) -> dict[str, int]:
    """Every symbol's latest *trade* id (`lastId` of the 24 h ticker: a trade id, comparable to an aggTrade's `l`)."""
    body = await source.get("/fapi/v1/ticker/24hr", {}, TICKER_ALL_WEIGHT)
    if not isinstance(body, list):
        raise RestFetchError(f"ticker/24hr returned {type(body).__name__}, expected a list")
    out: dict[str, int] = {}
    for row in body:
        last = row.get("lastId") if isinstance(row, dict) else None
        if type(last) is int and last >= 0 and isinstance(row.get("symbol"), str):
            out[row["symbol"]] = last
    return out


async def latest_trade(source: RestSource, symbol: str) -> AggTrade | None:
    """The symbol's most recent aggTrade, or None if it never traded."""
    rows = await source.get(AGG_TRADES_PATH, {"symbol": symbol, "limit": 1}, AGG_TRADES_WEIGHT)
    if not isinstance(rows, list):
        raise RestFetchError(f"aggTrades for {symbol} returned {type(rows).__name__}, expected a list")
    try:
        return rest_trade(symbol, rows[-1]) if rows else None
    except MalformedFrame as exc:
        raise RestFetchError(f"aggTrades for {symbol} returned a bad row: {exc}") from None


async def trading_usdt_perpetuals(source: RestSource) -> list[str]:
    """Symbols of exchangeInfo that are USDT-quoted perpetuals currently trading."""
    info = await source.get("/fapi/v1/exchangeInfo", {}, 1)
    if not isinstance(info, dict) or not isinstance(info.get("symbols"), list):
        raise RestFetchError("exchangeInfo has no 'symbols' list")
    return sorted(
        s["symbol"]
        for s in info["symbols"]
        if isinstance(s, dict)
        and s.get("status") == "TRADING"
        and s.get("contractType") == "PERPETUAL"
        and s.get("quoteAsset") == "USDT"
    )


async def first_trades_since(
    source: RestSource, symbol: str, start_ms: int, until_ms: int
) -> tuple[list[AggTrade], bool]:
    """The first (up to 1000) aggTrades with T in [start_ms, until_ms], walking an hour at a time (Binance's limit
    for startTime/endTime); and whether they are *all* the trades of [start_ms, until_ms]."""
    t = start_ms
    while t <= until_ms:
        end = min(t + HOUR_MS - 1, until_ms)
        params = {"symbol": symbol, "startTime": t, "endTime": end, "limit": AGG_TRADES_LIMIT}
        rows = await source.get(AGG_TRADES_PATH, params, AGG_TRADES_WEIGHT)
        if not isinstance(rows, list):
            raise RestFetchError(f"aggTrades for {symbol} returned {type(rows).__name__}, expected a list")
        if rows:
            try:
                trades = [rest_trade(symbol, row) for row in rows]
            except MalformedFrame as exc:
                raise RestFetchError(f"aggTrades for {symbol} returned a bad row: {exc}") from None
            return trades, len(trades) < AGG_TRADES_LIMIT and end == until_ms
        t = end + 1
    return [], True


def batch_trades(symbol: str, batch: pl.DataFrame) -> list[AggTrade]:
    """A verified TRADE_SCHEMA batch from rest_backfill as AggTrade tuples (decimals back to exact strings)."""
    rows = batch.with_columns(pl.col("price", "quantity").cast(pl.String)).iter_rows()
    return [AggTrade(symbol, a, p, q, f, last, t, m, 0) for a, p, q, f, last, t, m in rows]


__all__ = [
    "RestFetchError",
    "batch_trades",
    "first_trades_since",
    "last_trade_ids",
    "latest_trade",
    "trading_usdt_perpetuals",
]
