"""aggTrade blocks and their exact per-minute integer summaries, shared by the generated market and the replay."""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from lsq.timelabels import DAY_MS, MINUTE_MS
from simulator.instruments import Instrument

MINUTES = DAY_MS // MINUTE_MS


class UnknownSymbolError(LookupError):
    """The symbol is not traded by this market (the REST layer answers -1121)."""


class NoTradesError(LookupError):
    """Asked for a price before the symbol's first trade."""


def symbol_key(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


_T = TypeVar("_T")
Side = Literal["left", "right"]


class LRUCache:
    """A small thread-safe LRU of computed blocks (values are immutable, so computing twice in a race is harmless)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)
        return value


# ---------------------------------------------------------------------------------------------------------------
# Trade blocks


@dataclass(frozen=True)
class TradeBlock:
    """aggTrades of one symbol, sorted by (time, id), as parallel numpy arrays on the symbol's integer grids."""

    symbol: str
    instrument: Instrument
    agg_id: np.ndarray  # int64, contiguous within a block from the simulator
    price_ticks: np.ndarray  # int64
    qty_steps: np.ndarray  # int64
    first_id: np.ndarray  # int64
    last_id: np.ndarray  # int64
    time_ms: np.ndarray  # int64
    buyer_maker: np.ndarray  # bool: the taker sold

    _FIELDS = ("agg_id", "price_ticks", "qty_steps", "first_id", "last_id", "time_ms", "buyer_maker")

    @classmethod
    def empty(cls, instrument: Instrument) -> TradeBlock:
        z = np.zeros(0, dtype=np.int64)
        return cls(instrument.symbol, instrument, z, z, z, z, z, z, np.zeros(0, dtype=bool))

    @classmethod
    def concat(cls, instrument: Instrument, blocks: Sequence[TradeBlock]) -> TradeBlock:
        blocks = [b for b in blocks if len(b)]
        if not blocks:
            return cls.empty(instrument)
        if len(blocks) == 1:
            return blocks[0]
        arrays = {f: np.concatenate([getattr(b, f) for b in blocks]) for f in cls._FIELDS}
        return cls(instrument.symbol, instrument, **arrays)

    def __len__(self) -> int:
        return int(self.agg_id.shape[0])

    # The DaySource interface (what the market reads a day's trades through), so a plain block serves as one.
    def search_time(self, ms: Sequence[int] | int, side: Side = "left") -> Any:
        return np.searchsorted(self.time_ms, ms, side=side)

    def rows(self, lo: int, hi: int) -> TradeBlock:
        return self[lo:hi]

    def agg_id_at(self, i: int) -> int:
        return int(self.agg_id[i])

    def __getitem__(self, index: slice | np.ndarray) -> TradeBlock:
        arrays = {f: getattr(self, f)[index] for f in self._FIELDS}
        return TradeBlock(self.symbol, self.instrument, **arrays)

    @property
    def trade_count(self) -> int:
        """Underlying trades: Σ(l − f + 1)."""
        return int((self.last_id - self.first_id + 1).sum())

    def prices(self) -> list[str]:
        return self.instrument.format_prices(self.price_ticks)

    def quantities(self) -> list[str]:
        return self.instrument.format_qtys(self.qty_steps)

    def to_rest_rows(self) -> list[dict[str, object]]:
        """GET /fapi/v1/aggTrades rows: {a, p, q, f, l, T, m} with Binance's strings."""
        keys = ("a", "p", "q", "f", "l", "T", "m")
        columns = (
            self.agg_id.tolist(),
            self.prices(),
            self.quantities(),
            self.first_id.tolist(),
            self.last_id.tolist(),
            self.time_ms.tolist(),
            self.buyer_maker.tolist(),
        )
        return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


class DaySource(Protocol):
    """One symbol-day of trades as the market reads it: search by time, take rows as a TradeBlock."""

    def __len__(self) -> int: ...

    def search_time(self, ms: Sequence[int] | int, side: Side = "left") -> Any: ...

    def rows(self, lo: int, hi: int) -> TradeBlock: ...

    def agg_id_at(self, i: int) -> int: ...


def _smallest_int(values: np.ndarray) -> np.ndarray:
    """`values` as int32 when they fit (most prices in ticks and quantities in steps do), else int64."""
    if not len(values) or (int(values.min()) >= -(2**31) and int(values.max()) < 2**31):
        return values.astype(np.int32)
    return values.astype(np.int64, copy=False)


class CompactDay:
    """A symbol-day of aggTrades held in about a third of a TradeBlock's memory (17 bytes a trade instead of 49).

    Times are int32 offsets into the day; prices and quantities int32 when they fit; aggTrade ids and first trade
    ids are not stored when contiguous (they are for generated trades: agg ids count up, and each aggTrade's first
    trade id follows the previous one's last), only last trade ids relative to the day's first. The simulator keeps
    every symbol's current day in memory for the stream, so this is what its resident size is made of. Rows come
    out as ordinary int64 TradeBlocks, one slice at a time."""

    __slots__ = (
        "_agg_base",
        "_agg_rel",
        "_day_ms",
        "_first_rel",
        "_instrument",
        "_last_rel",
        "_maker",
        "_offset",
        "_price",
        "_qty",
        "_symbol",
        "_trade_base",
    )

    def __init__(self, block: TradeBlock, day_ms: int) -> None:
        n = len(block)
        self._symbol, self._instrument, self._day_ms = block.symbol, block.instrument, int(day_ms)
        self._offset = (block.time_ms - day_ms).astype(np.int32)
        self._price = _smallest_int(block.price_ticks)
        self._qty = _smallest_int(block.qty_steps)
        self._maker = block.buyer_maker.astype(bool, copy=False)
        self._agg_base = int(block.agg_id[0]) if n else 0
        self._trade_base = int(block.first_id[0]) if n else 0
        agg_rel = block.agg_id - self._agg_base
        self._agg_rel = None if n and int(agg_rel[-1]) == n - 1 and bool((np.diff(agg_rel) == 1).all()) else agg_rel
        last_rel = block.last_id - self._trade_base
        self._last_rel = _smallest_int(last_rel)
        first_rel = block.first_id - self._trade_base
        contiguous = n and bool((first_rel[1:] == last_rel[:-1] + 1).all())
        self._first_rel = None if contiguous else _smallest_int(first_rel)

    def __len__(self) -> int:
        return int(self._offset.shape[0])

    @property
    def nbytes(self) -> int:
        arrays = (self._offset, self._price, self._qty, self._maker, self._agg_rel, self._last_rel, self._first_rel)
        return sum(a.nbytes for a in arrays if a is not None)

    def search_time(self, ms: Sequence[int] | int, side: Side = "left") -> Any:
        # The query in the array's own dtype: searchsorted would otherwise cast the whole day to int64 per call.
        day, top = self._day_ms, 2**31 - 1
        if isinstance(ms, int | np.integer):
            return self._offset.searchsorted(np.int32(min(max(int(ms) - day, -1), top)), side=side)
        rel = np.array([min(max(int(v) - day, -1), top) for v in ms], dtype=np.int32)
        return self._offset.searchsorted(rel, side=side)

    def agg_id_at(self, i: int) -> int:
        return self._agg_base + (i if self._agg_rel is None else int(self._agg_rel[i]))

    def rows(self, lo: int, hi: int) -> TradeBlock:
        n = len(self)
        lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
        if hi <= lo:  # the stream's usual step for a quiet symbol
            return TradeBlock.empty(self._instrument)
        last = self._last_rel[lo:hi].astype(np.int64) + self._trade_base
        if self._first_rel is not None:
            first = self._first_rel[lo:hi].astype(np.int64) + self._trade_base
        else:
            first = np.empty(hi - lo, dtype=np.int64)
            first[1:] = last[:-1] + 1
            first[0] = self._trade_base if lo == 0 else int(self._last_rel[lo - 1]) + self._trade_base + 1
        if self._agg_rel is None:
            agg = np.arange(self._agg_base + lo, self._agg_base + hi, dtype=np.int64)
        else:
            agg = self._agg_rel[lo:hi] + self._agg_base
        return TradeBlock(
            self._symbol,
            self._instrument,
            agg,
            self._price[lo:hi].astype(np.int64),
            self._qty[lo:hi].astype(np.int64),
            first,
            last,
            self._offset[lo:hi].astype(np.int64) + self._day_ms,
            self._maker[lo:hi],
        )


# ---------------------------------------------------------------------------------------------------------------
# Per-minute summaries: the exact integer aggregates klines and tickers are built from

# Columns of a summary row (int64): one row per minute, or per kline/window after combining.
(N_AGG, OPEN, HIGH, LOW, CLOSE, VOL, QUOTE, TRADES, TB_VOL, TB_QUOTE, FIRST_F, LAST_L, FIRST_T, LAST_T, LAST_QTY) = (
    range(15)
)
N_FIELDS = 15
_SUM_COLS = [N_AGG, VOL, QUOTE, TRADES, TB_VOL, TB_QUOTE]
_FIRST_COLS = [OPEN, FIRST_F, FIRST_T]
_LAST_COLS = [CLOSE, LAST_L, LAST_T, LAST_QTY]


def summarize_groups(block: TradeBlock, starts: np.ndarray) -> np.ndarray:
    """Summary rows of the non-empty, contiguous groups of `block` beginning at `starts` (strictly increasing)."""
    out = np.zeros((len(starts), N_FIELDS), dtype=np.int64)
    if not len(starts):
        return out
    ends = np.append(starts[1:], len(block)) - 1
    price, qty = block.price_ticks, block.qty_steps
    quote = price * qty
    taker_buy = ~block.buyer_maker
    out[:, N_AGG] = np.diff(np.append(starts, len(block)))
    out[:, OPEN] = price[starts]
    out[:, HIGH] = np.maximum.reduceat(price, starts)
    out[:, LOW] = np.minimum.reduceat(price, starts)
    out[:, CLOSE] = price[ends]
    out[:, VOL] = np.add.reduceat(qty, starts)
    out[:, QUOTE] = np.add.reduceat(quote, starts)
    out[:, TRADES] = np.add.reduceat(block.last_id - block.first_id + 1, starts)
    out[:, TB_VOL] = np.add.reduceat(np.where(taker_buy, qty, 0), starts)
    out[:, TB_QUOTE] = np.add.reduceat(np.where(taker_buy, quote, 0), starts)
    out[:, FIRST_F] = block.first_id[starts]
    out[:, LAST_L] = block.last_id[ends]
    out[:, FIRST_T] = block.time_ms[starts]
    out[:, LAST_T] = block.time_ms[ends]
    out[:, LAST_QTY] = qty[ends]
    return out


def combine_rows(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Merge consecutive non-empty summary rows into groups beginning at `starts` (exact: integer sums)."""
    out = np.zeros((len(starts), N_FIELDS), dtype=np.int64)
    if not len(starts):
        return out
    ends = np.append(starts[1:], len(rows)) - 1
    out[:, _SUM_COLS] = np.add.reduceat(rows[:, _SUM_COLS], starts, axis=0)
    out[:, HIGH] = np.maximum.reduceat(rows[:, HIGH], starts)
    out[:, LOW] = np.minimum.reduceat(rows[:, LOW], starts)
    out[:, _FIRST_COLS] = rows[starts][:, _FIRST_COLS]
    out[:, _LAST_COLS] = rows[ends][:, _LAST_COLS]
    return out


def group_summaries(bucket: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Group non-empty rows (sorted by time) by their window index in 0..n-1 (others dropped): (rows, present)."""
    keep = (bucket >= 0) & (bucket < n)
    bucket, rows = bucket[keep], rows[keep]
    out = np.zeros((n, N_FIELDS), dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    if len(bucket):
        starts = np.flatnonzero(np.diff(bucket, prepend=-1))
        out[bucket[starts]] = combine_rows(rows, starts)
        present[bucket[starts]] = True
    return out, present
