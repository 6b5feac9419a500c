"""How a UTC day's trading universe is chosen, from the exchange's own metadata (stored by lsq.stores.universes).

v1: every TRADING, USDT-margined PERPETUAL in exchangeInfo with its trading filters.
v2: v1 narrowed to symbols listed at least `min_listing_days` before the day, then the top `top_n` by 24h quote volume.
The universe of day D is built at `data.universe_refresh_time` in `data.timezone` on the day before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import polars as pl

from lsq.config import UniverseSettings
from lsq.paths import DataPaths
from lsq.stores.universes import UNIVERSE_SCHEMA, write_universe
from lsq.timelabels import DAY_MS, parse_day


class MarketClient(Protocol):
    """The three market-data calls a universe needs (python-binance's `Client`, synchronous, answers as JSON)."""

    def futures_exchange_info(self) -> dict[str, Any]: ...

    def futures_ticker(self) -> list[dict[str, Any]]: ...

    def futures_klines(self, *, symbol: str, interval: str, startTime: int, limit: int) -> list[list[Any]]: ...


def _filter_value(info: dict[str, Any], filter_type: str, field: str) -> str:
    for f in info.get("filters", []):
        if f.get("filterType") == filter_type:
            return str(f[field])
    raise ValueError(f"{info.get('symbol')}: exchangeInfo has no {filter_type}.{field}")


def universe_v1(exchange_info: dict[str, Any]) -> pl.DataFrame:
    """Every TRADING USDT-margined perpetual with tick/step sizes, min qty/notional, precisions and onboard date."""
    rows = [
        {
            "symbol": s["symbol"],
            "base_asset": s["baseAsset"],
            "tick_size": _filter_value(s, "PRICE_FILTER", "tickSize"),
            "step_size": _filter_value(s, "LOT_SIZE", "stepSize"),
            "min_qty": _filter_value(s, "LOT_SIZE", "minQty"),
            "min_notional": _filter_value(s, "MIN_NOTIONAL", "notional"),
            "price_precision": s["pricePrecision"],
            "quantity_precision": s["quantityPrecision"],
            "onboard_date": s["onboardDate"],
        }
        for s in exchange_info.get("symbols", [])
        if s.get("status") == "TRADING"
        and s.get("contractType") == "PERPETUAL"
        and s.get("quoteAsset") == "USDT"
        and s.get("marginAsset", "USDT") == "USDT"
    ]
    strings = {c: pl.String() for c in UNIVERSE_SCHEMA}
    frame = pl.DataFrame(
        rows, schema={**strings, "price_precision": pl.Int64, "quantity_precision": pl.Int64, "onboard_date": pl.Int64}
    )
    return frame.select(pl.col(c).cast(t) for c, t in UNIVERSE_SCHEMA.items()).sort("symbol")


def universe_v2(
    v1: pl.DataFrame, tickers: Iterable[dict[str, Any]], day_ms: int, rules: UniverseSettings
) -> pl.DataFrame:
    """v1 symbols onboarded ≥ `min_listing_days` before `day_ms`, top `top_n` by 24h quote volume (ties: by name)."""
    volumes = pl.DataFrame(
        [{"symbol": t["symbol"], "quote_volume_24h": float(t["quoteVolume"])} for t in tickers],
        schema={"symbol": pl.String, "quote_volume_24h": pl.Float64},
    )
    cutoff = day_ms - rules.min_listing_days * DAY_MS
    return (
        v1.filter(pl.col("onboard_date") <= cutoff)
        .join(volumes, on="symbol", how="left")
        .with_columns(pl.col("quote_volume_24h").fill_null(0.0))
        .sort(["quote_volume_24h", "symbol"], descending=[True, False])
        .head(rules.top_n)
        .sort("symbol")
    )


KLINES_PER_REQUEST = 99  # daily klines per request: under 100 a request weighs 1


def past_day_volumes(
    client: MarketClient, symbols: Iterable[str], days_ms: list[int]
) -> dict[int, list[dict[str, Any]]]:
    """Quote volume of each symbol over the complete UTC day before each of `days_ms`, from its 1d klines: what was
    known when that day's universe was due, so a universe built later (a backfill) carries no look-ahead. One request
    per symbol and KLINES_PER_REQUEST days (a month's universes are 40 requests, not 1,200)."""
    volumes: dict[int, dict[str, str]] = {day: {} for day in days_ms}
    first, last = min(days_ms) - DAY_MS, max(days_ms) - DAY_MS
    symbols = list(symbols)
    for symbol in symbols:
        for start in range(first, last + 1, KLINES_PER_REQUEST * DAY_MS):
            limit = min(KLINES_PER_REQUEST, (last - start) // DAY_MS + 1)
            for kline in client.futures_klines(symbol=symbol, interval="1d", startTime=start, limit=limit):
                day = int(kline[0]) + DAY_MS
                if day in volumes:
                    volumes[day][symbol] = kline[7]
    return {day: [{"symbol": s, "quoteVolume": known.get(s, "0")} for s in symbols] for day, known in volumes.items()}


def build_universes(
    client: MarketClient, paths: DataPaths, rules: UniverseSettings, days: Iterable[str], now_ms: int
) -> dict[str, dict[str, pl.DataFrame]]:
    """Build both versions for each of `days` and store them: v1 from exchangeInfo; v2 ranked by the live 24h tickers
    for a day still ahead (the 23:55 refresh for tomorrow), else by the previous UTC day's volume (point in time)."""
    wanted = {day: parse_day(day) for day in days}
    v1 = universe_v1(client.futures_exchange_info())
    past = [ms for ms in wanted.values() if ms <= now_ms]
    volumes = past_day_volumes(client, v1["symbol"].to_list(), past) if past else {}
    if len(past) < len(wanted):
        tickers = client.futures_ticker()
        volumes.update({ms: tickers for ms in wanted.values() if ms > now_ms})
    built = {}
    for day, day_ms in wanted.items():
        v2 = universe_v2(v1, volumes[day_ms], day_ms, rules)
        for version, frame in (("v1", v1), ("v2", v2)):
            write_universe(paths, day, version, frame)
        built[day] = {"v1": v1, "v2": v2}
    return built
