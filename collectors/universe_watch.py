"""Universe watching: which symbols to collect (the day's universe file, else every trading USDT perpetual), books for
added symbols resumed from the store, removed ones dropped, and streams spread over connections, all without
reconnecting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import polars as pl

from collectors.books import SymbolBook
from collectors.connection import StreamConnection
from collectors.gaps import trading_usdt_perpetuals
from collectors.rest_backfill import RestFetchError
from lsq.timelabels import HOUR_MS, WINDOW_MS, format_day, window_start

if TYPE_CHECKING:
    from collectors.daemon import Collector

log = logging.getLogger(__name__)

_REMOVED = 1 << 62  # active_from of a symbol being removed: it joins no later window


class UniverseWatcher:
    """Keeps the collector's books and connections in line with the universe."""

    def __init__(self, collector: Collector, refresh_s: float) -> None:
        self.c = collector
        self.refresh_s = refresh_s
        self.source = ""
        self.rejected: set[str] = set()

    async def load(self) -> list[str]:
        """The day's universe file if present, else every trading USDT perpetual from exchangeInfo.

        Symbols of the file that the exchange does not trade are refused (logged once), not collected.
        """
        trading = await trading_usdt_perpetuals(self.c.rest)
        path = self.c.paths.universe_file(format_day(self.c.server_now()), "v1")
        if not path.exists():
            self.source = "exchangeInfo"
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
        self.source = str(path)
        return sorted(listed & set(trading))

    async def apply(self, symbols: Iterable[str]) -> None:
        """Subscribe added symbols (resuming from the store), unsubscribe removed ones, without reconnecting."""
        books = self.c.books
        wanted = set(symbols)
        removed = sorted(set(books) - wanted)
        added = sorted(wanted - set(books))
        if removed:
            log.info("universe: removing %d symbols %s", len(removed), removed[:10])
            for symbol in removed:
                books[symbol].seal.active_from = _REMOVED
            await self.c.flush()
            for symbol in removed:
                if not books[symbol].ids:  # a failed flush handed trades back: keep them for the next one
                    books.pop(symbol, None)
        if added:
            log.info("universe: adding %d symbols %s", len(added), added[:10])
            next_window = self.c.sealer.next_window
            active_from = max(next_window, window_start(self.c.server_now())) if books else next_window
            prepared = await asyncio.to_thread(self._prepare_books, added, active_from)
            books.update(prepared)
        if removed or added:
            self._assign_connections()

    def _prepare_books(self, symbols: list[str], active_from: int) -> dict[str, SymbolBook]:
        """Books for new symbols: resume from the store when its data reaches close to `active_from`; holes inside
        the recent store (a crash before repaired trades were flushed) are reopened as gaps."""
        store, paths = self.c.store, self.c.paths
        books = {}
        for symbol in symbols:
            book = SymbolBook(symbol, active_from)
            last = store.last_trade(symbol)
            if last is not None and last["transact_time"] >= active_from - HOUR_MS:
                book.anchored = True
                book.last_id = int(last["agg_trade_id"])
                book.last_l = int(last["last_trade_id"])
                book.last_time = int(last["transact_time"])
                book.counted_from = window_start(book.last_time) + WINDOW_MS
                since = min(active_from, window_start(book.last_time, HOUR_MS)) - HOUR_MS
                for lo, hi in store.id_gaps(symbol, since, book.last_time + 1):
                    book.open_gap(lo, hi)
                    self.c.gaps_opened += 1
            open_hour = window_start(self.c.server_now(), HOUR_MS)
            for hour in store.hours(symbol):
                if hour < open_hour and paths.trade_parts_dir(symbol, hour).is_dir():
                    self.c.flusher.compact_due.add((symbol, hour))
            books[symbol] = book
        return books

    def _assign_connections(self) -> None:
        c = self.c
        capacity = c.options.streams_per_connection - 1
        by_conn: dict[int, set[str]] = {id(conn): set() for conn in c.connections}
        unassigned = []
        for book in c.books.values():
            if book.conn is not None and id(book.conn) in by_conn:
                by_conn[id(book.conn)].add(book.symbol)
            else:
                unassigned.append(book)
        for book in sorted(unassigned, key=lambda b: b.symbol):
            conn = next((x for x in c.connections if len(by_conn[id(x)]) < capacity), None)
            if conn is None:
                conn = StreamConnection(
                    f"conn-{len(c.connections) + 1}",
                    c.endpoints.ws_url,
                    c,
                    max_age_s=c.options.max_connection_age_s,
                    silence_s=c.options.silence_s,
                    backoff_cap_s=c.options.backoff_cap_s,
                    clock=c.clock,
                )
                c.connections.append(conn)
                by_conn[id(conn)] = set()
                if c.stop_event is not None:
                    c.conn_tasks.append(asyncio.create_task(conn.run(c.stop_event), name=conn.name))
            by_conn[id(conn)].add(book.symbol)
            book.conn = conn
        for conn in c.connections:
            conn.set_streams({f"{s.lower()}@aggTrade" for s in by_conn[id(conn)]})

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh_s)
            if stop.is_set():
                return
            try:
                await self.apply(await self.load())
            except (ValueError, RestFetchError, OSError) as exc:
                log.error("universe refresh failed, keeping the current one: %s", exc)
