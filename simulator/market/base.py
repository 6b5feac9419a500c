"""What every market derives from its trades (klines, 24 h tickers) and from its premium model (premium index,
funding), whatever the trades come from: `MarketBase` leaves only the trade source to subclasses."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lsq.paths import atomic_write_bytes
from lsq.timelabels import DAY_MS, HOUR_MS, MINUTE_MS, format_day
from simulator.instruments import Instrument, format_units_array
from simulator.market.blocks import (
    CLOSE,
    FIRST_F,
    HIGH,
    LAST_L,
    LAST_QTY,
    LOW,
    MINUTES,
    N_FIELDS,
    OPEN,
    QUOTE,
    TB_QUOTE,
    TB_VOL,
    TRADES,
    VOL,
    DaySource,
    LRUCache,
    NoTradesError,
    TradeBlock,
    UnknownSymbolError,
    combine_rows,
    group_summaries,
    summarize_groups,
    symbol_key,
)

KLINE_INTERVALS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": 7 * DAY_MS,
    "1M": 30 * DAY_MS,  # nominal: monthly klines open on the first of each calendar month
}
# Weekly klines open on Mondays 00:00 UTC (1970-01-05 was one); 3-day klines count from the epoch, as Binance's do.
WEEK_ORIGIN_MS = 4 * DAY_MS
PREMIUM_DECIMALS = 8  # premium index, funding rates and mark/index prices are printed with 8 decimals
PREMIUM_SCALE = 10**PREMIUM_DECIMALS
INTEREST_PER_8H = 0.0001
FUNDING_CAP = 0.0075
SAMPLES_PER_MINUTE = 12  # premium index samples (every 5 s) counted in a premium kline


# ---------------------------------------------------------------------------------------------------------------
# The interface shared by the generated market and the replay


@runtime_checkable
class MarketLike(Protocol):
    """What the server (REST, streams, bulk files) and the trading engine use of a market."""

    @property
    def instruments(self) -> dict[str, Instrument]: ...

    def instrument(self, symbol: str) -> Instrument: ...

    def first_trade_ms(self, symbol: str) -> int: ...

    def trades(self, symbol: str, start_ms: int, end_ms: int) -> TradeBlock: ...

    def trades_from_id(self, symbol: str, from_id: int, limit: int, end_ms: int | None = None) -> TradeBlock: ...

    def first_id_at(self, symbol: str, ms: int) -> int: ...

    def last_trade(self, symbol: str, now_ms: int) -> TradeBlock: ...

    def last_price_ticks(self, symbol: str, now_ms: int) -> int: ...

    def mid_price(self, symbol: str, now_ms: int) -> Decimal: ...

    def klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int, *, now_ms: int
    ) -> list[list[Any]]: ...

    def premium_index_klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int, *, now_ms: int
    ) -> list[list[Any]]: ...

    def prefetch_day(self, day_ms: int, symbols: Iterable[str] | None = None) -> None: ...

    def keep_day_summaries(self, directory: Path) -> None: ...

    def mark_price(self, symbol: str, now_ms: int) -> Decimal: ...

    def index_price(self, symbol: str, now_ms: int) -> Decimal: ...

    def premium_index(self, symbol: str, now_ms: int) -> dict[str, Any]: ...

    def funding_rates(
        self, symbol: str, start_ms: int | None, end_ms: int | None, limit: int, *, now_ms: int
    ) -> list[dict[str, Any]]: ...

    def funding_interval_hours(self, symbol: str) -> int: ...

    def funding_times(self, symbol: str, start_ms: int, end_ms: int) -> list[int]: ...

    def ticker_24h(self, symbol: str, now_ms: int) -> dict[str, Any]: ...


def smooth_noise(prev: np.ndarray, cur: np.ndarray, tau: float) -> np.ndarray:
    """Causal exponential smoothing of white noise, continuous across the day boundary, unit variance."""
    width = min(len(prev), int(tau * 5) + 1)
    kernel = np.exp(-np.arange(width) / tau)
    kernel /= np.sqrt((kernel**2).sum())
    x = np.concatenate([prev[len(prev) - width + 1 :], cur]) if width > 1 else cur
    return np.convolve(x, kernel, mode="valid")


def _month_start(ms: int, months_ahead: int = 0) -> int:
    day = datetime.fromtimestamp(ms / 1000, UTC)
    index = day.year * 12 + day.month - 1 + months_ahead
    return int(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp()) * 1000


def interval_floor(interval: str, ms: int) -> int:
    """The open time of the `interval` kline holding `ms`."""
    if interval == "1M":
        return _month_start(ms)
    width = KLINE_INTERVALS[interval]
    origin = WEEK_ORIGIN_MS if interval == "1w" else 0
    return ms - (ms - origin) % width


def interval_ends(interval: str, opens: np.ndarray) -> np.ndarray:
    """Where each kline opening at `opens` ends (the next one's open; its close time is one ms before)."""
    if interval == "1M":
        return np.array([_month_start(int(t), 1) for t in opens], dtype=np.int64)
    return opens + KLINE_INTERVALS[interval]


def kline_opens(
    interval: str, first_ms: int, now_ms: int, start_ms: int | None, end_ms: int | None, limit: int
) -> np.ndarray:
    """Binance's kline selection, by open time: >= start, <= end, at most `limit` from the start (the latest
    `limit` without one), between the kline holding the first trade and the one open now."""
    first_open = interval_floor(interval, first_ms)
    hi = interval_floor(interval, now_ms if end_ms is None else min(now_ms, end_ms))
    lo = first_open
    if start_ms is not None:
        floor = interval_floor(interval, start_ms)
        lo = max(lo, floor if floor == start_ms else int(interval_ends(interval, np.array([floor]))[0]))
    if hi < lo:
        return np.zeros(0, dtype=np.int64)
    if interval != "1M":
        width = KLINE_INTERVALS[interval]
        if start_ms is not None:
            hi = min(hi, lo + (limit - 1) * width)
        else:
            lo = max(lo, hi - (limit - 1) * width)
        return np.arange(lo, hi + 1, width, dtype=np.int64)
    months = [lo]
    while months[-1] < hi:
        months.append(_month_start(months[-1], 1))
    opens = np.array(months, dtype=np.int64)
    return opens[:limit] if start_ms is not None else opens[-limit:]


def _signed_fixed(values: np.ndarray, decimals: int) -> list[str]:
    values = np.asarray(values, dtype=np.int64)
    text = np.asarray(format_units_array(np.abs(values), decimals))
    return np.where(values < 0, np.strings.add("-", text), text).tolist()


def _format_fixed(value: float, decimals: int) -> str:
    """One value as a fixed-point string; plain Decimal, as a one-element Polars round trip costs 0.2 ms."""
    return f"{Decimal(round(value * 10**decimals)).scaleb(-decimals):f}"


class MarketBase:
    """Everything derived from trades (klines, tickers) and from the premium model (funding), for any trade source.

    Subclasses provide `_day_block(symbol, day_start_ms)` (all trades of that UTC day), `first_trade_ms`,
    `trades_from_id`, `first_id_at`, and `_mid_log(symbol, now_ms)` (log of the fair price now).
    """

    def __init__(self, instruments: Iterable[Instrument], seed: int) -> None:
        self._instruments = {i.symbol: i for i in instruments}
        self.seed = int(seed)
        n = len(self._instruments)
        # Sized by the symbol count: the recent days of every symbol, plus a little room for history reads (which
        # are cheap to redo). The fixed sizes before could hold 88 MB of minute rows alone.
        self._minute_cache = LRUCache(3 * n + 16)  # 172 KB each
        self._day_summary: dict[tuple[str, int], np.ndarray] = {}
        self._summary_dir: Path | None = None
        self._premium_cache = LRUCache(4 * n + 64)  # 12 KB each
        self._ticker_cache = LRUCache(2 * n + 16)  # per symbol and second: only the current second is asked again

    def keep_day_summaries(self, directory: Path) -> None:
        """Keep every whole-day summary row in `directory` too (one market's: `history_files.market_cache_dir`), as
        the public-data files are kept: a server started again answers daily klines over history (a backfill's
        universes) without generating every day's trades anew."""
        directory.mkdir(parents=True, exist_ok=True)
        self._summary_dir = directory

    # -- symbols ----------------------------------------------------------------------------------------------
    @property
    def instruments(self) -> dict[str, Instrument]:
        return dict(self._instruments)

    def instrument(self, symbol: str) -> Instrument:
        try:
            return self._instruments[symbol]
        except KeyError:
            raise UnknownSymbolError(f"symbol {symbol!r} is not traded by this market") from None

    def first_trade_ms(self, symbol: str) -> int:
        raise NotImplementedError

    def prefetch_day(self, day_ms: int, symbols: Iterable[str] | None = None) -> None:
        """Generate a day ahead of need (e.g. tomorrow, shortly before UTC midnight, in a worker thread) so the live
        stream does not pause at midnight while every symbol's new day is generated."""
        day_ms -= day_ms % DAY_MS
        for symbol in self._instruments if symbols is None else symbols:
            self._day_block(symbol, day_ms)

    def _day_block(self, symbol: str, day_ms: int) -> DaySource:
        raise NotImplementedError

    def _mid_log(self, symbol: str, now_ms: int) -> float:
        raise NotImplementedError

    # -- trades -----------------------------------------------------------------------------------------------
    def trades(self, symbol: str, start_ms: int, end_ms: int) -> TradeBlock:
        """aggTrades with T in [start_ms, end_ms), in id order."""
        inst = self.instrument(symbol)
        start_ms = max(int(start_ms), self.first_trade_ms(symbol))
        end_ms = int(end_ms)
        if end_ms <= start_ms:
            return TradeBlock.empty(inst)
        parts = []
        for day_ms in range(start_ms - start_ms % DAY_MS, end_ms, DAY_MS):
            day = self._day_block(symbol, day_ms)
            lo, hi = day.search_time([start_ms, end_ms])
            parts.append(day.rows(int(lo), int(hi)))
        return TradeBlock.concat(inst, parts)

    def last_trade(self, symbol: str, now_ms: int) -> TradeBlock:
        """The last aggTrade at or before now (a one-row block); NoTradesError before the first trade."""
        first = self.first_trade_ms(symbol)
        if now_ms < first:
            raise NoTradesError(f"{symbol} has no trades before {now_ms} (first trade at {first})")
        day = now_ms - now_ms % DAY_MS
        while day >= first - first % DAY_MS:
            source = self._day_block(symbol, day)
            n = int(source.search_time(now_ms, side="right"))
            if n:
                return source.rows(n - 1, n)
            day -= DAY_MS
        raise NoTradesError(f"{symbol} has no trades at or before {now_ms}")

    def last_price_ticks(self, symbol: str, now_ms: int) -> int:
        return int(self.last_trade(symbol, now_ms).price_ticks[0])

    def _require_listed(self, symbol: str, now_ms: int) -> None:
        first = self.first_trade_ms(symbol)
        if now_ms < first:
            raise NoTradesError(f"{symbol} is not listed yet at {now_ms} (first trade at {first})")

    def mid_price(self, symbol: str, now_ms: int) -> Decimal:
        """The fair price now on the tick grid (what fills are priced from); NoTradesError before listing."""
        self._require_listed(symbol, now_ms)
        inst = self.instrument(symbol)
        ticks = max(1, round(float(np.exp(self._mid_log(symbol, now_ms))) / float(inst.tick_size)))
        return Decimal(inst.format_price(ticks))

    # -- summaries --------------------------------------------------------------------------------------------
    def _minutes(self, symbol: str, day_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(minute start times, summary rows) of the non-empty minutes of a whole day."""

        def make() -> tuple[np.ndarray, np.ndarray]:
            source = self._day_block(symbol, day_ms)
            block = source.rows(0, len(source))
            minute = (block.time_ms - day_ms) // MINUTE_MS
            starts = np.flatnonzero(np.diff(minute, prepend=-1))
            return day_ms + minute[starts] * MINUTE_MS, summarize_groups(block, starts)

        return self._minute_cache.get((symbol, day_ms), make)

    def _summary_rows(self, symbol: str, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(times, rows) of non-empty pieces covering trades in [start_ms, end_ms): whole minutes from the cache,
        partial minutes at the edges from the trades themselves."""
        times, rows = [], []
        first = self.first_trade_ms(symbol)
        start_ms = max(start_ms, first - first % MINUTE_MS)
        if end_ms <= start_ms:
            return np.zeros(0, dtype=np.int64), np.zeros((0, N_FIELDS), dtype=np.int64)
        full_lo = -(-start_ms // MINUTE_MS) * MINUTE_MS
        full_hi = end_ms - end_ms % MINUTE_MS
        if full_lo > full_hi:  # inside one minute
            full_lo = full_hi = end_ms
        if start_ms < full_lo:
            times_part, rows_part = self._partial(symbol, start_ms, min(full_lo, end_ms))
            times.append(times_part)
            rows.append(rows_part)
        for day in range(full_lo - full_lo % DAY_MS, full_hi, DAY_MS):
            t, r = self._minutes(symbol, day)
            lo, hi = np.searchsorted(t, [full_lo, full_hi], side="left")
            times.append(t[lo:hi])
            rows.append(r[lo:hi])
        if full_hi < end_ms and full_hi >= full_lo:
            times_part, rows_part = self._partial(symbol, full_hi, end_ms)
            times.append(times_part)
            rows.append(rows_part)
        return np.concatenate(times), np.concatenate(rows)

    def _partial(self, symbol: str, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        block = self.trades(symbol, start_ms, end_ms)
        if not len(block):
            return np.zeros(0, dtype=np.int64), np.zeros((0, N_FIELDS), dtype=np.int64)
        return np.array([start_ms - start_ms % MINUTE_MS]), summarize_groups(block, np.array([0]))

    def _whole_day_row(self, symbol: str, day_ms: int) -> np.ndarray:
        """One summary row per complete day (0 or 1 rows), kept for good (120 bytes): daily and longer klines over
        months stay cheap after the first request. Summarised straight from the trades, so a walk over history
        leaves the minute cache to the recent days that tickers and intraday klines use."""
        row = self._day_summary.get((symbol, day_ms))
        if row is None:
            row = self._stored_day_summary(symbol, day_ms)
        if row is None:
            source = self._day_block(symbol, day_ms)
            block = source.rows(0, len(source))
            row = summarize_groups(block, np.array([0])) if len(block) else np.zeros((0, N_FIELDS), dtype=np.int64)
            if self._summary_dir is not None:
                buffer = io.BytesIO()
                np.save(buffer, row, allow_pickle=False)
                atomic_write_bytes(self._summary_path(symbol, day_ms), buffer.getvalue())
        self._day_summary[(symbol, day_ms)] = row
        return row

    def _summary_path(self, symbol: str, day_ms: int) -> Path:
        assert self._summary_dir is not None
        return self._summary_dir / f"{symbol}-{format_day(day_ms)}.npy"

    def _stored_day_summary(self, symbol: str, day_ms: int) -> np.ndarray | None:
        if self._summary_dir is None:
            return None
        try:
            return np.load(self._summary_path(symbol, day_ms), allow_pickle=False)
        except (FileNotFoundError, ValueError, EOFError):  # not kept yet, or a torn file: build it again
            return None

    def _close_before(self, symbol: str, ms: int) -> int | None:
        try:
            return self.last_price_ticks(symbol, ms - 1)
        except NoTradesError:
            return None

    # -- klines -----------------------------------------------------------------------------------------------
    def kline_rows(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int, now_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(open times, end times, summary rows) of the selected klines; empty windows repeat the previous close."""
        empty = np.zeros(0, dtype=np.int64)
        first = self.first_trade_ms(symbol)
        if now_ms < first:
            return empty, empty, np.zeros((0, N_FIELDS), dtype=np.int64)
        opens = kline_opens(interval, first, now_ms, start_ms, end_ms, limit)
        if not len(opens):
            return empty, empty, np.zeros((0, N_FIELDS), dtype=np.int64)
        ends = interval_ends(interval, opens)
        lo, end = int(opens[0]), min(int(ends[-1]), now_ms + 1)
        if KLINE_INTERVALS[interval] >= DAY_MS:  # whole days from the per-day rows, today so far from the minutes
            whole_end = min(end, now_ms - now_ms % DAY_MS)
            parts = [(np.full(1, d), self._whole_day_row(symbol, d)) for d in range(lo, whole_end, DAY_MS)]
            parts = [(t[: len(r)], r) for t, r in parts]
            tail = self._summary_rows(symbol, max(lo, whole_end), end)
            times = np.concatenate([t for t, _ in parts] + [tail[0]])
            rows = np.concatenate([r for _, r in parts] + [tail[1]])
        else:
            times, rows = self._summary_rows(symbol, lo, end)
        out, present = group_summaries(np.searchsorted(opens, times, side="right") - 1, rows, len(opens))
        if not present.all():
            out = self._fill_empty(symbol, lo, out, present)
            known = out[:, CLOSE] >= 0  # windows before any trade do not exist
            opens, ends, out = opens[known], ends[known], out[known]
        return opens, ends, out

    def _fill_empty(self, symbol: str, lo: int, rows: np.ndarray, present: np.ndarray) -> np.ndarray:
        idx = np.where(present, np.arange(len(present)), -1)
        np.maximum.accumulate(idx, out=idx)
        prev = self._close_before(symbol, lo)
        closes = np.where(idx >= 0, rows[np.maximum(idx, 0), CLOSE], -1 if prev is None else prev)
        empty = ~present
        rows = rows.copy()
        for col in (OPEN, HIGH, LOW, CLOSE):
            rows[empty, col] = closes[empty]
        return rows

    def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        *,
        now_ms: int,
    ) -> list[list[Any]]:
        """GET /fapi/v1/klines rows, up to now (the open kline included), from this market's own aggregation."""
        if interval not in KLINE_INTERVALS:
            raise ValueError(f"unknown interval {interval!r}")
        inst = self.instrument(symbol)
        opens, ends, rows = self.kline_rows(symbol, interval, start_ms, end_ms, limit, now_ms)
        if not len(opens):
            return []
        quote_decimals = inst.price_decimals + inst.qty_decimals
        quote_units = inst.tick_units * inst.step_units
        columns = [
            opens.tolist(),
            inst.format_prices(rows[:, OPEN]),
            inst.format_prices(rows[:, HIGH]),
            inst.format_prices(rows[:, LOW]),
            inst.format_prices(rows[:, CLOSE]),
            inst.format_qtys(rows[:, VOL]),
            (ends - 1).tolist(),
            format_units_array(rows[:, QUOTE] * quote_units, quote_decimals),
            rows[:, TRADES].tolist(),
            inst.format_qtys(rows[:, TB_VOL]),
            format_units_array(rows[:, TB_QUOTE] * quote_units, quote_decimals),
            ["0"] * len(opens),
        ]
        return [list(row) for row in zip(*columns, strict=True)]

    # -- 24 h ticker ------------------------------------------------------------------------------------------
    def ticker_24h(self, symbol: str, now_ms: int) -> dict[str, Any]:
        """GET /fapi/v1/ticker/24hr for one symbol: the trades of (now − 24 h, now]. Cached per second."""
        inst = self.instrument(symbol)
        second = now_ms - now_ms % 1000
        return self._ticker_cache.get((symbol, second), lambda: self._ticker(inst, second))

    def _ticker(self, inst: Instrument, now_ms: int) -> dict[str, Any]:
        symbol = inst.symbol
        _, rows = self._summary_rows(symbol, now_ms - DAY_MS + 1, now_ms + 1)
        open_time, close_time = now_ms - DAY_MS, now_ms
        fmt_p = inst.format_price
        if not len(rows):
            last = self._close_before(symbol, now_ms + 1)
            price = fmt_p(last) if last is not None else "0"
            zero_qty = inst.format_qty(0)
            return {
                "symbol": symbol,
                "priceChange": fmt_p(0),
                "priceChangePercent": "0.000",
                "weightedAvgPrice": "0",
                "lastPrice": price,
                "lastQty": zero_qty,
                "openPrice": price,
                "highPrice": price,
                "lowPrice": price,
                "volume": zero_qty,
                "quoteVolume": "0",
                "openTime": open_time,
                "closeTime": close_time,
                "firstId": -1,
                "lastId": -1,
                "count": 0,
            }
        row = combine_rows(rows, np.array([0]))[0]
        change = int(row[CLOSE] - row[OPEN])
        quote = Decimal(int(row[QUOTE])) * inst.tick_size * inst.step_size
        volume = Decimal(int(row[VOL])) * inst.step_size
        weighted = (quote / volume).quantize(inst.tick_size) if volume else Decimal(0)
        percent = Decimal(change) / Decimal(int(row[OPEN])) * 100
        return {
            "symbol": symbol,
            "priceChange": ("-" if change < 0 else "") + fmt_p(abs(change)),
            "priceChangePercent": f"{percent:.3f}",
            "weightedAvgPrice": f"{weighted:f}",
            "lastPrice": fmt_p(int(row[CLOSE])),
            "lastQty": inst.format_qty(int(row[LAST_QTY])),
            "openPrice": fmt_p(int(row[OPEN])),
            "highPrice": fmt_p(int(row[HIGH])),
            "lowPrice": fmt_p(int(row[LOW])),
            "volume": inst.format_qty(int(row[VOL])),
            "quoteVolume": format_units_array(
                np.array([row[QUOTE] * inst.tick_units * inst.step_units]), inst.price_decimals + inst.qty_decimals
            )[0],
            "openTime": open_time,
            "closeTime": close_time,
            "firstId": int(row[FIRST_F]),
            "lastId": int(row[LAST_L]),
            "count": int(row[TRADES]),
        }

    # -- premium index and funding ----------------------------------------------------------------------------
    def _premium_params(self, symbol: str) -> tuple[float, float]:
        rng = np.random.default_rng([self.seed, symbol_key(symbol), 7])
        return float(rng.normal(0.0001, 0.0002)), float(rng.uniform(0.0002, 0.0008))

    def _premium_day(self, symbol: str, day_ms: int) -> np.ndarray:
        """Premium index (units of 1e-8) at the end of each minute of the day: mean-reverting, continuous."""

        def make() -> np.ndarray:
            mean, sd = self._premium_params(symbol)
            key = symbol_key(symbol)
            day = day_ms // DAY_MS
            noise = [np.random.default_rng([self.seed, key, d, 8]).standard_normal(MINUTES) for d in (day - 1, day)]
            slow = smooth_noise(noise[0], noise[1], 240.0)
            fast = np.random.default_rng([self.seed, key, day, 9]).standard_normal(MINUTES)
            return np.rint((mean + sd * (0.85 * slow + 0.3 * fast)) * PREMIUM_SCALE).astype(np.int64)

        return self._premium_cache.get((symbol, day_ms), make)

    def _premium_minutes(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        """Premium values of the minutes starting in [start_ms, end_ms) (both on minute boundaries)."""
        days = range(start_ms - start_ms % DAY_MS, end_ms, DAY_MS)
        values = np.concatenate([self._premium_day(symbol, d) for d in days]) if len(days) else np.zeros(0, np.int64)
        offset = (start_ms - (start_ms - start_ms % DAY_MS)) // MINUTE_MS
        return values[offset : offset + (end_ms - start_ms) // MINUTE_MS]

    def premium_at(self, symbol: str, now_ms: int) -> float:
        """The premium index now (as a fraction): the value of the current minute."""
        self.instrument(symbol)
        minute = now_ms - now_ms % MINUTE_MS
        return float(self._premium_minutes(symbol, minute, minute + MINUTE_MS)[0]) / PREMIUM_SCALE

    def premium_index_klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        *,
        now_ms: int,
    ) -> list[list[Any]]:
        """GET /fapi/v1/premiumIndexKlines rows (volume slots "0"), from listing up to now."""
        if interval not in KLINE_INTERVALS:
            raise ValueError(f"unknown interval {interval!r}")
        self.instrument(symbol)
        first = self.first_trade_ms(symbol)
        if now_ms < first:
            return []
        opens = kline_opens(interval, first, now_ms, start_ms, end_ms, limit)
        if not len(opens):
            return []
        ends = interval_ends(interval, opens)
        n = len(opens)
        first_minute = max(int(opens[0]), first - first % MINUTE_MS)
        last_minute = now_ms - now_ms % MINUTE_MS
        values = self._premium_minutes(symbol, first_minute - MINUTE_MS, min(int(ends[-1]), last_minute + MINUTE_MS))
        opens_m, closes_m = values[:-1], values[1:]
        minute_times = first_minute + np.arange(len(closes_m), dtype=np.int64) * MINUTE_MS
        bucket = np.searchsorted(opens, minute_times, side="right") - 1
        starts = np.flatnonzero(np.diff(bucket, prepend=-1))
        ends_m = np.append(starts[1:], len(bucket)) - 1
        high = np.maximum.reduceat(np.maximum(opens_m, closes_m), starts)
        low = np.minimum.reduceat(np.minimum(opens_m, closes_m), starts)
        samples = np.diff(np.append(starts, len(bucket))) * SAMPLES_PER_MINUTE
        assert len(starts) == n
        fmt = _signed_fixed
        columns = [
            opens.tolist(),
            fmt(opens_m[starts], PREMIUM_DECIMALS),
            fmt(high, PREMIUM_DECIMALS),
            fmt(low, PREMIUM_DECIMALS),
            fmt(closes_m[ends_m], PREMIUM_DECIMALS),
            ["0"] * n,
            (ends - 1).tolist(),
            ["0"] * n,
            samples.tolist(),
            ["0"] * n,
            ["0"] * n,
            ["0"] * n,
        ]
        return [list(row) for row in zip(*columns, strict=True)]

    def funding_interval_hours(self, symbol: str) -> int:
        """8 for most symbols; a few (a fixed property of the symbol name) settle every 4 h."""
        self.instrument(symbol)
        if symbol in ("BTCUSDT", "ETHUSDT"):
            return 8
        return 4 if symbol_key(symbol) % 6 == 0 else 8

    def funding_times(self, symbol: str, start_ms: int, end_ms: int) -> list[int]:
        """Settlement times in [start_ms, end_ms) after listing: multiples of the interval from UTC midnight."""
        step = self.funding_interval_hours(symbol) * HOUR_MS
        start_ms = max(int(start_ms), self.first_trade_ms(symbol) + 1)
        first = -(-start_ms // step) * step
        return list(range(first, int(end_ms), step))

    def _funding_rate_units(self, symbol: str, settle_ms: int, upto_ms: int) -> int:
        """Binance's formula on the interval's average premium (so far, up to `upto_ms`), in units of 1e-8:
        F = P + clamp(I − P, ±0.05%), capped at ±0.75%."""
        hours = self.funding_interval_hours(symbol)
        begin = max(settle_ms - hours * HOUR_MS, self.first_trade_ms(symbol) - self.first_trade_ms(symbol) % MINUTE_MS)
        stop = max(min(settle_ms, upto_ms - upto_ms % MINUTE_MS + MINUTE_MS), begin + MINUTE_MS)
        premium = float(self._premium_minutes(symbol, begin, stop).mean()) / PREMIUM_SCALE
        interest = INTEREST_PER_8H * hours / 8
        rate = premium + float(np.clip(interest - premium, -0.0005, 0.0005))
        return round(float(np.clip(rate, -FUNDING_CAP, FUNDING_CAP)) * PREMIUM_SCALE)

    def funding_rates(
        self,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 100,
        *,
        now_ms: int,
    ) -> list[dict[str, Any]]:
        """GET /fapi/v1/fundingRate: settlements in [start, end] (end defaults to now), oldest first; the latest
        `limit` when no start is given."""
        end = now_ms if end_ms is None else min(end_ms, now_ms)
        step = self.funding_interval_hours(symbol) * HOUR_MS
        if start_ms is None:
            times = self.funding_times(symbol, end - limit * step, end + 1)[-limit:]
        else:
            times = self.funding_times(symbol, start_ms, end + 1)[:limit]
        return [
            {
                "symbol": symbol,
                "fundingTime": t,
                "fundingRate": _signed_fixed(np.array([self._funding_rate_units(symbol, t, t)]), PREMIUM_DECIMALS)[0],
                "markPrice": _format_fixed(float(self.mark_price(symbol, t)), PREMIUM_DECIMALS),
            }
            for t in times
        ]

    def mark_price(self, symbol: str, now_ms: int) -> Decimal:
        """The fair futures price now (8 decimals); NoTradesError before listing."""
        self._require_listed(symbol, now_ms)
        value = float(np.exp(self._mid_log(symbol, now_ms)))
        return Decimal(_format_fixed(value, PREMIUM_DECIMALS))

    def index_price(self, symbol: str, now_ms: int) -> Decimal:
        """The spot index: mark / (1 + premium)."""
        self._require_listed(symbol, now_ms)
        value = float(np.exp(self._mid_log(symbol, now_ms))) / (1 + self.premium_at(symbol, now_ms))
        return Decimal(_format_fixed(value, PREMIUM_DECIMALS))

    def next_funding_time(self, symbol: str, now_ms: int) -> int:
        step = self.funding_interval_hours(symbol) * HOUR_MS
        return now_ms - now_ms % step + step

    def premium_index(self, symbol: str, now_ms: int) -> dict[str, Any]:
        """GET /fapi/v1/premiumIndex for one symbol; lastFundingRate is the running estimate for the next settle."""
        index = self.index_price(symbol, now_ms)
        next_time = self.next_funding_time(symbol, now_ms)
        rate = self._funding_rate_units(symbol, next_time, now_ms)
        hours = self.funding_interval_hours(symbol)
        return {
            "symbol": symbol,
            "markPrice": f"{self.mark_price(symbol, now_ms):f}",
            "indexPrice": f"{index:f}",
            "estimatedSettlePrice": f"{index:f}",
            "lastFundingRate": _signed_fixed(np.array([rate]), PREMIUM_DECIMALS)[0],
            "interestRate": _format_fixed(INTEREST_PER_8H * hours / 8, PREMIUM_DECIMALS),
            "nextFundingTime": next_time,
            "time": now_ms,
        }
