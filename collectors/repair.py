"""Gap repair: every id range the stream did not deliver, and every tail left unknown by a (re)subscription, is
fetched by REST (`GET /fapi/v1/aggTrades?fromId=`, paced by the request weight) while the stream keeps flowing.

Whenever a connection (re)subscribes, what happened while it was away is unknown until the symbol's tail is verified:
the first streamed trade after subscribing does it (a jump opens a gap as usual); for quiet symbols one
`GET /fapi/v1/ticker/24hr` for all symbols tells whether the exchange's last trade id (`lastId`, a trade id, not an
aggTrade id) is beyond the `l` of our last aggTrade, and only then the tail is fetched. A fresh symbol is *anchored*
at its first trade of the window it joins.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import polars as pl

from collectors.books import SymbolBook
from collectors.gaps import batch_trades, first_trades_since, last_trade_ids, latest_trade
from collectors.rest_backfill import RestFetchError, Until, fetch_agg_trades_from_id

if TYPE_CHECKING:
    from collectors.daemon import Collector

_REPAIR_CONCURRENCY = 4
_FOREVER = 1 << 62
_RETRY_AFTER_S = 1.0
_IDLE_WAKE_S = 1.0


class GapRepair:
    """Settles unverified tails and fills open id gaps of the collector's books through REST."""

    def __init__(self, collector: Collector) -> None:
        self.c = collector
        self.to_verify: dict[str, int] = {}  # symbol -> the subscription epoch to verify
        self.wake = asyncio.Event()
        self.gaps_repaired = 0

    def needed(self) -> bool:
        return any(b.gaps or (b.tail and b.anchored) for b in self.c.books.values())

    async def loop(self, stop: asyncio.Event) -> None:
        clock = self.c.clock
        while not stop.is_set():
            self.wake.clear()
            if self.c.flusher.refusing:  # nowhere to put what REST would fetch: wait for the disk
                await clock.asleep(_RETRY_AFTER_S)
                continue
            try:
                if self.to_verify:
                    await self._verify()
                if self.needed():
                    await self._round()
                    continue
            except RestFetchError as exc:
                self.c.log_limited("rest", "REST repair failed, will retry: %s", exc)
                await clock.asleep(_RETRY_AFTER_S)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), _IDLE_WAKE_S)

    async def _verify(self) -> None:
        """Settle the tail of (re)subscribed symbols the stream has not spoken for yet."""
        batch, self.to_verify = self.to_verify, {}
        try:
            latest = await last_trade_ids(self.c.rest)
        except RestFetchError:
            self.to_verify = {**batch, **self.to_verify}
            raise
        pending = list(batch.items())
        for i, (symbol, epoch) in enumerate(pending):
            book = self.c.books.get(symbol)
            if book is None or book.epoch != epoch:
                continue
            if not book.anchored:
                try:
                    await self._anchor(book)
                except RestFetchError:
                    for later, later_epoch in pending[i:]:
                        self.to_verify.setdefault(later, later_epoch)
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
        trades, complete = await first_trades_since(self.c.rest, book.symbol, start, self.c.server_now())
        if trades:
            book.last_id = trades[0].agg_trade_id - 1
            book.tail = not complete
        else:
            latest = await latest_trade(self.c.rest, book.symbol)
            if latest is not None and latest.transact_time >= start:
                book.last_id = latest.agg_trade_id - 1
                book.tail = True
            else:
                book.last_id = latest.agg_trade_id if latest else None
                book.last_l = latest.last_trade_id if latest else None
        book.counted_from = start
        book.anchored = True
        for t in trades:
            self.c.accept(book, t)
        pre, book.preanchor = book.preanchor, []
        for t in pre:
            self.c.ingest(book, t)

    async def _round(self) -> None:
        """Repair every symbol with an open gap or an unverified tail, a few symbols at a time."""
        todo = [b for b in self.c.books.values() if b.gaps or (b.tail and b.anchored)]
        todo.sort(key=lambda b: b.gaps[0][0] if b.gaps else 1 << 62)
        limit = asyncio.Semaphore(_REPAIR_CONCURRENCY)

        async def repair(book: SymbolBook) -> None:
            async with limit:
                if self.c.books.get(book.symbol) is book:
                    await self._repair(book)

        results = await asyncio.gather(*(repair(b) for b in todo), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _repair(self, book: SymbolBook) -> None:
        def accept(batch: pl.DataFrame) -> None:
            if self.c.books.get(book.symbol) is book:
                for t in batch_trades(book.symbol, batch):
                    self.c.accept(book, t)

        rest = self.c.rest
        if book.gaps:
            lo, hi = book.gaps[0]
            await fetch_agg_trades_from_id(rest, book.symbol, lo, Until(last_id=hi), accept)
            if not book.gaps:
                self.gaps_repaired += 1
        elif book.last_id is None:
            book.anchored = book.tail = False
            self.to_verify[book.symbol] = book.epoch
        elif book.tail:
            epoch = book.epoch
            await fetch_agg_trades_from_id(rest, book.symbol, book.last_id + 1, Until(end_ms=_FOREVER), accept)
            if book.epoch == epoch and book.tail:
                book.tail = False
                book.verified = True
