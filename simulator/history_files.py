"""Daily bulk files in the layout of Binance's public-data site (data.binance.vision), built from the market.

Only complete past UTC days exist (as on the real site, today's file appears after midnight); a day before the
symbol's first trade or not yet complete is a 404 (`resolve_history_path` returns None). A day's file never changes
(the market is a function of the seed), so `HistoryFiles` can keep every file built on disk: a month of 40 symbols
costs the simulator minutes of CPU to build (zlib mostly) and a rerun on the same machine then only reads it.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from lsq.paths import atomic_write_bytes
from lsq.timelabels import DAY_MS, format_day, parse_day
from lsq.timelabels import now_ms as wall_clock_ms
from simulator.market import KLINE_INTERVALS, MarketLike
from simulator.market.blocks import LRUCache

AGG_TRADES_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
KLINES_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)
ZIP_TYPE = "application/zip"
CHECKSUM_TYPE = "text/plain; charset=utf-8"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamp: the same day always zips to the same bytes

_AGG_PATH = re.compile(
    r"^/?(?:data/)?futures/um/daily/aggTrades/(?P<symbol>[A-Z0-9]+)/(?P=symbol)-aggTrades-(?P<day>\d{4}-\d{2}-\d{2})"
    r"\.zip(?P<checksum>\.CHECKSUM)?$"
)
_KLINE_PATH = re.compile(
    r"^/?(?:data/)?futures/um/daily/klines/(?P<symbol>[A-Z0-9]+)/(?P<interval>\w+)/(?P=symbol)-(?P=interval)-"
    r"(?P<day>\d{4}-\d{2}-\d{2})\.zip(?P<checksum>\.CHECKSUM)?$"
)


class HistoryNotFound(LookupError):
    """No such file: unknown symbol, a day not complete yet, or before the symbol's first trade."""


def _zip(member: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, text, compresslevel=1)
    return buffer.getvalue()


def _check_day(market: MarketLike, symbol: str, day: str, now_ms: int | None) -> int:
    """The day's start ms, if its file exists at `now_ms` (the server's clock; the wall clock when None)."""
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    if symbol not in market.instruments:
        raise HistoryNotFound(f"unknown symbol {symbol!r}")
    start = parse_day(day)
    if start + DAY_MS > now_ms:
        raise HistoryNotFound(f"{symbol} {day} is not a complete past UTC day")
    first = market.first_trade_ms(symbol)
    if start + DAY_MS <= first:
        raise HistoryNotFound(f"{symbol} has no trades on {day} (first trade at {first})")
    return start


def aggtrades_csv(market: MarketLike, symbol: str, day_ms: int) -> str:
    """One day of aggTrades in the public-data CSV layout (with header, booleans true/false)."""
    block = market.trades(symbol, day_ms, day_ms + DAY_MS)
    frame = pl.DataFrame(
        {
            "agg_trade_id": block.agg_id,
            "price": block.instrument.price_series(block.price_ticks),
            "quantity": block.instrument.qty_series(block.qty_steps),
            "first_trade_id": block.first_id,
            "last_trade_id": block.last_id,
            "transact_time": block.time_ms,
            "is_buyer_maker": block.buyer_maker,
        },
        schema={
            "agg_trade_id": pl.Int64,
            "price": pl.String,
            "quantity": pl.String,
            "first_trade_id": pl.Int64,
            "last_trade_id": pl.Int64,
            "transact_time": pl.Int64,
            "is_buyer_maker": pl.Boolean,
        },
    )
    return frame.write_csv(include_header=True, quote_style="never")


def klines_csv(market: MarketLike, symbol: str, interval: str, day_ms: int) -> str:
    """One day of klines in the public-data CSV layout (every window of the day, as the REST rows)."""
    width = KLINE_INTERVALS[interval]
    rows = market.klines(symbol, interval, day_ms, day_ms + DAY_MS - 1, DAY_MS // width, now_ms=day_ms + DAY_MS - 1)
    lines = [",".join(str(v) for v in row) for row in rows]
    return KLINES_HEADER + "\n" + "".join(line + "\n" for line in lines)


def aggtrades_day_zip(market: MarketLike, symbol: str, day: str, now_ms: int | None = None) -> bytes:
    """`{SYMBOL}-aggTrades-{day}.zip` holding `{SYMBOL}-aggTrades-{day}.csv`."""
    start = _check_day(market, symbol, day, now_ms)
    return _zip(f"{symbol}-aggTrades-{day}.csv", aggtrades_csv(market, symbol, start))


def klines_day_zip(market: MarketLike, symbol: str, interval: str, day: str, now_ms: int | None = None) -> bytes:
    """`{SYMBOL}-{interval}-{day}.zip` holding `{SYMBOL}-{interval}-{day}.csv`."""
    if KLINE_INTERVALS.get(interval, DAY_MS + 1) > DAY_MS:  # daily files hold intervals up to a day
        raise HistoryNotFound(f"no daily kline files for interval {interval!r}")
    start = _check_day(market, symbol, day, now_ms)
    return _zip(f"{symbol}-{interval}-{day}.csv", klines_csv(market, symbol, interval, start))


class HistoryFiles:
    """The latest files in memory (a client fetches a file and then its .CHECKSUM) and, with a directory, every
    file built on disk, so a day is built once per market, not once per server.

    The directory must belong to one market: `market_cache_dir` names it by seed, rate and the generator's code.
    """

    def __init__(self, memory_size: int, directory: Path | None = None) -> None:
        self._memory = LRUCache(memory_size)
        self._directory = directory

    def get(self, filename: str, make: Callable[[], bytes]) -> bytes:
        return self._memory.get(filename, lambda: self._on_disk(filename, make))

    def _on_disk(self, filename: str, make: Callable[[], bytes]) -> bytes:
        if self._directory is None:
            return make()
        path = self._directory / filename
        try:
            return path.read_bytes()
        except FileNotFoundError:
            data = make()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
            return data


_GENERATOR_SOURCES = ("market/base.py", "market/blocks.py", "market/generated.py", "instruments.py", "history_files.py")


def market_cache_dir(root: Path, seed: int, rate_multiplier: float) -> Path:
    """Where `HistoryFiles` keeps the generated market's files under `root`: one directory per seed, trade-rate
    multiplier and version of the code that generates and formats the trades (a change starts a new directory)."""
    code = hashlib.sha256()
    for name in _GENERATOR_SOURCES:
        code.update((Path(__file__).parent / name).read_bytes())
    return root / f"seed{seed}-rate{rate_multiplier:g}-{code.hexdigest()[:12]}"


def _cached(files: HistoryFiles | None, filename: str, make: Callable[[], bytes]) -> bytes:
    return make() if files is None else files.get(filename, make)


def checksum_text(data: bytes, filename: str) -> str:
    """The `.CHECKSUM` companion: "<sha256 hex>  <filename>\\n" (sha256sum's format)."""
    return f"{hashlib.sha256(data).hexdigest()}  {filename}\n"


def resolve_history_path(
    market: MarketLike, path: str, now_ms: int | None = None, files: HistoryFiles | None = None
) -> tuple[bytes, str] | None:
    """Route a public-data path (with or without the leading /) to (body, content type); None means 404.

    /data/futures/um/daily/aggTrades/{SYMBOL}/{SYMBOL}-aggTrades-{YYYY-MM-DD}.zip[.CHECKSUM]
    /data/futures/um/daily/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY-MM-DD}.zip[.CHECKSUM]

    `files` keeps the zips built (see HistoryFiles): a client fetches a file and then its .CHECKSUM, and a day's
    file never changes, so the second request does not build the day again (half the simulator's work in a history
    backfill).
    """
    try:
        if match := _AGG_PATH.match(path):
            symbol, day = match["symbol"], match["day"]
            filename = f"{symbol}-aggTrades-{day}.zip"
            _check_day(market, symbol, day, now_ms)  # before the cache: a stored file is served only once it exists
            data = _cached(files, filename, lambda: aggtrades_day_zip(market, symbol, day, now_ms))
        elif match := _KLINE_PATH.match(path):
            symbol, interval, day = match["symbol"], match["interval"], match["day"]
            filename = f"{symbol}-{interval}-{day}.zip"
            _check_day(market, symbol, day, now_ms)
            data = _cached(files, filename, lambda: klines_day_zip(market, symbol, interval, day, now_ms))
        else:
            return None
    except (HistoryNotFound, ValueError):
        return None
    if match["checksum"]:
        return checksum_text(data, filename).encode(), CHECKSUM_TYPE
    return data, ZIP_TYPE


def history_days(market: MarketLike, symbol: str, now_ms: int) -> list[str]:
    """The days a file exists for: from the symbol's first trade to yesterday (UTC)."""
    first = market.first_trade_ms(symbol)
    last_complete = now_ms - now_ms % DAY_MS
    return [format_day(d) for d in range(first - first % DAY_MS, last_complete, DAY_MS)]


__all__ = [
    "AGG_TRADES_HEADER",
    "KLINES_HEADER",
    "HistoryFiles",
    "HistoryNotFound",
    "aggtrades_day_zip",
    "checksum_text",
    "history_days",
    "klines_day_zip",
    "market_cache_dir",
    "resolve_history_path",
]
