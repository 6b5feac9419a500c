"""The aggTrade collector: a long-running asyncio daemon that keeps an exact copy of the exchange's aggTrades.

Data flow. Connections (collectors.connection) hand frames to `Collector.on_frame`, which parses them and appends
accepted trades to per-symbol columnar buffers (collectors.books); every `flush_interval_s` (and at once when only a
flush stands between a window and its marker) the buffers go to the TradeStore as parts (collectors.flushing).
Mark-price arrays double as the server-time heartbeat of their connection.

Exactness. aggTrade ids are contiguous per symbol, so every symbol keeps `last_id` and a list of open id gaps:
an id <= last_id outside any gap is a duplicate and dropped; a jump opens a gap, which collectors.repair fills by
REST while the stream keeps flowing. On start, each symbol resumes from the store's last trade
(collectors.universe_watch), so a restart converges to the exchange's exact ids.

Sealing (collectors.sealer over the rules of collectors.sealing) turns this evidence into window markers, strictly in
order. Time comes from an injected `lsq.clock.Clock`, so sealing, flush and compaction cadence and status times are
testable with a FakeClock.

The Collector composes those parts and owns what they share: the books, the connections, the REST source, the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import aiohttp

from collectors.books import SymbolBook
from collectors.connection import MARK_PRICE_STREAM, StreamConnection
from collectors.flushing import Flusher, check_writable
from collectors.marks import MarkStore
from collectors.options import CollectorOptions
from collectors.parse import AggTrade, MalformedFrame, MarkPrice, Response, parse_frame
from collectors.repair import GapRepair
from collectors.rest_backfill import RestSource
from collectors.sealer import WindowSealer
from collectors.status import overwrite_status, write_status
from collectors.universe_watch import UniverseWatcher
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.timelabels import partition_key
from lsq.tradestore import TradeStore

__all__ = ["Collector", "CollectorOptions", "SymbolBook"]

log = logging.getLogger(__name__)

_REST_TIMEOUT_S = 30.0
_LOG_EVERY_S = 10.0
_TICK_S = 0.1


class Collector:
    """The daemon. `await run(stop)` until `stop` is set; thread-safe reading of its store at any time."""

    def __init__(
        self, settings: Settings, options: CollectorOptions | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = settings
        self.options = options or CollectorOptions()
        self.clock = clock
        self.endpoints = settings.endpoints()
        self.paths = DataPaths(settings.data_dir)
        self.store = TradeStore(self.paths)
        self.source: RestSource | None = None
        self.books: dict[str, SymbolBook] = {}
        self.connections: list[StreamConnection] = []
        self.conn_tasks: list[asyncio.Task[None]] = []
        self.flusher = Flusher(
            self.store, MarkStore(self.paths), clock, self.options.compact_every_s, self.options.max_buffered_rows
        )
        self.repair = GapRepair(self)
        self.sealer = WindowSealer(self, int(settings.data.seal_lag_seconds * 1000))
        self.universe = UniverseWatcher(self, self.options.universe_refresh_s)
        self._last_mark_time = -1
        self._offset_ms = 0
        self.started_at = 0
        self.stop_event: asyncio.Event | None = None
        self._writable = False
        # counters for the status file
        self.messages = 0
        self.stream_trades = 0
        self.malformed = 0
        self.ignored = 0
        self.duplicates = 0
        self.gaps_opened = 0
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._rate_mark = (clock.monotonic(), 0)
        self.messages_per_s = 0.0
        self._flushed_at = self._status_at = clock.monotonic()

    # -- what the parts report --------------------------------------------------------------------------------------

    @property
    def gaps_repaired(self) -> int:
        return self.repair.gaps_repaired

    @property
    def rejected(self) -> set[str]:
        return self.universe.rejected

    @property
    def universe_source(self) -> str:
        return self.universe.source

    @property
    def rows_flushed(self) -> int:
        return self.flusher.rows_flushed

    # -- time -------------------------------------------------------------------------------------------------------

    def server_now(self) -> int:
        return self.clock.now_ms() + self._offset_ms

    def _observe_server_time(self, event_ms: int) -> None:
        self._offset_ms = event_ms - self.clock.now_ms()

    def log_limited(self, key: str, msg: str, *args: Any) -> None:
        """Warn at most once per 10 s per kind, with the count of what was suppressed."""
        now = self.clock.monotonic()
        last = self._last_log.get(key)
        if last is None or now - last >= _LOG_EVERY_S:
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
            self.log_limited("malformed", "%s: malformed frame dropped: %s", conn.name, exc)
        except Exception as exc:
            self.malformed += 1
            self.log_limited("frame-error", "%s: frame %r could not be handled: %r", conn.name, raw[:200], exc)

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
            self.ingest(book, item)
        elif type(item) is list:
            self._on_marks(conn, item)
        elif type(item) is Response:
            conn.resolve(item.request_id, item.error)

    def ingest(self, book: SymbolBook, t: AggTrade) -> None:
        """A streamed trade: it also proves the stream is live for the symbol since it subscribed."""
        if not book.anchored:
            book.preanchor.append(t)
            return
        book.verified = True
        book.tail = False
        self.accept(book, t)

    def accept(self, book: SymbolBook, t: AggTrade) -> None:
        """Id bookkeeping of one trade from the stream or REST: new, a gap filled, or a duplicate."""
        a = t.agg_trade_id
        last = book.last_id
        flusher = self.flusher
        if last is None or a > last:
            if flusher.trouble is not None and not flusher.hold():
                # memory is full while the disk is: REST fetches the trade once space returns
                book.open_gap(a if last is None else last + 1, a)
                book.last_id, book.last_l = a, t.last_trade_id
                return
            if last is not None and a > last + 1:
                book.open_gap(last + 1, a - 1)
                self.gaps_opened += 1
                self.repair.wake.set()
            book.last_id = a
            book.last_l = t.last_trade_id
            book.add(t)
        elif book.gaps and flusher.refusing:
            return
        elif book.gaps and book.fill(a):
            if flusher.trouble is not None and not flusher.hold():
                # give the id back to its gap: there is no room to keep the trade
                book.open_gap(a, a)
                return
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
        if event > self._last_mark_time and not self.flusher.refusing:
            self._last_mark_time = event
            self.flusher.mark_rows.extend(marks)

    # -- connection events --------------------------------------------------------------------------------------------

    def on_subscribed(self, conn: StreamConnection, streams: list[str]) -> None:
        for stream in streams:
            if stream == MARK_PRICE_STREAM:
                continue
            book = self.books.get(stream.partition("@")[0].upper())
            if book is not None and book.conn is conn:
                book.verified = False
                book.epoch += 1
                self.repair.to_verify[book.symbol] = book.epoch
        self.repair.wake.set()

    def on_down(self, conn: StreamConnection) -> None:
        for book in self.books.values():
            if book.conn is conn:
                book.verified = False
                book.epoch += 1
        conn.heartbeat_ms = None

    @property
    def rest(self) -> RestSource:
        if self.source is None:
            raise RuntimeError("the collector has not started: no REST source yet")
        return self.source

    # -- the tick: flush, seal, probe, compact, status ------------------------------------------------------------

    async def flush(self) -> None:
        """Write every buffered trade and mark price to the store (in a worker thread)."""
        await self.flusher.flush(list(self.books.values()))

    async def step(self) -> None:
        """One tick of the daemon; its cadences are measured on the injected clock."""
        opts = self.options
        now = self.clock.monotonic()
        blocked = self.sealer.update() and self.flusher.trouble is None
        if blocked or now - self._flushed_at >= opts.flush_interval_s:
            await self.flush()
            self._flushed_at = self.clock.monotonic()
            self.sealer.update()
        await self.sealer.seal_ready()
        self.sealer.maybe_probe()
        self.flusher.schedule_compaction(self.server_now())
        self.flusher.start_compaction(self.sealer.next_window)
        if now - self._status_at >= opts.status_interval_s:
            await self.write_status()
            self._status_at = now

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK_S)
            for task in self.conn_tasks:
                if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                    raise exc
            await self.step()

    # -- status -------------------------------------------------------------------------------------------------------

    def status(self, running: bool = True) -> dict[str, Any]:
        now = self.clock.monotonic()
        then, count = self._rate_mark
        if now - then >= 1.0:
            self.messages_per_s = (self.messages - count) / (now - then)
            self._rate_mark = (now, self.messages)
        next_window = self.sealer.next_window
        return {
            "running": running,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": self.clock.now_ms(),
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
            "universe_source": self.universe.source,
            "messages_per_s": round(self.messages_per_s, 1),
            "messages_total": self.messages,
            "stream_trades": self.stream_trades,
            "last_sealed_window": self.sealer.last_sealed,
            "next_window": partition_key(next_window) if next_window else None,
            "next_window_start": next_window or None,
            "gaps_open": sum(len(b.gaps) for b in self.books.values()),
            "gaps_opened": self.gaps_opened,
            "gaps_repaired": self.repair.gaps_repaired,
            "duplicates_dropped": self.duplicates,
            "malformed_frames": self.malformed,
            "ignored_frames": self.ignored,
            "rejected_symbols": sorted(self.universe.rejected),
            "reconnects": sum(c.reconnects for c in self.connections),
            "rest_requests": self.source.requests if self.source else 0,
            "rows_flushed": self.flusher.rows_flushed,
            "last_flush": self.flusher.last_flush,
            "storage": self.flusher.status(),
        }

    async def write_status(self, running: bool = True) -> None:
        """Rewrite the status file; when the disk refuses, say so and overwrite the old file's bytes in place."""
        path = self.paths.collector_status
        try:
            await asyncio.to_thread(write_status, path, self.status(running))
        except OSError as exc:
            self.flusher.failed(exc, list(self.books.values()), path)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(overwrite_status, path, self.status(running))

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    async def start(self, stop: asyncio.Event) -> None:
        """Everything before streaming: a writable data directory, server time, first window, universe, connections.

        Raises DataDirUnwritable or RestFetchError (each one line naming the directory or the URL) when it cannot.
        """
        check_writable(self.paths.root)
        self._writable = True
        self.stop_event = stop
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_REST_TIMEOUT_S))
        self.source = RestSource(session, self.endpoints.rest_url, clock=self.clock)
        await self.source.configure()
        self._offset_ms = self.source.pacer.clock_offset_ms
        self.started_at = self.clock.now_ms()
        self.sealer.next_window = self.sealer.first_window(self.server_now(), self.options.max_catchup_ms)
        await self.universe.apply(await self.universe.load())
        log.info(
            "collector started: %d symbols on %d connections, sealing from %s",
            len(self.books),
            len(self.connections),
            partition_key(self.sealer.next_window),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Collect until `stop` is set; then flush, write a final status and return."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.start(stop)
            tasks = [
                asyncio.create_task(self.repair.loop(stop), name="repair"),
                asyncio.create_task(self.universe.loop(stop), name="universe"),
                asyncio.create_task(self._tick_loop(stop), name="tick"),
            ]
            done, _ = await asyncio.wait([*tasks], return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if (exc := task.exception()) is not None:
                    raise exc
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, *self.conn_tasks, return_exceptions=True)
            if self._writable:
                await self.flush()
                await self.write_status(running=False)
                unwritten = sum(b.buffered for b in self.books.values())
                if unwritten:
                    log.error("%d trades could not be stored before stopping; the next start fetches them", unwritten)
            if self.source is not None:
                await self.source.session.close()
            log.info("collector stopped: %d messages, %d rows flushed", self.messages, self.flusher.rows_flushed)
