"""The window sealer: turns every symbol's evidence (collectors.sealing, pure rules) into window markers, strictly in
order, and decides where sealing resumes after a restart.

Right after a window ends, symbols still waiting for evidence (quiet ones) are confirmed by one ticker call instead
of waiting for the heartbeat lag, which puts the marker a few hundred milliseconds after the window end on the
simulator. Every time here is the collector's clock (server time = clock + the offset the stream reports).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import polars as pl

from collectors.gaps import last_trade_ids
from collectors.rest_backfill import RestFetchError
from collectors.sealing import marker_payload, sealed_through, ticker_confirms, windows_to_seal
from collectors.status import read_status
from lsq.paths import atomic_write_text
from lsq.timelabels import DAY_MS, WINDOW_MS, format_day, window_start

if TYPE_CHECKING:
    from collectors.daemon import Collector

log = logging.getLogger(__name__)

_PROBE_AFTER_MS = 100
_PROBE_SPACING_S = 0.5
_PROBES_PER_WINDOW = 4


class WindowSealer:
    """Writes the marker of each complete window; `next_window` is the first one not sealed yet."""

    def __init__(self, collector: Collector, lag_ms: int) -> None:
        self.c = collector
        self.lag_ms = lag_ms
        self.next_window = 0
        self.last_sealed: dict[str, Any] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._probes: dict[int, int] = {}
        self._last_probe = float("-inf")

    def update(self) -> bool:
        """Refresh every symbol's evidence; True if the next window waits only for a flush."""
        end = self.next_window + WINDOW_MS
        blocked = False
        for book in self.c.books.values():
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

    async def seal_ready(self) -> None:
        """Write the markers of every window that can be sealed now, in order; a failed write is retried later."""
        books = self.c.books
        sealed = {s: sealed_through(b.seal.complete_before, b.pending_min()) for s, b in books.items()}
        active = {s: b.seal.active_from for s, b in books.items()}
        for window, symbols in windows_to_seal(self.next_window, sealed, active, self.c.server_now(), self.lag_ms):
            try:
                await self._write_marker(window, symbols)
            except OSError as exc:
                self.c.flusher.failed(exc, list(books.values()), self.c.paths.marker_file(window))
                return
            self.next_window = window + WINDOW_MS
            self._probes.pop(self.next_window, None)

    async def _write_marker(self, window: int, symbols: list[str]) -> None:
        from_memory = 0
        from_store = []
        counted: list[tuple[Any, int]] = []
        for symbol in symbols:
            book = self.c.books[symbol]
            if window >= book.counted_from:
                n = book.counts.get(window, 0)
                from_memory += n
                counted.append((book, n))
            else:
                from_store.append(symbol)
        rows = from_memory
        if from_store:
            rows += await asyncio.to_thread(self._count_stored, from_store, window)
        body = marker_payload(window, symbols, rows, self.c.server_now())
        await asyncio.to_thread(atomic_write_text, self.c.paths.marker_file(window), json.dumps(body, indent=1))
        for book, _ in counted:
            book.counts.pop(window, None)
        self.last_sealed = {k: body[k] for k in ("window_start", "partition_key", "rows", "sealed_at")}
        log.info("sealed %s: %d symbols, %d trades", body["partition_key"], len(symbols), rows)

    def _count_stored(self, symbols: list[str], window: int) -> int:
        scan = self.c.store.scan_many(symbols, window, window + WINDOW_MS)
        return int(scan.select(pl.len()).collect().item())

    # -- ticker probes ------------------------------------------------------------------------------------------------

    def maybe_probe(self) -> None:
        """After a window ends, confirm quiet symbols with one ticker call instead of waiting for the heartbeat lag."""
        if self.c.source is None:  # not started: no exchange to ask
            return
        end = self.next_window + WINDOW_MS
        if self._probe_task is not None and not self._probe_task.done():
            return
        now = self.c.server_now()
        if now < end + _PROBE_AFTER_MS or self._probes.get(end, 0) >= _PROBES_PER_WINDOW:
            return
        if self.c.clock.monotonic() - self._last_probe < _PROBE_SPACING_S:
            return
        waiting = [
            b
            for b in self.c.books.values()
            if b.seal.active_from <= self.next_window
            and b.seal.complete_before < end
            and b.anchored
            and not b.gaps
            and not b.tail
        ]
        if waiting:
            self._probes[end] = self._probes.get(end, 0) + 1
            self._last_probe = self.c.clock.monotonic()
            self._probe_task = asyncio.create_task(self._probe([b.symbol for b in waiting]), name="probe")

    async def _probe(self, symbols: list[str]) -> None:
        asked_at = self.c.server_now()
        epochs = {s: self.c.books[s].epoch for s in symbols}
        try:
            latest = await last_trade_ids(self.c.rest)
        except RestFetchError as exc:
            self.c.log_limited("probe", "ticker probe failed: %s", exc)
            return
        for symbol, epoch in epochs.items():
            book = self.c.books.get(symbol)
            if book is None or book.epoch != epoch or book.gaps or book.tail or not book.anchored:
                continue
            if ticker_confirms(latest.get(symbol), book.last_l):
                book.seal.confirm(asked_at)

    # -- where to resume ---------------------------------------------------------------------------------------------

    def first_window(self, now: int, max_catchup_ms: int) -> int:
        """Where sealing resumes: after the last marker, else where the previous run had got to (its status file
        survives a crash), else the current window; never more than `max_catchup_ms` back."""
        current = window_start(now)
        resume = self._last_marker_end(now)
        if resume is None:
            try:
                previous = read_status(self.c.paths.collector_status) or {}
            except ValueError:
                previous = {}
            value = previous.get("next_window_start")
            resume = value if isinstance(value, int) and value % WINDOW_MS == 0 else None
        if resume is None or now - resume > max_catchup_ms:
            return current
        return min(resume, current)

    def _last_marker_end(self, now: int) -> int | None:
        for day in (format_day(now), format_day(now - DAY_MS)):
            day_dir = self.c.paths.markers / day
            for name in sorted((p.name for p in day_dir.glob("*.json")), reverse=True) if day_dir.is_dir() else []:
                try:
                    return int(json.loads((day_dir / name).read_text())["window_end"])
                except (OSError, ValueError, KeyError, TypeError):
                    log.warning("ignoring unreadable marker %s", day_dir / name)
        return None
