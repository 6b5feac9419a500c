"""The aggTrade collector: a long-running asyncio daemon that keeps an exact copy of the exchange's aggTrades.

Data flow. Connections (collectors.connection) hand frames to `Collector.on_frame`, which parses them and appends
accepted trades to per-symbol columnar buffers; every `flush_interval_s` (and at once when only a flush stands
between a window and its marker) the buffers go to the TradeStore as parts, in a worker thread. Mark-price arrays
double as the server-time heartbeat of their connection.

Exactness. aggTrade ids are contiguous per symbol, so every symbol keeps `last_id` and a list of open id gaps:
an id <= last_id outside any gap is a duplicate and dropped; a jump opens a gap. Gaps are repaired through REST
(`GET /fapi/v1/aggTrades?fromId=`), paced by the request weight, while the stream keeps flowing. Whenever a
connection (re)subscribes, what happened while it was away is unknown until the symbol's *tail* is verified: the
first streamed trade after subscribing does it (a jump opens a gap as usual); for quiet symbols one
`GET /fapi/v1/ticker/24hr` for all symbols tells whether the exchange's last trade id (`lastId`, a trade id, not an
aggTrade id) is beyond the `l` of our last aggTrade, and only then the tail is fetched by REST. A fresh symbol is
*anchored* at its first trade of the window it joins. On start, each symbol resumes from the store's last trade, and
holes inside the recent store (a crash before repaired trades were flushed) are reopened as gaps, so a restart
converges to the exchange's exact ids.

REST goes through collectors.rest_backfill (one paced `RestSource` for the whole process; contiguity-verified
`fetch_agg_trades_from_id` for every id range), a few symbols at a time, while the stream keeps flowing.

Sealing (collectors.sealing) turns this evidence into window markers, strictly in order. Right after a window ends,
symbols still waiting for evidence (quiet ones) are confirmed by one ticker call instead of waiting for the heartbeat
lag, which puts the marker a few hundred milliseconds after the window end on the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import polars as pl

from collectors.connection import MARK_PRICE_STREAM, MAX_STREAMS, StreamConnection
from collectors.gaps import batch_trades, first_trades_since, last_trade_ids, latest_trade, trading_usdt_perpetuals
from collectors.marks import MarkStore, marks_frame
from collectors.parse import AggTrade, MalformedFrame, MarkPrice, Response, parse_frame
from collectors.rest_backfill import RestFetchError, RestSource, Until, fetch_agg_trades_from_id
from collectors.sealing import NEVER, SymbolSeal, marker_payload, sealed_through, ticker_confirms, windows_to_seal
from collectors.status import read_status, write_status
from lsq.config import Settings
from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import DAY_MS, HOUR_MS, WINDOW_MS, format_day, now_ms, partition_key, window_start
from lsq.tradestore import TradeStore

log = logging.getLogger(__name__)

_REPAIR_CONCURRENCY = 4
_REST_TIMEOUT_S = 30.0
_FOREVER = 1 << 62
_PROBE_AFTER_MS = 100
_PROBE_SPACING_S = 0.5
_PROBES_PER_WINDOW = 4
_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class CollectorOptions:
    """Operational knobs; the defaults suit live Binance."""

    max_connection_age_s: float = 23 * 3600.0
    silence_s: float = 10.0
    streams_per_connection: int = MAX_STREAMS
    flush_interval_s: float = 2.0
    status_interval_s: float = 2.0
    universe_refresh_s: float = 60.0
    max_catchup_ms: int = DAY_MS
    backoff_cap_s: float = 30.0
    # Parts are merged into their hour file every minute, half a minute off the window boundaries: a window run then
    # reads one hour file and ~15 small parts per symbol instead of up to an hour of 2-second flushes, and the merge
    # never competes with the run that starts right after a marker.
    compact_every_s: float = 60.0

    def __post_init__(self) -> None:
        if not 2 <= self.streams_per_connection <= MAX_STREAMS:
            raise ValueError(
                f"streams_per_connection must be within 2..{MAX_STREAMS}, got {self.streams_per_connection}"
            )
        timings = (self.max_connection_age_s, self.silence_s, self.flush_interval_s, self.status_interval_s)
        if min(*timings, self.compact_every_s) <= 0:
            raise ValueError(f"collector timings must be positive: {self}")
        if self.flush_interval_s > 2.0:
            raise ValueError(f"flush_interval_s must be at most 2 s, got {self.flush_interval_s}")


class SymbolBook:
    """Everything the collector knows about one symbol: id bookkeeping, unflushed trades, sealing evidence."""

    def __init__(self, symbol: str, active_from: int) -> None:
        self.symbol = symbol
        self.conn: StreamConnection | None = None
        self.anchored = False
        self.verified = False
        self.epoch = 0
        self.last_id: int | None = None
        self.last_l: int | None = None
        self.tail = False
        self.last_time = NEVER
        self.gaps: list[list[int]] = []
        self.seal = SymbolSeal(active_from)
        self.counted_from = active_from
        self.counts: dict[int, int] = {}
        self.preanchor: list[AggTrade] = []
        self.inflight_min: int | None = None
        self._reset_buffer()

    def _reset_buffer(self) -> None:
        self.ids: list[int] = []
        self.prices: list[str] = []
        self.qtys: list[str] = []
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.times: list[int] = []
        self.makers: list[bool] = []
        self.buf_min: int | None = None

    def add(self, t: AggTrade) -> None:
        self.ids.append(t.agg_trade_id)
        self.prices.append(t.price)
        self.qtys.append(t.quantity)
        self.firsts.append(t.first_trade_id)
        self.lasts.append(t.last_trade_id)
        tt = t.transact_time
        self.times.append(tt)
        self.makers.append(t.is_buyer_maker)
        if self.buf_min is None or tt < self.buf_min:
            self.buf_min = tt
        if tt > self.last_time:
            self.last_time = tt
        w = tt - tt % WINDOW_MS
        self.counts[w] = self.counts.get(w, 0) + 1

    def take(self) -> dict[str, list[Any]] | None:
        """The unflushed trades as columns (now in flight), or None."""
        if not self.ids:
            return None
        cols = {
            "agg_trade_id": self.ids,
            "price": self.prices,
            "quantity": self.qtys,
            "first_trade_id": self.firsts,
            "last_trade_id": self.lasts,
            "transact_time": self.times,
            "is_buyer_maker": self.makers,
        }
        low = self.buf_min
        assert low is not None
        self.inflight_min = low if self.inflight_min is None else min(self.inflight_min, low)
        self._reset_buffer()
        return cols

    def give_back(self, cols: dict[str, list[Any]]) -> None:
        """Return columns whose write failed, to be written by the next flush."""
        for name, values in (
            ("ids", cols["agg_trade_id"]),
            ("prices", cols["price"]),
            ("qtys", cols["quantity"]),
            ("firsts", cols["first_trade_id"]),
            ("lasts", cols["last_trade_id"]),
            ("times", cols["transact_time"]),
            ("makers", cols["is_buyer_maker"]),
        ):
            getattr(self, name).extend(values)
        low = min(cols["transact_time"])
        self.buf_min = low if self.buf_min is None else min(self.buf_min, low)

    def pending_min(self) -> int | None:
        values = [v for v in (self.buf_min, self.inflight_min) if v is not None]
        return min(values) if values else None

    def open_gap(self, lo: int, hi: int) -> None:
        if lo <= hi:
            self.gaps.append([lo, hi])
            self.gaps.sort()

    def fill(self, a: int) -> bool:
        """Remove id `a` from the open gaps; False if it was in none (a duplicate)."""
        for i, (lo, hi) in enumerate(self.gaps):
            if lo <= a <= hi:
                if lo == hi:
                    del self.gaps[i]
                elif a == lo:
                    self.gaps[i][0] = a + 1
                elif a == hi:
                    self.gaps[i][1] = a - 1
                else:
                    self.gaps[i][1] = a - 1
                    self.gaps.insert(i + 1, [a + 1, hi])
                return True
        return False


class Collector:
    """The daemon. `await run(stop)` until `stop` is set; thread-safe reading of its store at any time."""

    def __init__(self, settings: Settings, options: CollectorOptions | None = None) -> None:
        self.settings = settings
        self.options = options or CollectorOptions()
        self.endpoints = settings.endpoints()
        self.paths = DataPaths(settings.data_dir)
        self.store = TradeStore(self.paths)
        self.marks = MarkStore(self.paths)
        self.lag_ms = int(settings.data.seal_lag_seconds * 1000)
        self.source: RestSource | None = None
        self.books: dict[str, SymbolBook] = {}
        self.connections: list[StreamConnection] = []
        self._conn_tasks: list[asyncio.Task[None]] = []
        self._mark_rows: list[MarkPrice] = []
        self._last_mark_time = NEVER
        self._offset_ms = 0
        self._to_verify: dict[str, int] = {}
        self._repair_wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._parts: set[tuple[str, int]] = set()  # (symbol, hour) with parts written since their last merge
        self._compacted_at = 0
        self._compact_due: set[tuple[str, int]] = set()
        self._compact_task: asyncio.Future[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._probes: dict[int, int] = {}
        self._last_probe = 0.0
        self.next_window = 0
        self.started_at = 0
        self.stop_event: asyncio.Event | None = None
        # counters for the status file
        self.messages = 0
        self.stream_trades = 0
        self.malformed = 0
        self.ignored = 0
        self.duplicates = 0
        self.gaps_opened = 0
        self.gaps_repaired = 0
        self.rows_flushed = 0
        self.last_flush = 0
        self.last_sealed: dict[str, Any] | None = None
        self.universe_source = ""
        self.rejected: set[str] = set()
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._rate_mark = (time.monotonic(), 0)
        self.messages_per_s = 0.0

    # -- time -------------------------------------------------------------------------------------------------------

    def server_now(self) -> int:
        return time.time_ns() // 1_000_000 + self._offset_ms

    def _observe_server_time(self, event_ms: int) -> None:
        self._offset_ms = event_ms - time.time_ns() // 1_000_000

    def _log_limited(self, key: str, msg: str, *args: Any) -> None:
        """Warn at most once per 10 s per kind, with the count of what was suppressed."""
        now = time.monotonic()
        if now - self._last_log.get(key, 0.0) >= _LOG_EVERY_S:
            skipped = self._suppressed.pop(key, 0)
            log.warning(msg + (f" (+{skipped} similar suppressed)" if skipped else ""), *args)
            self._last_log[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1

    # -- frames (hot path) ------------------------------------------------------------------------------------------

    def on_frame(self, conn: StreamConnection, raw: str | bytes) -> None:
        """Handle one frame; nothing a frame contains may stop the daemon."""
        self.messages += 1
        try:
            self._dispatch(conn, parse_frame(raw))
        except MalformedFrame as exc:
            self.malformed += 1
            self._log_limited("malformed", "%s: malformed frame dropped: %s", conn.name, exc)
        except Exception as exc:
            self.malformed += 1
            self._log_limited("frame-error", "%s: frame %r could not be handled: %r", conn.name, raw[:200], exc)

    def _dispatch(self, conn: StreamConnection, item: AggTrade | list[MarkPrice] | Response) -> None:
        if type(item) is AggTrade:
            hb = conn.heartbeat_ms
            if hb is None or item.event_time > hb:
                conn.heartbeat_ms = item.event_time
            book = self.books.get(item.symbol)
            if book is None or book.conn is not conn:
                self.ignored += 1
                return
            self.stream_trades += 1
            self._ingest(book, item)
        elif type(item) is list:
            self._on_marks(conn, item)
        elif type(item) is Response:
            conn.resolve(item.request_id, item.error)

    def _ingest(self, book: SymbolBook, t: AggTrade) -> None:
        """A streamed trade: it also proves the stream is live for the symbol since it subscribed."""
        if not book.anchored:
            book.preanchor.append(t)
            return
        book.verified = True
        book.tail = False
        self._accept(book, t)

    def _accept(self, book: SymbolBook, t: AggTrade) -> None:
        a = t.agg_trade_id
        last = book.last_id
        if last is None or a > last:
            if last is not None and a > last + 1:
                book.open_gap(last + 1, a - 1)
                self.gaps_opened += 1
                self._repair_wake.set()
            book.last_id = a
            book.last_l = t.last_trade_id
            book.add(t)
        elif book.gaps and book.fill(a):
            book.add(t)
        else:
            self.duplicates += 1

    def _on_marks(self, conn: StreamConnection, marks: list[MarkPrice]) -> None:
        if not marks:
            return
        event = max(m.event_time for m in marks)
        if conn.heartbeat_ms is None or event > conn.heartbeat_ms:
            conn.heartbeat_ms = event
        self._observe_server_time(event)
        if event > self._last_mark_time:
            self._last_mark_time = event
            self._mark_rows.extend(marks)

    # -- connection events --------------------------------------------------------------------------------------------

    def on_subscribed(self, conn: StreamConnection, streams: list[str]) -> None:
        for stream in streams:
            if stream == MARK_PRICE_STREAM:
                continue
            book = self.books.get(stream.partition("@")[0].upper())
            if book is not None and book.conn is conn:
                book.verified = False
                book.epoch += 1
                self._to_verify[book.symbol] = book.epoch
        self._repair_wake.set()

    def on_down(self, conn: StreamConnection) -> None:
        for book in self.books.values():
            if book.conn is conn:
                book.verified = False
                book.epoch += 1
        conn.heartbeat_ms = None

    # -- universe ---------------------------------------------------------------------------------------------------

    @property
    def rest(self) -> RestSource:
        if self.source is None:
            raise RuntimeError("the collector has not started: no REST source yet")
        return self.source

    async def load_universe(self) -> list[str]:
        """The day's universe file if present, else every trading USDT perpetual from exchangeInfo.

        Symbols of the file that the exchange does not trade are refused (logged once), not collected.
        """
        trading = await trading_usdt_perpetuals(self.rest)
        path = self.paths.universe_file(format_day(self.server_now()), "v1")
        if not path.exists():
            self.universe_source = "exchangeInfo"
            return trading
        try:
            df = pl.read_csv(path, columns=["symbol"], schema_overrides={"symbol": pl.String()})
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ValueError(f"universe file {path} has no readable 'symbol' column: {exc}") from None
        listed = {s.strip().upper() for s in df["symbol"].drop_nulls().to_list() if s.strip()}
        refused = sorted(listed - set(trading) - self.rejected)
        if refused:
            log.error("universe %s lists symbols the exchange does not trade, not collected: %s", path, refused)
            self.rejected.update(refused)
        self.universe_source = str(path)
        return sorted(listed & set(trading))

    async def apply_universe(self, symbols: Iterable[str]) -> None:
        """Subscribe added symbols (resuming from the store), unsubscribe removed ones, without reconnecting."""
        wanted = set(symbols)
        removed = sorted(set(self.books) - wanted)
        added = sorted(wanted - set(self.books))
        if removed:
            log.info("universe: removing %d symbols %s", len(removed), removed[:10])
            for symbol in removed:
                self.books[symbol].seal.active_from = 1 << 62
            await self.flush()
            for symbol in removed:
                if not self.books[symbol].ids:  # a failed flush handed trades back: keep them for the next one
                    self.books.pop(symbol, None)
        if added:
            log.info("universe: adding %d symbols %s", len(added), added[:10])
            active_from = max(self.next_window, window_start(self.server_now())) if self.books else self.next_window
            prepared = await asyncio.to_thread(self._prepare_books, added, active_from)
            self.books.update(prepared)
        if removed or added:
            self._assign_connections()

    def _prepare_books(self, symbols: list[str], active_from: int) -> dict[str, SymbolBook]:
        """Books for new symbols: resume from the store when its data reaches close to `active_from`."""
        books = {}
        for symbol in symbols:
            book = SymbolBook(symbol, active_from)
            last = self.store.last_trade(symbol)
            if last is not None and last["transact_time"] >= active_from - HOUR_MS:
                book.anchored = True
                book.last_id = int(last["agg_trade_id"])
                book.last_l = int(last["last_trade_id"])
                book.last_time = int(last["transact_time"])
                book.counted_from = window_start(book.last_time) + WINDOW_MS
                since = min(active_from, window_start(book.last_time, HOUR_MS)) - HOUR_MS
                for lo, hi in self.store.id_gaps(symbol, since, book.last_time + 1):
                    book.open_gap(lo, hi)
                    self.gaps_opened += 1
            open_hour = window_start(self.server_now(), HOUR_MS)
            for hour in self.store.hours(symbol):
                if hour < open_hour and self.paths.trade_parts_dir(symbol, hour).is_dir():
                    self._compact_due.add((symbol, hour))
            books[symbol] = book
        return books

    def _assign_connections(self) -> None:
        capacity = self.options.streams_per_connection - 1
        by_conn: dict[int, set[str]] = {id(c): set() for c in self.connections}
        unassigned = []
        for book in self.books.values():
            if book.conn is not None and id(book.conn) in by_conn:
                by_conn[id(book.conn)].add(book.symbol)
            else:
                unassigned.append(book)
        for book in sorted(unassigned, key=lambda b: b.symbol):
            conn = next((c for c in self.connections if len(by_conn[id(c)]) < capacity), None)
            if conn is None:
                conn = StreamConnection(
                    f"conn-{len(self.connections) + 1}",
                    self.endpoints.ws_url,
                    self,
                    max_age_s=self.options.max_connection_age_s,
                    silence_s=self.options.silence_s,
                    backoff_cap_s=self.options.backoff_cap_s,
                )
                self.connections.append(conn)
                by_conn[id(conn)] = set()
                if self.stop_event is not None:
                    self._conn_tasks.append(asyncio.create_task(conn.run(self.stop_event), name=conn.name))
            by_conn[id(conn)].add(book.symbol)
            book.conn = conn
        for conn in self.connections:
            conn.set_streams({f"{s.lower()}@aggTrade" for s in by_conn[id(conn)]})

    async def _universe_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.universe_refresh_s)
            if stop.is_set():
                return
            try:
                await self.apply_universe(await self.load_universe())
            except (ValueError, RestFetchError, OSError) as exc:
                log.error("universe refresh failed, keeping the current one: %s", exc)

    # -- repair -------------------------------------------------------------------------------------------------------

    async def _repair_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._repair_wake.clear()
            try:
                if self._to_verify:
                    await self._verify()
                if any(b.gaps or (b.tail and b.anchored) for b in self.books.values()):
                    await self._repair_round()
                    continue
            except RestFetchError as exc:
                self._log_limited("rest", "REST repair failed, will retry: %s", exc)
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._repair_wake.wait(), 1.0)

    async def _verify(self) -> None:
        """Settle the tail of (re)subscribed symbols the stream has not spoken for yet."""
        batch, self._to_verify = self._to_verify, {}
        try:
            latest = await last_trade_ids(self.rest)
        except RestFetchError:
            self._to_verify = {**batch, **self._to_verify}
            raise
        pending = list(batch.items())
        for i, (symbol, epoch) in enumerate(pending):
            book = self.books.get(symbol)
            if book is None or book.epoch != epoch:
                continue
            if not book.anchored:
                try:
                    await self._anchor(book)
                except RestFetchError:
                    for later, later_epoch in pending[i:]:
                        self._to_verify.setdefault(later, later_epoch)
                    raise
                if book.epoch != epoch:
                    continue
            if book.verified or book.tail:
                continue
            exchange_last = latest.get(symbol)
            if exchange_last is None or (book.last_l is not None and exchange_last <= book.last_l):
                book.verified = True
            else:
                book.tail = True

    async def _anchor(self, book: SymbolBook) -> None:
        """Start a symbol with no usable history at its first trade at or after `active_from`.

        One request usually does it all: the first 1000 trades from the window start; more are fetched as a tail.
        """
        start = book.seal.active_from
        trades, complete = await first_trades_since(self.rest, book.symbol, start, self.server_now())
        if trades:
            book.last_id = trades[0].agg_trade_id - 1
            book.tail = not complete
        else:
            latest = await latest_trade(self.rest, book.symbol)
            if latest is not None and latest.transact_time >= start:
                book.last_id = latest.agg_trade_id - 1
                book.tail = True
            else:
                book.last_id = latest.agg_trade_id if latest else None
                book.last_l = latest.last_trade_id if latest else None
        book.counted_from = start
        book.anchored = True
        for t in trades:
            self._accept(book, t)
        pre, book.preanchor = book.preanchor, []
        for t in pre:
            self._ingest(book, t)

    async def _repair_round(self) -> None:
        """Repair every symbol with an open gap or an unverified tail, a few symbols at a time."""
        todo = [b for b in self.books.values() if b.gaps or (b.tail and b.anchored)]
        todo.sort(key=lambda b: b.gaps[0][0] if b.gaps else 1 << 62)
        limit = asyncio.Semaphore(_REPAIR_CONCURRENCY)

        async def repair(book: SymbolBook) -> None:
            async with limit:
                if self.books.get(book.symbol) is book:
                    await self._repair(book)

        results = await asyncio.gather(*(repair(b) for b in todo), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _repair(self, book: SymbolBook) -> None:
        def accept(batch: pl.DataFrame) -> None:
            if self.books.get(book.symbol) is book:
                for t in batch_trades(book.symbol, batch):
                    self._accept(book, t)

        if book.gaps:
            lo, hi = book.gaps[0]
            await fetch_agg_trades_from_id(self.rest, book.symbol, lo, Until(last_id=hi), accept)
            if not book.gaps:
                self.gaps_repaired += 1
        elif book.last_id is None:
            book.anchored = book.tail = False
            self._to_verify[book.symbol] = book.epoch
        elif book.tail:
            epoch = book.epoch
            await fetch_agg_trades_from_id(self.rest, book.symbol, book.last_id + 1, Until(end_ms=_FOREVER), accept)
            if book.epoch == epoch and book.tail:
                book.tail = False
                book.verified = True

    # -- flushing, sealing, compaction ---------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write every buffered trade and mark price to the store (in a worker thread)."""
        async with self._flush_lock:
            batches = [(book, cols) for book in list(self.books.values()) if (cols := book.take()) is not None]
            marks, self._mark_rows = self._mark_rows, []
            if not batches and not marks:
                return
            try:
                written = await asyncio.to_thread(self._write, [(b.symbol, c) for b, c in batches], marks)
            except Exception:
                log.exception("flush failed; the data stays in memory and is retried")
                for book, cols in batches:
                    book.give_back(cols)
                    book.inflight_min = None
                self._mark_rows = marks + self._mark_rows
                return
            for book, cols in batches:
                book.inflight_min = None
                self.rows_flushed += len(cols["agg_trade_id"])
            self._parts.update(written)
            self.last_flush = now_ms()

    def _write(self, batches: list[tuple[str, dict[str, list[Any]]]], marks: list[MarkPrice]) -> list[tuple[str, int]]:
        """One part per symbol and hour touched; returns the (symbol, hour) of each part written."""
        written = []
        for symbol, cols in batches:
            self.store.write_part(symbol, pl.DataFrame(cols))
            times = cols["transact_time"]
            first, last = window_start(min(times), HOUR_MS), window_start(max(times), HOUR_MS)
            written += [(symbol, hour) for hour in range(first, last + 1, HOUR_MS)]
        if marks:
            self.marks.write_part(marks_frame(marks))
        return written

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        last_flush = last_status = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
            for task in self._conn_tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            now = time.monotonic()
            blocked = self._update_seals()
            if blocked or now - last_flush >= self.options.flush_interval_s:
                await self.flush()
                last_flush = time.monotonic()
                self._update_seals()
            await self._seal_ready()
            self._maybe_probe()
            self._schedule_compaction(self.server_now())
            if self._compact_due and (self._compact_task is None or self._compact_task.done()):
                due, self._compact_due = self._compact_due, set()
                self._compact_task = asyncio.create_task(asyncio.to_thread(self._compact, due), name="compact")
            if now - last_status >= self.options.status_interval_s:
                await self.write_status()
                last_status = now

    def _schedule_compaction(self, server_ms: int) -> None:
        """Every `compact_every_s`, half a period off the window grid, each hour with new parts is due for a merge."""
        every = int(self.options.compact_every_s * 1000)
        slot = (server_ms - every // 2) // every
        if slot > self._compacted_at:
            self._compacted_at = slot
            self._compact_due |= self._parts
            self._parts = set()

    def _maybe_probe(self) -> None:
        """After a window ends, confirm quiet symbols with one ticker call instead of waiting for the heartbeat lag."""
        end = self.next_window + WINDOW_MS
        if self._probe_task is not None and not self._probe_task.done():
            return
        now = self.server_now()
        if now < end + _PROBE_AFTER_MS or self._probes.get(end, 0) >= _PROBES_PER_WINDOW:
            return
        if time.monotonic() - self._last_probe < _PROBE_SPACING_S:
            return
        waiting = [
            b
            for b in self.books.values()
            if b.seal.active_from <= self.next_window
            and b.seal.complete_before < end
            and b.anchored
            and not b.gaps
            and not b.tail
        ]
        if waiting:
            self._probes[end] = self._probes.get(end, 0) + 1
            self._last_probe = time.monotonic()
            self._probe_task = asyncio.create_task(self._probe([b.symbol for b in waiting]), name="probe")

    async def _probe(self, symbols: list[str]) -> None:
        asked_at = self.server_now()
        epochs = {s: self.books[s].epoch for s in symbols}
        try:
            latest = await last_trade_ids(self.rest)
        except RestFetchError as exc:
            self._log_limited("probe", "ticker probe failed: %s", exc)
            return
        for symbol, epoch in epochs.items():
            book = self.books.get(symbol)
            if book is None or book.epoch != epoch or book.gaps or book.tail or not book.anchored:
                continue
            if ticker_confirms(latest.get(symbol), book.last_l):
                book.seal.confirm(asked_at)

    def _update_seals(self) -> bool:
        """Refresh every symbol's evidence; True if the next window waits only for a flush."""
        end = self.next_window + WINDOW_MS
        blocked = False
        for book in self.books.values():
            conn = book.conn
            heartbeat = conn.heartbeat_ms if conn is not None and conn.up else None
            book.seal.update(
                last_time=book.last_time,
                heartbeat_ms=heartbeat,
                lag_ms=self.lag_ms,
                gaps_open=bool(book.gaps) or not book.anchored,
                verified=book.verified,
            )
            pending = book.pending_min()
            if pending is not None and pending < end <= book.seal.complete_before:
                blocked = True
        return blocked

    async def _seal_ready(self) -> None:
        sealed = {s: sealed_through(b.seal.complete_before, b.pending_min()) for s, b in self.books.items()}
        active = {s: b.seal.active_from for s, b in self.books.items()}
        for window, symbols in windows_to_seal(self.next_window, sealed, active, self.server_now(), self.lag_ms):
            await self._write_marker(window, symbols)
            self.next_window = window + WINDOW_MS
            self._probes.pop(self.next_window, None)

    async def _write_marker(self, window: int, symbols: list[str]) -> None:
        from_memory = 0
        from_store = []
        for symbol in symbols:
            book = self.books[symbol]
            if window >= book.counted_from:
                from_memory += book.counts.pop(window, 0)
            else:
                from_store.append(symbol)
        rows = from_memory
        if from_store:
            rows += await asyncio.to_thread(self._count_stored, from_store, window)
        body = marker_payload(window, symbols, rows, self.server_now())
        await asyncio.to_thread(atomic_write_text, self.paths.marker_file(window), json.dumps(body, indent=1))
        self.last_sealed = {k: body[k] for k in ("window_start", "partition_key", "rows", "sealed_at")}
        log.info("sealed %s: %d symbols, %d trades", body["partition_key"], len(symbols), rows)

    def _count_stored(self, symbols: list[str], window: int) -> int:
        return int(self.store.scan_many(symbols, window, window + WINDOW_MS).select(pl.len()).collect().item())

    def _compact(self, due: set[tuple[str, int]]) -> None:
        for symbol, hour in sorted(due):
            try:
                self.store.compact_hour(symbol, hour)
            except Exception:
                log.exception("compaction of %s hour %d failed; it is retried in a minute", symbol, hour)
                self._parts.add((symbol, hour))
        for hour in sorted({h for _, h in due if h + HOUR_MS <= self.next_window}):
            try:
                self.marks.compact_hour(hour)
            except Exception:
                log.exception("compaction of mark prices hour %d failed", hour)

    # -- status -------------------------------------------------------------------------------------------------------

    def status(self, running: bool = True) -> dict[str, Any]:
        now = time.monotonic()
        then, count = self._rate_mark
        if now - then >= 1.0:
            self.messages_per_s = (self.messages - count) / (now - then)
            self._rate_mark = (now, self.messages)
        return {
            "running": running,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": now_ms(),
            "connections": [
                {
                    "name": c.name,
                    "up": c.up,
                    "streams": len(c.live),
                    "reconnects": c.reconnects,
                    "recycled": c.recycled,
                    "rotations": c.rotations,
                }
                for c in self.connections
            ],
            "symbols": len(self.books),
            "universe_source": self.universe_source,
            "messages_per_s": round(self.messages_per_s, 1),
            "messages_total": self.messages,
            "stream_trades": self.stream_trades,
            "last_sealed_window": self.last_sealed,
            "next_window": partition_key(self.next_window) if self.next_window else None,
            "next_window_start": self.next_window or None,
            "gaps_open": sum(len(b.gaps) for b in self.books.values()),
            "gaps_opened": self.gaps_opened,
            "gaps_repaired": self.gaps_repaired,
            "duplicates_dropped": self.duplicates,
            "malformed_frames": self.malformed,
            "ignored_frames": self.ignored,
            "rejected_symbols": sorted(self.rejected),
            "reconnects": sum(c.reconnects for c in self.connections),
            "rest_requests": self.source.requests if self.source else 0,
            "rows_flushed": self.rows_flushed,
            "last_flush": self.last_flush,
        }

    async def write_status(self, running: bool = True) -> None:
        await asyncio.to_thread(write_status, self.paths.collector_status, self.status(running))

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    def _first_window(self, now: int) -> int:
        """Where sealing resumes: after the last marker, else where the previous run had got to (its status file
        survives a crash), else the current window; never more than `max_catchup_ms` back."""
        current = window_start(now)
        resume = self._last_marker_end(now)
        if resume is None:
            try:
                previous = read_status(self.paths.collector_status) or {}
            except ValueError:
                previous = {}
            value = previous.get("next_window_start")
            resume = value if isinstance(value, int) and value % WINDOW_MS == 0 else None
        if resume is None or now - resume > self.options.max_catchup_ms:
            return current
        return min(resume, current)

    def _last_marker_end(self, now: int) -> int | None:
        for day in (format_day(now), format_day(now - DAY_MS)):
            day_dir = self.paths.markers / day
            for name in sorted((p.name for p in day_dir.glob("*.json")), reverse=True) if day_dir.is_dir() else []:
                try:
                    return int(json.loads((day_dir / name).read_text())["window_end"])
                except (OSError, ValueError, KeyError, TypeError):
                    log.warning("ignoring unreadable marker %s", day_dir / name)
        return None

    async def start(self, stop: asyncio.Event) -> None:
        """Everything before streaming: server time, first window, universe, connections."""
        self.stop_event = stop
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_REST_TIMEOUT_S))
        self.source = RestSource(session, self.endpoints.rest_url)
        await self.source.configure()
        self._offset_ms = self.source.pacer.clock_offset_ms
        self.started_at = now_ms()
        self.next_window = self._first_window(self.server_now())
        await self.apply_universe(await self.load_universe())
        log.info(
            "collector started: %d symbols on %d connections, sealing from %s",
            len(self.books),
            len(self.connections),
            partition_key(self.next_window),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Collect until `stop` is set; then flush, write a final status and return."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.start(stop)
            tasks = [
                asyncio.create_task(self._repair_loop(stop), name="repair"),
                asyncio.create_task(self._universe_loop(stop), name="universe"),
                asyncio.create_task(self._tick_loop(stop), name="tick"),
            ]
            done, _ = await asyncio.wait([*tasks], return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, *self._conn_tasks, return_exceptions=True)
            await self.flush()
            await self.write_status(running=False)
            if self.source is not None:
                await self.source.session.close()
            log.info("collector stopped: %d messages, %d rows flushed", self.messages, self.rows_flushed)
