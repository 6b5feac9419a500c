"""History of aggTrades into the trade store: `lsq import-trades` (local public-data files) and `lsq backfill-trades`
(from the configured exchange: complete past UTC days from its public-data files, the rest from REST by id).

Both are idempotent and resumable: trades already stored are not written again (anti-join on agg_trade_id before
writing; readers deduplicate anyway). A bulk day stored whole leaves a small marker under data/history/, so a rerun
skips it without downloading while the store still holds exactly the marker's ids. The REST part restarts from what
the store holds (before its first id, the holes, after its last id), so an interrupted backfill fetches only what is
missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import polars as pl
from tqdm import tqdm

from collectors.bulk import BulkFileError, download_daily, parse_file_name, read_agg_trades_file
from collectors.rest_backfill import (
    RestFetchError,
    RestSource,
    Until,
    fetch_agg_trades_from_id,
    first_id_at_or_after,
)
from lsq.config import Settings, load_config
from lsq.paths import DataPaths, atomic_write_text
from lsq.symbols import to_exchange
from lsq.timelabels import DAY_MS, HOUR_MS, format_day, from_datetime, now_ms
from lsq.tradestore import TradeStore, TradeStoreError, id_gaps_of

log = logging.getLogger(__name__)

COMPACT_LAG_MS = 2 * HOUR_MS  # hours closed longer ago than this are compacted; younger ones belong to the collector
PUBLISH_LAG_MS = 2 * DAY_MS  # a day's public-data file may appear this long after the day; older 404s mean no trades
BULK_CONCURRENCY = 4  # public-data downloads in flight at once
FLUSH_ROWS = 200_000  # REST rows buffered before a write: what an interruption can lose at most


# -- storing ------------------------------------------------------------------------------------------------------


def store_trades(store: TradeStore, symbol: str, trades: pl.DataFrame) -> int:
    """Write the trades not stored yet (by agg_trade_id) and compact the closed hours touched; returns rows written."""
    if trades.is_empty():
        return 0
    # Polars types min()/max() as any Python literal; transact_time is Int64 and the frame is not empty.
    lo, hi = int(trades["transact_time"].min()), int(trades["transact_time"].max())  # type: ignore[arg-type]
    stored = store.scan(symbol, lo, hi + 1).select("agg_trade_id").collect()
    fresh = trades if stored.is_empty() else trades.join(stored, on="agg_trade_id", how="anti")
    if fresh.is_empty():
        return 0
    # Hours closed over COMPACT_LAG_MS ago go straight into their hour files; the recent ones belong to the
    # collector, which compacts them: they are stored as parts.
    closed_before = now_ms() - COMPACT_LAG_MS
    if hi - hi % HOUR_MS + HOUR_MS <= closed_before:  # every hour closed (a bulk day): no split to copy
        store.merge_into_hours(symbol, fresh)
        return fresh.height
    closed = pl.col("transact_time") - pl.col("transact_time") % HOUR_MS + HOUR_MS <= closed_before
    store.merge_into_hours(symbol, fresh.filter(closed))
    store.write_part(symbol, fresh.filter(~closed))
    return fresh.height


def _day_marker(paths: DataPaths, symbol: str, day_ms: int) -> Path:
    return paths.history_day_marker(symbol, format_day(day_ms))


def day_is_stored(store: TradeStore, symbol: str, day_ms: int) -> bool:
    """True when a bulk day was stored whole and the store still holds exactly its ids (a cheap id-column check)."""
    try:
        marker = json.loads(_day_marker(store.paths, symbol, day_ms).read_text())
    except (OSError, ValueError):
        return False
    ids = store.scan(symbol, day_ms, day_ms + DAY_MS).select("agg_trade_id").collect()["agg_trade_id"]
    return (ids.len(), ids.min(), ids.max()) == (marker.get("rows"), marker.get("first_id"), marker.get("last_id"))


# -- import -------------------------------------------------------------------------------------------------------


@dataclass
class FileResult:
    path: Path
    symbol: str | None = None
    rows: int = 0
    written: int = 0
    error: str | None = None


def import_file(store: TradeStore, path: Path, symbol: str | None = None) -> FileResult:
    """Parse a whole public-data file (nothing is written if any row is bad), then store its new trades."""
    result = FileResult(path)
    name = parse_file_name(path.name)
    try:
        chosen = to_exchange(symbol) if symbol else (name.symbol if name else None)
        if chosen is None:
            raise BulkFileError(f"{path}: cannot tell the symbol from the file name; pass --symbol")
        result.symbol = chosen
        period = (name.start_ms, name.end_ms) if name else None
        trades = read_agg_trades_file(path, period)
        result.rows = trades.height
        result.written = store_trades(store, chosen, trades)
    except (BulkFileError, TradeStoreError, ValueError) as exc:
        result.error = str(exc)
    return result


def import_files(store: TradeStore, paths: Sequence[Path], symbol: str | None = None) -> list[FileResult]:
    results = []
    with tqdm(total=len(paths), unit="file", file=sys.stderr, desc="import-trades", disable=None) as bar:
        for path in paths:
            bar.set_postfix_str(path.name)
            result = import_file(store, path, symbol)
            results.append(result)
            bar.update(1)
    return results


# -- backfill -----------------------------------------------------------------------------------------------------


@dataclass
class SymbolBackfill:
    symbol: str
    bulk_days: list[str] = field(default_factory=list)
    skipped_days: list[str] = field(default_factory=list)
    no_file_days: list[str] = field(default_factory=list)
    bulk_rows: int = 0
    rest_rows: int = 0
    written: int = 0


class _Writer:
    """Buffers REST batches and writes them to the store every FLUSH_ROWS rows (and at the end)."""

    def __init__(self, store: TradeStore, symbol: str) -> None:
        self.store, self.symbol = store, symbol
        self.frames: list[pl.DataFrame] = []
        self.rows = 0
        self.written = 0

    def add(self, batch: pl.DataFrame) -> None:
        self.frames.append(batch)
        self.rows += batch.height
        if sum(f.height for f in self.frames) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.frames:
            self.written += store_trades(self.store, self.symbol, pl.concat(self.frames))
            self.frames = []


async def _rest_fill(source: RestSource, store: TradeStore, symbol: str, lo: int, hi: int, writer: _Writer) -> None:
    """Fetch every trade of [lo, hi) the store lacks: before its first stored trade, the holes, after its last."""
    stored = store.scan(symbol, lo, hi).select("agg_trade_id", "transact_time").collect()
    plan: list[tuple[int, Until]] = []
    if stored.is_empty():
        first = await first_id_at_or_after(source, symbol, lo, hi)
        if first is not None:
            plan.append((first, Until(end_ms=hi)))
    else:
        first_stored = int(stored["agg_trade_id"][0])
        first = await first_id_at_or_after(source, symbol, lo, int(stored["transact_time"][0]) + 1)
        if first is not None and first < first_stored:
            plan.append((first, Until(last_id=first_stored - 1)))
        plan += [(a, Until(last_id=b)) for a, b in id_gaps_of(stored["agg_trade_id"])]
        plan.append((int(stored["agg_trade_id"][-1]) + 1, Until(end_ms=hi)))
    for from_id, until in plan:
        await fetch_agg_trades_from_id(source, symbol, from_id, until, writer.add)
        writer.flush()


async def _bulk_day(
    source: RestSource,
    data_url: str,
    store: TradeStore,
    symbol: str,
    day: int,
    lo: int,
    hi: int,
    report: SymbolBackfill,
) -> bool:
    """Store [lo, hi) of a complete past day from its bulk file; False when the site has no file for it."""
    trades = await download_daily(source.session, data_url, symbol, day)
    if trades is None:
        return False
    if (lo, hi) != (day, day + DAY_MS):  # a whole day's file holds only the day (parse_bytes checks the period)
        trades = trades.filter(pl.col("transact_time").is_between(lo, hi, closed="left"))
    writer = _Writer(store, symbol)
    for a, b in id_gaps_of(trades["agg_trade_id"]):  # a file with holes: fetch them by id
        log.warning("%s %s: bulk file lacks ids %d..%d, fetching them by REST", symbol, format_day(day), a, b)
        await fetch_agg_trades_from_id(source, symbol, a, Until(last_id=b), writer.add)
    writer.flush()
    written = await asyncio.to_thread(store_trades, store, symbol, trades)
    report.bulk_rows += trades.height
    report.rest_rows += writer.rows
    report.written += writer.written + written
    report.bulk_days.append(format_day(day))
    if lo == day and hi == day + DAY_MS:
        ids = trades["agg_trade_id"]
        marker = {"rows": trades.height, "first_id": ids.min(), "last_id": ids.max(), "source": "bulk"}
        atomic_write_text(_day_marker(store.paths, symbol, day), json.dumps(marker))
    return True


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


async def backfill(settings: Settings, symbols: Sequence[str], start_ms: int, end_ms: int) -> list[SymbolBackfill]:
    """Fill [start_ms, end_ms) of every symbol from the configured exchange (see the module docstring).

    Complete past days come from the public-data files, BULK_CONCURRENCY downloads at a time (the files are not
    weight-limited); a day whose file is missing although recent, and today, come from REST afterwards, one symbol
    after another since they share one weight budget.
    """
    endpoints = settings.endpoints()
    store = TradeStore(DataPaths(settings.data_dir))
    timeout = aiohttp.ClientTimeout(total=300, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        source = RestSource(session, endpoints.rest_url)
        await source.configure()
        server_now = await source.server_time_ms()
        end_ms = min(end_ms, server_now)
        today = server_now - server_now % DAY_MS
        reports = {s: SymbolBackfill(s) for s in symbols}
        rest: dict[str, list[tuple[int, int]]] = {s: [] for s in symbols}
        bulk: list[tuple[str, int, int, int]] = []
        # day by day, all symbols of a day before the next: the downloads in flight are other symbols', so their
        # writes do not queue for one symbol's compaction lock
        for day in range(start_ms - start_ms % DAY_MS, end_ms, DAY_MS):
            for symbol in symbols:
                lo, hi = max(start_ms, day), min(end_ms, day + DAY_MS)
                if day + DAY_MS > today:
                    rest[symbol].append((lo, hi))
                elif lo == day and hi == day + DAY_MS and day_is_stored(store, symbol, day):
                    reports[symbol].skipped_days.append(format_day(day))
                else:
                    bulk.append((symbol, day, lo, hi))
        with tqdm(
            total=len(bulk) + len(symbols), unit="step", file=sys.stderr, desc="backfill-trades", disable=None
        ) as bar:
            limit = asyncio.Semaphore(BULK_CONCURRENCY)

            async def from_file(symbol: str, day: int, lo: int, hi: int) -> None:
                async with limit:
                    found = await _bulk_day(source, endpoints.data_url, store, symbol, day, lo, hi, reports[symbol])
                if not found and day + DAY_MS + PUBLISH_LAG_MS > server_now:
                    rest[symbol].append((lo, hi))  # probably not published yet: take it from REST
                elif not found:
                    reports[symbol].no_file_days.append(format_day(day))  # the site has no trades that day
                bar.set_postfix_str(f"{symbol} {format_day(day)}")
                bar.update(1)

            try:
                async with asyncio.TaskGroup() as group:
                    for item in bulk:
                        group.create_task(from_file(*item))
            except ExceptionGroup as errors:
                raise errors.exceptions[0] from None
            for symbol in symbols:
                bar.set_postfix_str(f"{symbol} REST")
                writer = _Writer(store, symbol)
                for lo, hi in _merge(rest[symbol]):
                    await _rest_fill(source, store, symbol, lo, hi, writer)
                reports[symbol].rest_rows += writer.rows
                reports[symbol].written += writer.written
                bar.update(1)
    for report in reports.values():
        report.bulk_days.sort()
        report.no_file_days.sort()
    return [reports[s] for s in symbols]


# -- command line -------------------------------------------------------------------------------------------------


def parse_utc(text: str) -> int:
    """'YYYY-MM-DD' or 'YYYY-MM-DDTHH:MM' (UTC) -> ms."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M"):
        try:
            return from_datetime(datetime.strptime(text, fmt).replace(tzinfo=UTC))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"bad time {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")


def _symbols(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one symbol, e.g. BTCUSDT,ETHUSDT")
    try:
        return list(dict.fromkeys(to_exchange(s) for s in names))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_import(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    store = TradeStore(DataPaths(settings.data_dir))
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        print(f"lsq import-trades: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    results = import_files(store, args.paths, args.symbol)
    for r in results:
        if r.error:
            print(f"FAILED {r.path}: {r.error}", file=sys.stderr)
        else:
            print(f"{r.path.name}: {r.symbol} {r.rows} trades, {r.written} new")
    return 1 if any(r.error for r in results) else 0


def run_backfill(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    if args.end <= args.start:
        print(f"lsq backfill-trades: --end must be after --start ({args.end} <= {args.start})", file=sys.stderr)
        return 2
    try:
        reports = asyncio.run(backfill(settings, args.symbols, args.start, args.end))
    except (BulkFileError, RestFetchError, TradeStoreError, aiohttp.ClientError) as exc:
        print(f"lsq backfill-trades: {exc}", file=sys.stderr)
        return 1
    for r in reports:
        print(
            f"{r.symbol}: {len(r.bulk_days)} days from bulk files ({r.bulk_rows} trades), "
            f"{len(r.skipped_days)} days already stored, {r.rest_rows} trades by REST, {r.written} new trades stored"
        )
        if r.no_file_days:
            print(f"{r.symbol}: no public-data file (no trades) for {', '.join(r.no_file_days)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-trades", help="import Binance public-data aggTrades files (.csv or .zip) into the trade store"
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="daily or monthly aggTrades files")
    p.add_argument("--symbol", help="symbol of the files (default: from each file name)")
    p.set_defaults(func=run_import)

    b = subparsers.add_parser("backfill-trades", help="fill a time range of aggTrades from the configured exchange")
    b.add_argument("--symbols", type=_symbols, required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    b.add_argument("--start", type=parse_utc, required=True, help="UTC start, YYYY-MM-DD or YYYY-MM-DDTHH:MM")
    b.add_argument("--end", type=parse_utc, required=True, help="UTC end (exclusive); times after now stop at now")
    b.set_defaults(func=run_backfill)
