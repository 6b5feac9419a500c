"""What a calculator sees: the trailing market data of one sealed 5-minute window, read-only.

Built once per alpha run from long panels (one row per symbol and time, `symbol` a Binance name such as BTCUSDT)
and shared by every calculator of the run. The view presents:
- symbols as strategy names (`btc-usdt`), the names calculators return weights for;
- Decimal columns as Float64 (research maths is float maths; exact prices for sizing come from the stored bars);
- only rows at or before the sealed window and no older than `history_days`: no look-ahead is possible.

Sharing is safe: Polars frames are copy-on-write, every accessor hands out a fresh shallow clone (an in-place change
such as `df[0, "close"] = 0` or `insert_column` touches only that clone), lists are fresh, and the view itself is
frozen. A calculator declaring `mutates_inputs = True` additionally gets its own `copy()` of the view.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import polars.selectors as cs

from lsq.paths import DataPaths
from lsq.stores.factor_panel import TIME_COLUMNS, load_view, map_ipc, strategy_name
from lsq.stores.factor_panel import prepare as _prepare
from lsq.stores.universes import TRADED_VERSION, universe_symbols
from lsq.symbols import to_exchange
from lsq.timelabels import DAY_MS, PERIOD_MS, WINDOW_MS, label_of, parse_label, parse_period

TRADING_UNIVERSE = TRADED_VERSION
# Any spelling lsq.timelabels.parse_period accepts; these are the documented ones.
Mode = Literal["5min", "5m", "1h", "4h", "8h", "12h", "24h"]
PANELS = ("bars", "tran_stats", "premium_index", "funding")


def _offsets(frame: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """symbol -> (offset, length) of its contiguous block in a frame sorted by symbol."""
    if frame.height == 0:
        return {}
    runs = frame.get_column("symbol").rle()
    lengths = runs.struct.field("len").cast(pl.Int64)
    starts = lengths.cum_sum() - lengths
    return dict(zip(runs.struct.field("value").to_list(), zip(starts, lengths, strict=True), strict=True))


class AlphaDataView:
    """Read-only trailing data for the window starting at `window_ms` (the last sealed window, inclusive)."""

    __slots__ = (
        "__weakref__",
        "_frames",
        "_ipc",
        "_lock",
        "_offsets",
        "_sealed",
        "_tails",
        "_universe",
        "history_days",
        "start_ms",
        "window_ms",
    )

    def __init__(
        self,
        window_ms: int,
        bars: pl.DataFrame | None,
        tran_stats: pl.DataFrame | None = None,
        premium_index: pl.DataFrame | None = None,
        funding: pl.DataFrame | None = None,
        *,
        universe: list[str] | None = None,
        history_days: int = 30,
        _prepared: bool = False,
    ) -> None:
        if window_ms % WINDOW_MS:
            raise ValueError(f"window_ms={window_ms} is not the start of a 5-minute window")
        if history_days < 1:
            raise ValueError(f"history_days={history_days} must be at least 1")
        self.window_ms = window_ms
        self.history_days = history_days
        self.start_ms = window_ms + WINDOW_MS - history_days * DAY_MS
        end = window_ms + WINDOW_MS
        given = {"bars": bars, "tran_stats": tran_stats, "premium_index": premium_index, "funding": funding}
        if _prepared:
            self._frames = {k: v if v is not None else _prepare(k, None, 0, 0) for k, v in given.items()}
        else:
            self._frames = {k: _prepare(k, v, self.start_ms, end) for k, v in given.items()}
        if universe is None:
            names = self._frames["bars"].get_column("symbol").unique().to_list()
        else:
            names = [strategy_name(s) for s in universe]
        self._universe = tuple(sorted(set(names)))
        self._offsets: dict[str, dict[str, tuple[int, int]]] = {}
        self._tails: dict[tuple[str, int], pl.DataFrame] = {}
        self._ipc: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._sealed = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            raise AttributeError(f"AlphaDataView is read-only (tried to set {name!r})")
        object.__setattr__(self, name, value)

    # Identity of the run

    @property
    def label(self) -> str:
        """Strategy label of the sealed window, e.g. '2024-08-08-288'."""
        return label_of(self.window_ms)

    @property
    def end_ms(self) -> int:
        """End (exclusive) of the data: the end of the sealed window."""
        return self.window_ms + WINDOW_MS

    @property
    def universe(self) -> tuple[str, ...]:
        """Strategy names of the tradable symbols; weights for any other symbol are dropped."""
        return self._universe

    def iter_symbols(self) -> Iterator[str]:
        return iter(list(self._universe))

    # Panel form: the fast way

    @property
    def bars_panel(self) -> pl.DataFrame:
        """All symbols' 5-minute bars, sorted by symbol then open_time."""
        return self._frames["bars"].clone()

    @property
    def tran_stats_panel(self) -> pl.DataFrame:
        """All symbols' 5-minute trade-size statistics, sorted by symbol then open_time."""
        return self._frames["tran_stats"].clone()

    @property
    def premium_index_panel(self) -> pl.DataFrame:
        return self._frames["premium_index"].clone()

    @property
    def funding_panel(self) -> pl.DataFrame:
        """Funding events (funding_time, funding_rate, ...) up to the end of the sealed window."""
        return self._frames["funding"].clone()

    def recent(self, kind: str, windows: int) -> pl.DataFrame:
        """The last `windows` 5-minute windows of a panel for all symbols (by time, so gaps are not back-filled)."""
        if windows < 1:
            raise ValueError(f"windows={windows} must be at least 1")
        tcol = self._time_column(kind)
        return self._frames[kind].filter(pl.col(tcol) >= self.end_ms - windows * WINDOW_MS)

    def tail(self, kind: str, rows: int) -> pl.DataFrame:
        """The last `rows` rows of every symbol of a panel (fewer for a symbol with less history).

        Cached per (panel, rows): factors asking for the same tail share the work.
        """
        if rows < 1:
            raise ValueError(f"rows={rows} must be at least 1")
        self._time_column(kind)
        key = (kind, rows)
        with self._lock:
            cached = self._tails.get(key)
        if cached is None:
            spans = np.asarray(list(self._symbol_offsets(kind).values()), dtype=np.int64).reshape(-1, 2)
            ends = spans[:, 0] + spans[:, 1]
            starts = np.maximum(spans[:, 0], ends - rows)
            lengths = ends - starts
            first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            index = np.arange(lengths.sum()) + np.repeat(starts - first, lengths)
            cached = self._frames[kind].gather(index)
            with self._lock:
                self._tails[key] = cached
        return cached.clone()

    # Per-symbol form

    def get_bar(self, symbol: str, tail: int | None = None) -> pl.DataFrame:
        """One symbol's bars, oldest first; the last `tail` rows if given. Unknown symbol: empty frame."""
        return self._symbol_rows("bars", symbol, tail)

    def get_tran_stats(self, symbol: str, tail: int | None = None) -> pl.DataFrame:
        return self._symbol_rows("tran_stats", symbol, tail)

    def get_premium_index(self, symbol: str | None = None, tail: int | None = None) -> pl.DataFrame:
        """Premium-index bars of one symbol (or the whole panel when `symbol` is None)."""
        return self.premium_index_panel if symbol is None else self._symbol_rows("premium_index", symbol, tail)

    def get_funding_rates(self, symbol: str | None = None, tail: int | None = None) -> pl.DataFrame:
        """Funding events of one symbol (or all), oldest first."""
        return self.funding_panel if symbol is None else self._symbol_rows("funding", symbol, tail)

    def get_bar_between(self, begin_label: str, end_label: str, mode: Mode = "5min") -> pl.DataFrame:
        """All symbols' bars from window `begin_label` to window `end_label` (both inclusive), at period `mode`."""
        return self._between("bars", begin_label, end_label, mode)

    def get_tran_stats_between(self, begin_label: str, end_label: str, mode: Mode = "5min") -> pl.DataFrame:
        return self._between("tran_stats", begin_label, end_label, mode)

    @classmethod
    def from_storage(
        cls, paths: DataPaths, window_ms: int, history_days: int, universe_version: str | None = TRADING_UNIVERSE
    ) -> AlphaDataView:
        """The view of `window_ms` from the pipeline's stored panels and the universe in force that day.

        `universe_version=None` takes every symbol with bars (research without a stored universe). A missing
        universe is an error otherwise: trading must never silently widen to every symbol.
        """
        start, end = window_ms + WINDOW_MS - history_days * DAY_MS, window_ms + WINDOW_MS
        universe = None
        if universe_version is not None:
            universe = universe_symbols(paths, window_ms, universe_version)
            if not universe:
                raise FileNotFoundError(
                    f"no {universe_version} universe stored under {paths.root / 'universe'} for {label_of(window_ms)}"
                )
        # Through the rolling panel (lsq.stores.factor_panel): mapped, not re-read, and only the universe's rows
        # (weights for other symbols are dropped anyway).
        panels = load_view(paths, start, end, None if universe is None else [to_exchange(s) for s in universe])
        return cls(
            window_ms,
            panels["bars"],
            panels["tran_stats"],
            panels["premium_index"],
            panels["funding"],
            universe=universe,
            history_days=history_days,
            _prepared=True,
        )

    # Copies and transport

    def copy(self) -> AlphaDataView:
        """An independent copy for calculators that mutate their inputs: a new view object with its own frames.

        Polars frames are copy-on-write, so a clone behaves as a deep copy: writing to one never shows in the other.
        """
        frames = {k: v.clone() for k, v in self._frames.items()}
        return AlphaDataView(
            self.window_ms,
            **frames,
            universe=list(self._universe),
            history_days=self.history_days,
            _prepared=True,
        )

    def ipc_spec(self) -> dict[str, Any]:
        """Where this view's panels are stored as uncompressed Arrow IPC for worker processes to map.

        Written once per view (the view never changes) to shared memory when available, removed with the view.
        """
        with self._lock:
            if self._ipc is None:
                shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
                folder = Path(tempfile.mkdtemp(prefix="lsq-alpha-view-", dir=shm))
                weakref.finalize(self, shutil.rmtree, folder, True)
                for kind, frame in self._frames.items():
                    frame.write_ipc(folder / f"{kind}.arrow", compression="uncompressed")
                object.__setattr__(
                    self,
                    "_ipc",
                    {
                        "folder": str(folder),
                        "window_ms": self.window_ms,
                        "history_days": self.history_days,
                        "universe": list(self._universe),
                    },
                )
            assert self._ipc is not None
            return dict(self._ipc)

    @classmethod
    def load_ipc(cls, spec: Mapping[str, Any]) -> AlphaDataView:
        folder = Path(spec["folder"])
        frames = {kind: map_ipc(folder / f"{kind}.arrow") for kind in PANELS}
        return cls(
            spec["window_ms"],
            **frames,
            universe=list(spec["universe"]),
            history_days=spec["history_days"],
            _prepared=True,
        )

    # Internals

    def _time_column(self, kind: str) -> str:
        if kind not in TIME_COLUMNS:
            raise ValueError(f"unknown panel {kind!r}; expected one of {PANELS}")
        return TIME_COLUMNS[kind]

    def _symbol_rows(self, kind: str, symbol: str, tail: int | None) -> pl.DataFrame:
        self._time_column(kind)
        if tail is not None and tail < 0:
            raise ValueError(f"tail={tail} must be >= 0")
        frame = self._frames[kind]
        offset, length = self._symbol_offsets(kind).get(strategy_name(symbol), (0, 0))
        if tail is not None and tail < length:
            offset, length = offset + length - tail, tail
        return frame.slice(offset, length)

    def _symbol_offsets(self, kind: str) -> dict[str, tuple[int, int]]:
        with self._lock:
            offsets = self._offsets.get(kind)
            if offsets is None:
                offsets = _offsets(self._frames[kind])
                self._offsets[kind] = offsets
        return offsets

    def _between(self, kind: str, begin_label: str, end_label: str, mode: str) -> pl.DataFrame:
        period = parse_period(mode, "mode")
        begin, end = parse_label(begin_label), parse_label(end_label) + WINDOW_MS
        if end <= begin:
            raise ValueError(f"end label {end_label!r} is before begin label {begin_label!r}")
        rows = self._frames[kind].filter(pl.col("open_time").is_between(begin, end, closed="left"))
        return rows if PERIOD_MS[period] == WINDOW_MS else _rollup(kind, rows, period)


def _rollup(kind: str, rows: pl.DataFrame, period: str) -> pl.DataFrame:
    """Longer-period rows from 5-minute rows with the aggregation package's rules, as floats like the panels."""
    from lsq.aggregation.rollups import rollup_bars, rollup_tran_stats

    if kind not in ("bars", "tran_stats"):
        raise ValueError(f"only bars and tran_stats roll up, not {kind!r}")
    rolled = rollup_bars(rows, period) if kind == "bars" else rollup_tran_stats(rows, period)
    return rolled.with_columns(cs.decimal().cast(pl.Float64))
