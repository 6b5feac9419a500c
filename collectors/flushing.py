"""Flushing: the collector's buffers go to the store as parts, the parts are merged into hour files on a cadence,
and a data directory that refuses writes (disk full, remounted read-only) is survived rather than fatal.

Why survive it: the buffers hold trades the exchange already sent; dying loses them until a restart re-fetches them
by REST, and a full disk is usually fixed by an operator within minutes. So while writes fail the trades stay in
memory (up to `CollectorOptions.max_buffered_rows`), the state is said once in the log and continuously in the status
file, and every flush retries; the first one that succeeds resumes normal work with nothing lost.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from collectors.books import SymbolBook
from collectors.marks import MarkStore, marks_frame
from collectors.parse import MarkPrice
from lsq.clock import Clock
from lsq.timelabels import HOUR_MS, window_start
from lsq.tradestore import TradeStore

log = logging.getLogger(__name__)


class DataDirUnwritable(RuntimeError):
    """The data directory cannot be written at all; the collector refuses to start."""


def check_writable(data_dir: Path) -> None:
    """Raise DataDirUnwritable (one line naming the directory) unless a file can be created in `data_dir`.

    Only creation is probed, not free space: a full disk at start is survived like one that fills up later.
    """
    probe = data_dir / "collector" / f".write-probe-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise DataDirUnwritable(
            f"data directory {data_dir} is not writable ({exc.strerror or exc}); "
            "fix its permissions or mount, or set data.data_dir"
        ) from None


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "disk full"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or type(exc).__name__


@dataclass
class StorageTrouble:
    """Writes to the data directory are failing: since when, why, and how much waits in memory."""

    since_ms: int
    reason: str
    path: str
    buffered_rows: int = 0
    over_bound: bool = False

    def as_status(self, bound: int) -> dict[str, Any]:
        return {
            "state": self.reason,
            "since": self.since_ms,
            "path": self.path,
            "buffered_rows": self.buffered_rows,
            "max_buffered_rows": bound,
            "refusing_new_trades": self.over_bound,
        }


class Flusher:
    """Buffers -> store parts (in a worker thread), parts -> hour files every `compact_every_s`, and storage trouble."""

    def __init__(
        self, store: TradeStore, marks: MarkStore, clock: Clock, compact_every_s: float, max_buffered_rows: int
    ) -> None:
        self.store = store
        self.marks = marks
        self.clock = clock
        self.compact_every_ms = int(compact_every_s * 1000)
        self.max_buffered_rows = max_buffered_rows
        self.mark_rows: list[MarkPrice] = []
        self.rows_flushed = 0
        self.last_flush = 0
        self.trouble: StorageTrouble | None = None
        self._lock = asyncio.Lock()
        self._parts: set[tuple[str, int]] = set()  # (symbol, hour) with parts written since their last merge
        self._compacted_at = 0
        self.compact_due: set[tuple[str, int]] = set()
        self._compact_task: asyncio.Future[None] | None = None

    @property
    def refusing(self) -> bool:
        """True while writes fail and memory holds the bound: new trades are then left as gaps for REST."""
        return self.trouble is not None and self.trouble.over_bound

    async def flush(self, books: list[SymbolBook]) -> None:
        """Write every buffered trade and mark price to the store; what fails stays in memory for the next flush."""
        async with self._lock:
            batches = [(book, cols) for book in books if (cols := book.take()) is not None]
            marks, self.mark_rows = self.mark_rows, []
            if not batches and not marks:
                if self.trouble is not None:
                    self._update_trouble(books)
                return
            unwritten, marks_written, error = await asyncio.to_thread(self._write, batches, marks)
            for book, cols in batches:
                if id(book) in unwritten:
                    book.give_back(cols)
                else:
                    self.rows_flushed += len(cols["agg_trade_id"])
                book.inflight_min = None
            if not marks_written:
                self.mark_rows = marks + self.mark_rows
            if error is None:
                self.last_flush = self.clock.now_ms()
                self._recovered()
            else:
                self.failed(error, books)

    def _write(
        self, batches: list[tuple[SymbolBook, dict[str, list[Any]]]], marks: list[MarkPrice]
    ) -> tuple[set[int], bool, Exception | None]:
        """One part per symbol; returns the ids of the books not written, whether the marks were, and the error."""
        for i, (book, cols) in enumerate(batches):
            try:
                self.store.write_part(book.symbol, pl.DataFrame(cols))
            except Exception as exc:
                return {id(b) for b, _ in batches[i:]}, not marks, exc
            times = cols["transact_time"]
            first, last = window_start(min(times), HOUR_MS), window_start(max(times), HOUR_MS)
            self._parts.update((book.symbol, hour) for hour in range(first, last + 1, HOUR_MS))
        if marks:
            try:
                self.marks.write_part(marks_frame(marks))
            except Exception as exc:
                return set(), False, exc
        return set(), True, None

    def failed(self, error: Exception, books: list[SymbolBook], path: Path | None = None) -> None:
        """A write failed: enter (or stay in) the troubled state; said in the log once per episode."""
        if not isinstance(error, OSError):
            log.error("flush failed; the data stays in memory and is retried: %r", error)
            return
        where = str(path or error.filename or self.store.paths.root)
        if self.trouble is None:
            self.trouble = StorageTrouble(self.clock.now_ms(), describe_os_error(error), where)
            log.error(
                "cannot write to %s (%s): keeping trades in memory (at most %d rows) and retrying every flush",
                where,
                error,
                self.max_buffered_rows,
            )
        self._update_trouble(books)

    def hold(self) -> bool:
        """While writes fail, count one more trade into memory; False once the bound is reached (do not buffer it)."""
        trouble = self.trouble
        if trouble is None:
            return True
        if trouble.buffered_rows < self.max_buffered_rows:
            trouble.buffered_rows += 1
            return True
        if not trouble.over_bound:
            trouble.over_bound = True
            log.error(
                "%d rows in memory reach the bound: new trades are left as id gaps (and mark prices dropped), "
                "fetched by REST once %s is writable again",
                trouble.buffered_rows,
                trouble.path,
            )
        return False

    def _update_trouble(self, books: list[SymbolBook]) -> None:
        trouble = self.trouble
        assert trouble is not None
        trouble.buffered_rows = sum(b.buffered for b in books) + len(self.mark_rows)
        if trouble.buffered_rows < self.max_buffered_rows:
            trouble.over_bound = False
        else:
            self.hold()

    def _recovered(self) -> None:
        if self.trouble is not None:
            log.warning(
                "%s is writable again after %.0f s: buffered trades written, collecting normally",
                self.trouble.path,
                (self.clock.now_ms() - self.trouble.since_ms) / 1000,
            )
            self.trouble = None

    def status(self) -> dict[str, Any]:
        if self.trouble is None:
            return {"state": "ok", "max_buffered_rows": self.max_buffered_rows}
        return self.trouble.as_status(self.max_buffered_rows)

    # -- compaction -----------------------------------------------------------------------------------------------

    def schedule_compaction(self, server_ms: int) -> None:
        """Every `compact_every_s`, half a period off the window grid, each hour with new parts is due for a merge."""
        every = self.compact_every_ms
        slot = (server_ms - every // 2) // every
        if slot > self._compacted_at:
            self._compacted_at = slot
            self.compact_due |= self._parts
            self._parts = set()

    def start_compaction(self, sealed_before: int) -> None:
        """Merge the due hours in a worker thread, one merge at a time; not while writes are failing."""
        if not self.compact_due or self.trouble is not None:
            return
        if self._compact_task is None or self._compact_task.done():
            due, self.compact_due = self.compact_due, set()
            self._compact_task = asyncio.ensure_future(asyncio.to_thread(self._compact, due, sealed_before))

    def _compact(self, due: set[tuple[str, int]], sealed_before: int) -> None:
        for symbol, hour in sorted(due):
            try:
                self.store.compact_hour(symbol, hour)
            except Exception:
                log.exception("compaction of %s hour %d failed; it is retried in a minute", symbol, hour)
                self._parts.add((symbol, hour))
        for hour in sorted({h for _, h in due if h + HOUR_MS <= sealed_before}):
            try:
                self.marks.compact_hour(hour)
            except Exception:
                log.exception("compaction of mark prices hour %d failed", hour)
