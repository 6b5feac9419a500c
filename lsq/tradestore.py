"""The aggTrade store: one Parquet file per symbol and UTC hour, plus small parts for the hour still being written.

Layout (paths from lsq.paths.DataPaths):
  trades/{SYMBOL}/YYYY-MM-DD-HHh.parquet                              compacted hour, sorted by agg_trade_id
  trades/{SYMBOL}/parts/YYYY-MM-DD-HHh/{first_id}-{last_id}-{nonce}.parquet   flushes not yet compacted

Columns and types are exactly lsq.schema.TRADE_SCHEMA. Prices and quantities are Decimal(38, 8), never floats:
Binance prints at most 8 decimals, so a decimal column holds every value exactly, sums of volumes are exact and a
trade read back equals the trade received, digit for digit (a float64 would turn 0.1 into 0.1000000000000000055...).

Crash safety. Every file is written to a temporary name in its directory and renamed into place, so a reader sees a
whole file or none, and leftover temporaries (".<name>.<random>.tmp") are never read. Readers merge hour files and
parts and drop duplicate agg_trade_ids, so the same trade may sit in several files at once without being counted
twice. `compact_hour` relies on that: it first replaces the hour file with the merge of itself and the parts, and only
then deletes the parts it merged; a crash between the two leaves duplicates, never a hole. Readers load parts eagerly
(they may be deleted by a compaction) and hour files lazily (they are only ever replaced by supersets), and retry
when a part vanishes under them: a vanished part's trades are already in the hour file.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from lsq.paths import DataPaths, atomic_write_bytes
from lsq.schema import TRADE_SCHEMA
from lsq.timelabels import HOUR_MS, from_datetime

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,40}$")
_HOUR_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}-\d{2})h$")
_PART_RE = re.compile(r"^(\d+)-(\d+)-[0-9a-f]+\.parquet$")
_COLUMNS = list(TRADE_SCHEMA)
_STALE_TMP_SECONDS = 600
_READ_RETRIES = 5


class TradeStoreError(ValueError):
    """Data that cannot be stored as given, with a message naming the problem."""


def _check_symbol(symbol: str) -> str:
    upper = symbol.upper() if isinstance(symbol, str) else ""
    if not _SYMBOL_RE.match(upper):
        raise TradeStoreError(f"bad symbol {symbol!r}: expected an exchange name such as BTCUSDT")
    return upper


@lru_cache(maxsize=1 << 16)
def _parse_hour_tag(tag: str) -> int | None:
    """`2026-11-28-05h` -> that hour's ms. Cached: every listing of a symbol parses all its hours (a month is 720
    names per symbol, listed per symbol and day by a backfill), and strptime was most of a 30-day bars run's time."""
    m = _HOUR_RE.match(tag)
    if not m:
        return None
    try:
        return from_datetime(datetime.strptime(m.group(1), "%Y-%m-%d-%H").replace(tzinfo=UTC))
    except ValueError:
        return None


def _visible_parquet(directory: Path) -> list[Path]:
    """Complete Parquet files in a directory (temporaries and hidden files excluded), sorted by name."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(directory / n for n in names if n.endswith(".parquet") and not n.startswith("."))


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with exactly the TRADE_SCHEMA columns and types, or a TradeStoreError naming what is wrong.

    Prices/quantities may come as strings or decimals; floats are refused because they are not exact.
    """
    missing = [c for c in _COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in TRADE_SCHEMA]
    if missing or extra:
        raise TradeStoreError(f"trade frame columns: missing {missing}, unexpected {extra}")
    for name in ("price", "quantity"):
        if df.schema[name].is_float():
            raise TradeStoreError(f"column {name!r} is {df.schema[name]}: pass strings or Decimal, floats are inexact")
    try:
        out = df.select(pl.col(c).cast(t, strict=True) for c, t in TRADE_SCHEMA.items())
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise TradeStoreError(f"trade frame has values that do not fit {TRADE_SCHEMA}: {exc}") from None
    nulls = [c for c, n in zip(out.columns, out.null_count().row(0), strict=True) if n]
    if nulls:
        raise TradeStoreError(f"trade frame has nulls in {nulls}")
    return out


# Ids and times grow by small steps: delta-encoded they are a fraction of their plain size. No dictionaries (trades
# rarely repeat a whole price and quantity page), and statistics only where a reader uses them (the last id, and
# row groups skipped by time): a third less CPU than Polars' writer with every statistic, files a quarter smaller and
# a quarter quicker to read. zstd level 1: ~15% less CPU than the default level 3 for ~2% larger files.
_DELTA_COLUMNS = ("agg_trade_id", "first_trade_id", "last_trade_id", "transact_time")
_ENCODING = dict.fromkeys(_DELTA_COLUMNS, "DELTA_BINARY_PACKED")
_STATISTICS = ["agg_trade_id", "transact_time"]


def _to_parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(
        df.to_arrow(),
        buf,
        compression="zstd",
        compression_level=1,
        use_dictionary=False,
        column_encoding=_ENCODING,
        write_statistics=_STATISTICS,
    )
    return buf.getvalue()


def _strictly_increasing(ids: pl.Series) -> bool:
    return bool((ids.diff().drop_nulls() > 0).all())


def id_gaps_of(ids: pl.Series) -> list[tuple[int, int]]:
    """Missing id ranges (inclusive) between consecutive sorted unique ids: [1, 2, 5, 9] -> [(3, 4), (6, 8)]."""
    if ids.len() < 2:
        return []
    # the common case (a whole bulk day, a run of REST pages) in one pass: strictly increasing and spanning exactly
    # as many ids as it holds
    if ids[-1] - ids[0] + 1 == ids.len() and _strictly_increasing(ids):
        return []
    frame = pl.DataFrame({"a": ids.sort()}).with_columns(prev=pl.col("a").shift(1))
    gaps = frame.filter(pl.col("a") - pl.col("prev") > 1).select(start=pl.col("prev") + 1, end=pl.col("a") - 1)
    return list(gaps.iter_rows())


class TradeStore:
    """Reads and writes aggTrades under `paths.trades`. Safe for one writer and any number of readers."""

    def __init__(self, paths: DataPaths) -> None:
        self.paths = paths

    def write_part(self, symbol: str, df: pl.DataFrame) -> list[Path]:
        """Store trades as new part files, one per UTC hour touched; never rewrites an existing file."""
        symbol = _check_symbol(symbol)
        df = conform(df)
        if df.is_empty():
            return []
        df = df.unique("agg_trade_id", keep="first").sort("agg_trade_id")
        hour = pl.col("transact_time") - pl.col("transact_time") % HOUR_MS
        written: list[Path] = []
        for (hour_ms,), chunk in df.with_columns(_hour=hour).partition_by("_hour", as_dict=True).items():
            chunk = chunk.drop("_hour")
            ids = chunk["agg_trade_id"]  # sorted: the first and last ids are the part's range
            name = f"{int(ids[0])}-{int(ids[-1])}-{secrets.token_hex(4)}.parquet"
            path = self.paths.trade_parts_dir(symbol, int(hour_ms)) / name
            data = _to_parquet_bytes(chunk)
            for attempt in range(_READ_RETRIES):
                try:
                    atomic_write_bytes(path, data)
                    break
                except FileNotFoundError:
                    if attempt == _READ_RETRIES - 1:
                        raise
            written.append(path)
        return written

    def compact_hour(self, symbol: str, hour_ms: int) -> Path | None:
        """Merge the hour's parts into its hour file (deduplicated, sorted), then delete those parts.

        Idempotent: with no parts it changes nothing. Returns the hour file, or None when the hour holds no data.
        """
        symbol = _check_symbol(symbol)
        if hour_ms % HOUR_MS:
            raise TradeStoreError(f"{hour_ms} is not on an hour boundary")
        with self._compaction_lock(symbol):
            return self._compact_hour_locked(symbol, hour_ms)

    def merge_into_hours(self, symbol: str, df: pl.DataFrame) -> list[Path]:
        """Store trades straight into their hours' files, merged with what each hour holds (its file and parts).

        For hours nobody else writes any more (a history import of closed hours): one file write per hour instead of
        a part, its read back and the hour file (`write_part` then `compact_hour`), with the same crash safety (the
        hour file is replaced by a superset before the parts it merged are deleted). Returns the hour files.
        """
        symbol = _check_symbol(symbol)
        df = conform(df)
        if df.is_empty():
            return []
        hour = pl.col("transact_time") - pl.col("transact_time") % HOUR_MS
        # one check for the whole frame: each hour's rows are a subsequence, in id order when the frame is
        in_order = _strictly_increasing(df["agg_trade_id"])
        written: list[Path] = []
        with self._compaction_lock(symbol):
            hours = df.with_columns(_hour=hour).partition_by("_hour", as_dict=True, include_key=False)
            for (hour_ms,), chunk in hours.items():
                path = self._compact_hour_locked(symbol, int(hour_ms), chunk, fresh_in_order=in_order)
                written.extend([path] if path is not None else [])
        return written

    @contextmanager
    def _compaction_lock(self, symbol: str) -> Iterator[None]:
        """One compaction of a symbol at a time across processes (collector and backfill): two overlapping merges
        could otherwise each delete parts the other's hour file does not hold."""
        lock_path = self.paths.symbol_trades(symbol) / ".compact.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _compact_hour_locked(
        self, symbol: str, hour_ms: int, fresh: pl.DataFrame | None = None, *, fresh_in_order: bool = False
    ) -> Path | None:
        """Merge the hour's parts, its file and `fresh` (conformed trades of the hour; `fresh_in_order` when their
        ids are known to be strictly increasing) into the hour file."""
        hour_file = self.paths.trade_hour_file(symbol, hour_ms)
        parts_dir = self.paths.trade_parts_dir(symbol, hour_ms)
        parts = _visible_parquet(parts_dir)
        if not parts and fresh is None:
            self._tidy_parts_dir(parts_dir)
            return hour_file if hour_file.exists() else None
        sources = [*parts, hour_file] if hour_file.exists() else parts
        stored = [pl.scan_parquet(sources, schema=TRADE_SCHEMA)] if sources else []
        if fresh is not None and not stored and (fresh_in_order or _strictly_increasing(fresh["agg_trade_id"])):
            merged = fresh  # an hour new to the store, in id order already (a parsed bulk file): nothing to merge
        else:
            frames = [*stored, *([fresh.lazy()] if fresh is not None else [])]
            merged = pl.concat(frames).unique("agg_trade_id", keep="first").sort("agg_trade_id").collect()
            # `fresh` is the hour's by construction; what was stored is checked before it is rewritten
            outside = merged.filter(~pl.col("transact_time").is_between(hour_ms, hour_ms + HOUR_MS, closed="left"))
            if outside.height:
                raise TradeStoreError(f"{symbol} hour {hour_ms}: {outside.height} stored trades lie outside the hour")
        atomic_write_bytes(hour_file, _to_parquet_bytes(merged))
        for part in parts:
            part.unlink(missing_ok=True)
        self._tidy_parts_dir(parts_dir)
        return hour_file

    @staticmethod
    def _tidy_parts_dir(parts_dir: Path) -> None:
        """Remove temporaries left by a crashed writer long ago, and the directory once empty."""
        try:
            entries = list(parts_dir.iterdir())
        except FileNotFoundError:
            return
        cutoff = time.time() - _STALE_TMP_SECONDS
        for entry in entries:
            if entry.name.endswith(".tmp") and entry.stat().st_mtime < cutoff:
                entry.unlink(missing_ok=True)
        try:
            parts_dir.rmdir()
            parts_dir.parent.rmdir()
        except OSError:
            pass

    def hours(self, symbol: str) -> list[int]:
        """UTC hour starts (ms) holding data for `symbol`, as hour files or parts."""
        base = self.paths.symbol_trades(_check_symbol(symbol))
        found: set[int] = set()
        # Parts first, hour files second: a compaction writes the hour file before it deletes the parts, so an hour
        # whose parts vanish between the two listings is still seen as an hour file (the other order lost it).
        for tag in self._part_hour_tags(base):
            hour = _parse_hour_tag(tag)
            if hour is not None and _visible_parquet(base / "parts" / tag):
                found.add(hour)
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return sorted(found)
        for name in names:
            if name.endswith(".parquet") and not name.startswith("."):
                hour = _parse_hour_tag(name.removesuffix(".parquet"))
                if hour is not None:
                    found.add(hour)
        return sorted(found)

    @staticmethod
    def _part_hour_tags(base: Path) -> list[str]:
        try:
            return os.listdir(base / "parts")
        except FileNotFoundError:
            return []

    def symbols(self) -> list[str]:
        """Symbols with at least one stored trade file."""
        return list(self.hours_by_symbol())

    def hours_by_symbol(self) -> dict[str, list[int]]:
        """`hours` of every symbol with at least one stored trade file, by symbol in name order: one listing each."""
        try:
            names = os.listdir(self.paths.trades)
        except FileNotFoundError:
            return {}
        listed = {n: self.hours(n) for n in sorted(names) if _SYMBOL_RE.match(n)}
        return {symbol: hours for symbol, hours in listed.items() if hours}

    def scan(self, symbol: str, start_ms: int, end_ms: int) -> pl.LazyFrame:
        """Trades with transact_time in [start_ms, end_ms), deduplicated and sorted by agg_trade_id."""
        symbol = _check_symbol(symbol)
        if end_ms < start_ms:
            raise TradeStoreError(f"scan range is reversed: start {start_ms} > end {end_ms}")
        in_range = pl.col("transact_time").is_between(start_ms, end_ms, closed="left")
        hours = [h for h in self.hours(symbol) if h + HOUR_MS > start_ms and h < end_ms]
        hour_files = [self.paths.trade_hour_file(symbol, h) for h in hours]
        parts_frame = self._read_parts(symbol, hours, in_range)
        existing = [f for f in hour_files if f.exists()]
        hour_scan = pl.scan_parquet(existing, schema=TRADE_SCHEMA).filter(in_range) if existing else None
        if hour_scan is not None and parts_frame.is_empty():
            # Each hour file holds one hour, deduplicated when it was written: nothing to drop (skipping the unique
            # halves the cost of reading a day of trades).
            return hour_scan.sort("agg_trade_id")
        frames = [parts_frame.lazy()] if hour_scan is None else [parts_frame.lazy(), hour_scan]
        return pl.concat(frames, how="vertical").unique("agg_trade_id", keep="first").sort("agg_trade_id")

    def _read_parts(self, symbol: str, hours: Iterable[int], predicate: pl.Expr) -> pl.DataFrame:
        """Eagerly read the parts of `hours`; a part deleted by a concurrent compaction is already in its hour file.
        The hours' part directories come from one listing of parts/ (most hours have none)."""
        wanted = set(hours)
        base = self.paths.symbol_trades(symbol) / "parts"
        for _ in range(_READ_RETRIES):
            dirs = [base / tag for tag in self._part_hour_tags(base.parent) if _parse_hour_tag(tag) in wanted]
            parts = [p for d in dirs for p in _visible_parquet(d)]
            if not parts:
                return pl.DataFrame(schema=TRADE_SCHEMA)
            try:
                return pl.scan_parquet(parts, schema=TRADE_SCHEMA).filter(predicate).collect()
            except FileNotFoundError:
                continue
        raise OSError(f"{symbol}: parts kept vanishing while reading; is a compaction looping?")

    def scan_many(self, symbols: Iterable[str], start_ms: int, end_ms: int) -> pl.LazyFrame:
        """`scan` of several symbols stacked, with a `symbol` column first."""
        frames = [
            self.scan(s, start_ms, end_ms).select(pl.lit(_check_symbol(s)).alias("symbol"), *_COLUMNS) for s in symbols
        ]
        if not frames:
            return pl.LazyFrame(schema={"symbol": pl.String(), **TRADE_SCHEMA})
        return pl.concat(frames, how="vertical")

    def last_id(self, symbol: str) -> int | None:
        """Highest stored agg_trade_id, from part file names and the newest hour file's Parquet statistics."""
        symbol = _check_symbol(symbol)
        hours = self.hours(symbol)
        if not hours:
            return None
        best: int | None = None
        base = self.paths.symbol_trades(symbol)
        for tag in self._part_hour_tags(base):
            for part in _visible_parquet(base / "parts" / tag):
                m = _PART_RE.match(part.name)
                if m and (best is None or int(m.group(2)) > best):
                    best = int(m.group(2))
        for hour in reversed(hours):
            hour_max = self._hour_file_max_id(self.paths.trade_hour_file(symbol, hour))
            if hour_max is not None:
                return hour_max if best is None else max(best, hour_max)
        return best

    @staticmethod
    def _hour_file_max_id(path: Path) -> int | None:
        try:
            meta = pq.read_metadata(path)
        except FileNotFoundError:
            return None
        col = meta.schema.to_arrow_schema().get_field_index("agg_trade_id")
        maxima = []
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(col).statistics
            if stats is None or not stats.has_min_max or stats.max is None:
                # Polars types a column's max as any Python literal: an Int64 column's is an int (None when empty).
                return pl.read_parquet(path, columns=["agg_trade_id"])["agg_trade_id"].max()  # type: ignore[return-value]
            maxima.append(int(stats.max))
        return max(maxima) if maxima else None

    def last_trade(self, symbol: str) -> dict[str, Any] | None:
        """The stored trade with the highest agg_trade_id, as a column -> value dict (Decimal prices)."""
        symbol = _check_symbol(symbol)
        hours = self.hours(symbol)
        for hour in reversed(hours):
            df = self.scan(symbol, hour, hour + HOUR_MS).tail(1).collect()
            if df.height:
                return df.row(0, named=True)
        return None

    def id_gaps(self, symbol: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Inclusive ranges of agg_trade_ids missing between the first and last stored trade of [start, end)."""
        ids = self.scan(symbol, start_ms, end_ms).select("agg_trade_id").collect()["agg_trade_id"]
        return id_gaps_of(ids)
