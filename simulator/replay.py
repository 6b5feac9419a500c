"""Replay recorded aggTrades (Binance public-data CSV, plain or zipped) as the simulator's market.

The recording is shifted so that its first trade plays at `start_at_ms` (the server's start) and runs at `speed`×
real time; every consumer (REST history, klines, tickers, bulk files, the stream) sees the same shifted trades,
because they all read them through the same `MarketLike` interface as the generated market. Prices and quantities
are converted exactly to the instrument's tick and step grid; a value off the grid or a malformed line is an error
naming the file and line.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from lsq.timelabels import DAY_MS
from simulator.instruments import Instrument, instruments_by_symbol
from simulator.market import MarketBase, NoTradesError, TradeBlock

_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-aggTrades-\d{4}-\d{2}-\d{2}\.(?:csv|zip)$")
_COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker")
_INT = r"^[0-9]{1,19}$"
_DEC = r"^[0-9]+(\.[0-9]*)?$"
_BOOL = r"^(?i:true|false)$"
_MICROSECONDS_ABOVE = 10**14  # newer public-data files stamp microseconds


class ReplayFileError(ValueError):
    """A recording that cannot be replayed; the message names the file and, where it applies, the line."""


def symbol_of(path: Path) -> str:
    match = _NAME.match(path.name)
    if not match:
        raise ReplayFileError(f"{path}: file name must look like BTCUSDT-aggTrades-2024-08-08.csv or .zip")
    return match["symbol"]


def _read_text(path: Path) -> str:
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise ReplayFileError(f"{path}: expected exactly one .csv inside, found {members}")
                return archive.read(members[0]).decode("utf-8")
        return path.read_text(encoding="utf-8")
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ReplayFileError(f"{path}: cannot read: {exc}") from None


def _grid_units(text: pl.Expr, decimals: int) -> pl.Expr:
    """'123.4500' -> integer units of 10**-decimals (null when it has more significant decimals than that)."""
    parts = text.str.split_exact(".", 1)
    whole = parts.struct.field("field_0")
    frac = parts.struct.field("field_1").fill_null("").str.strip_chars_end("0")
    units = whole.cast(pl.Int64) * 10**decimals
    if decimals:
        units = units + frac.str.pad_end(decimals, "0").replace("", "0").cast(pl.Int64)
    return pl.when(frac.str.len_chars() <= decimals).then(units).otherwise(None)


def _fail(path: Path, frame: pl.DataFrame, mask: pl.Series, first_line: int, what: str) -> None:
    bad = mask.arg_true()
    if len(bad):
        row = int(bad[0])
        raise ReplayFileError(f"{path}: line {first_line + row}: {what}: {frame.row(row)}")


def parse_recording(path: Path, instrument: Instrument) -> TradeBlock:
    """One recorded file -> a TradeBlock on the instrument's grids, in the recording's own times."""
    text = _read_text(path)
    has_header = text.startswith("agg_trade_id")
    body = text.partition("\n")[2] if has_header else text
    if not body.strip():
        raise ReplayFileError(f"{path}: no trades")
    first_line = 2 if has_header else 1
    try:
        frame = pl.read_csv(
            io.StringIO(text),
            has_header=False,
            skip_rows=1 if has_header else 0,
            new_columns=list(_COLUMNS),
            schema_overrides=dict.fromkeys(_COLUMNS, pl.String),
            infer_schema=False,
        )
    except pl.exceptions.PolarsError as exc:
        raise ReplayFileError(f"{path}: not an aggTrades CSV with 7 columns: {exc}") from None
    if frame.width != len(_COLUMNS):
        raise ReplayFileError(f"{path}: expected 7 columns, found {frame.width}")
    if not len(frame):
        raise ReplayFileError(f"{path}: no trades")
    frame = frame.with_columns(pl.col(c).str.strip_chars() for c in _COLUMNS)
    checks = {c: _INT for c in ("agg_trade_id", "first_trade_id", "last_trade_id", "transact_time")}
    checks |= {"price": _DEC, "quantity": _DEC, "is_buyer_maker": _BOOL}
    for column, pattern in checks.items():
        ok = frame[column].str.contains(pattern).fill_null(False)
        _fail(path, frame, ~ok, first_line, f"bad {column}")
    ticks_units, steps_units = instrument.tick_units, instrument.step_units
    parsed = frame.select(
        pl.col("agg_trade_id", "first_trade_id", "last_trade_id", "transact_time").cast(pl.Int64),
        _grid_units(pl.col("price"), instrument.price_decimals).alias("price_units"),
        _grid_units(pl.col("quantity"), instrument.qty_decimals).alias("qty_units"),
        (pl.col("is_buyer_maker").str.to_lowercase() == "true").alias("m"),
    )
    price_units, qty_units = parsed["price_units"], parsed["qty_units"]
    off_tick = price_units.is_null() | (price_units % ticks_units != 0) | (price_units <= 0)
    _fail(path, frame, off_tick.fill_null(True), first_line, f"price off the tick grid {instrument.raw['tick_size']}")
    off_step = qty_units.is_null() | (qty_units % steps_units != 0) | (qty_units <= 0)
    _fail(
        path, frame, off_step.fill_null(True), first_line, f"quantity off the step grid {instrument.raw['step_size']}"
    )
    agg = parsed["agg_trade_id"].to_numpy()
    first, last = parsed["first_trade_id"].to_numpy(), parsed["last_trade_id"].to_numpy()
    time = parsed["transact_time"].to_numpy()
    if time.max() >= _MICROSECONDS_ABOVE:
        time = time // 1000
    _fail(path, frame, pl.Series(last < first), first_line, "last_trade_id before first_trade_id")
    _fail(path, frame, pl.Series(np.diff(agg, prepend=agg[0] - 1) <= 0), first_line, "agg_trade_id not increasing")
    _fail(path, frame, pl.Series(np.diff(time, prepend=time[0]) < 0), first_line, "transact_time going backwards")
    return TradeBlock(
        instrument.symbol,
        instrument,
        agg,
        price_units.to_numpy() // ticks_units,
        qty_units.to_numpy() // steps_units,
        first,
        last,
        time,
        parsed["m"].to_numpy(),
    )


def _merge(instrument: Instrument, blocks: Sequence[TradeBlock], paths: Sequence[Path]) -> TradeBlock:
    """Several files of one symbol -> one block in id order; overlapping files must agree on their common ids."""
    order = np.argsort([int(b.agg_id[0]) for b in blocks], kind="stable")
    merged = TradeBlock.concat(instrument, [blocks[i] for i in order])
    keep = np.ones(len(merged), dtype=bool)
    keep[1:] = merged.agg_id[1:] != merged.agg_id[:-1]
    merged = merged[keep]
    if np.any(np.diff(merged.agg_id) <= 0) or np.any(np.diff(merged.time_ms) < 0):
        names = ", ".join(str(paths[i]) for i in order)
        raise ReplayFileError(f"{instrument.symbol}: files overlap inconsistently: {names}")
    return merged


class ReplayMarket(MarketBase):
    """A market whose trades are a recording, time-shifted to start at `start_at_ms` and played at `speed`×."""

    def __init__(self, recordings: Mapping[str, TradeBlock], speed: float, start_at_ms: int, seed: int = 0) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        if not recordings:
            raise ValueError("nothing to replay")
        super().__init__([b.instrument for b in recordings.values()], seed)
        origin = min(int(b.time_ms[0]) for b in recordings.values())
        self.speed = float(speed)
        self.start_at_ms = int(start_at_ms)
        self.recording_start_ms = origin
        self._blocks: dict[str, TradeBlock] = {}
        for symbol, block in recordings.items():
            shifted = self.start_at_ms + np.floor((block.time_ms - origin) / self.speed).astype(np.int64)
            self._blocks[symbol] = TradeBlock(
                symbol,
                block.instrument,
                block.agg_id,
                block.price_ticks,
                block.qty_steps,
                block.first_id,
                block.last_id,
                shifted,
                block.buyer_maker,
            )

    @classmethod
    def from_files(
        cls, paths: Iterable[Path | str], speed: float = 1.0, start_at_ms: int = 0, seed: int = 0
    ) -> ReplayMarket:
        """Load public-data aggTrades files (`{SYMBOL}-aggTrades-{YYYY-MM-DD}.csv|.zip`, header optional)."""
        files = [Path(p) for p in paths]
        by_symbol: dict[str, list[Path]] = {}
        for path in files:
            by_symbol.setdefault(symbol_of(path), []).append(path)
        try:
            instruments = dict(zip(by_symbol, instruments_by_symbol(by_symbol), strict=True))
        except ValueError as exc:
            raise ReplayFileError(str(exc)) from None
        recordings = {
            symbol: _merge(instruments[symbol], [parse_recording(p, instruments[symbol]) for p in group], group)
            for symbol, group in by_symbol.items()
        }
        return cls(recordings, speed=speed, start_at_ms=start_at_ms, seed=seed)

    @property
    def end_ms(self) -> int:
        """When the last recorded trade plays."""
        return max(int(b.time_ms[-1]) for b in self._blocks.values())

    def first_trade_ms(self, symbol: str) -> int:
        self.instrument(symbol)
        return int(self._blocks[symbol].time_ms[0])

    def _day_block(self, symbol: str, day_ms: int) -> TradeBlock:
        block = self._blocks[symbol]
        lo, hi = np.searchsorted(block.time_ms, [day_ms, day_ms + DAY_MS], side="left")
        return block[lo:hi]

    def trades(self, symbol: str, start_ms: int, end_ms: int) -> TradeBlock:
        self.instrument(symbol)
        block = self._blocks[symbol]
        lo, hi = np.searchsorted(block.time_ms, [start_ms, max(start_ms, end_ms)], side="left")
        return block[lo:hi]

    def trades_from_id(self, symbol: str, from_id: int, limit: int, end_ms: int | None = None) -> TradeBlock:
        self.instrument(symbol)
        block = self._blocks[symbol]
        lo = int(np.searchsorted(block.agg_id, from_id, side="left"))
        piece = block[lo : lo + max(0, int(limit))]
        if end_ms is not None:
            piece = piece[: int(np.searchsorted(piece.time_ms, end_ms, side="right"))]
        return piece

    def first_id_at(self, symbol: str, ms: int) -> int:
        self.instrument(symbol)
        block = self._blocks[symbol]
        i = int(np.searchsorted(block.time_ms, ms, side="left"))
        return int(block.agg_id[i]) if i < len(block) else int(block.agg_id[-1]) + 1

    def _mid_log(self, symbol: str, now_ms: int) -> float:
        """No model behind a recording: the fair price is the last traded price."""
        try:
            ticks = self.last_price_ticks(symbol, now_ms)
        except NoTradesError:
            raise NoTradesError(f"{symbol}: the replay has not reached its first trade at {now_ms}") from None
        return math.log(ticks * float(self.instrument(symbol).tick_size))
