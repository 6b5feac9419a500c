"""One logical market-stream connection: connect, subscribe, read, and keep it alive across failures.

Binance's rules shape it: at most 1024 streams per connection, at most 10 incoming messages per second (so
SUBSCRIBE requests are batched and paced), a 24 h lifetime (so the connection is replaced before then, opening the
new socket first and closing the old one only once the new one streams: the overlap is deduplicated by id, and no
moment goes uncovered), and silent failures (a socket with no message for `silence_s` while the server should be
sending the 1 s mark-price array is recycled). Failures reconnect with jittered exponential backoff.

The connection does not interpret trade frames: every frame goes to the listener, which also hands back the answers
to requests through `resolve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection

from collectors.options import MAX_STREAMS
from lsq.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

MARK_PRICE_STREAM = "!markPrice@arr@1s"
_STABLE_S = 10.0  # a socket that lived this long resets the backoff; quicker deaths make it grow


class SubscribeError(RuntimeError):
    """The server refused or did not answer a SUBSCRIBE/UNSUBSCRIBE request."""


class StreamListener(Protocol):
    def on_frame(self, conn: StreamConnection, raw: str | bytes) -> None: ...

    def on_subscribed(self, conn: StreamConnection, streams: list[str]) -> None: ...

    def on_down(self, conn: StreamConnection) -> None: ...


def backoff_delay(failures: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Jittered exponential backoff: a random delay in [half, all] of min(cap, base * 2^(failures-1))."""
    ceiling: float = min(cap_s, base_s * 2.0 ** max(0, failures - 1))
    return ceiling * random.uniform(0.5, 1.0)


class StreamConnection:
    """Combined-stream socket(s) for a set of streams, always including the 1 s mark-price array (the heartbeat)."""

    def __init__(
        self,
        name: str,
        ws_url: str,
        listener: StreamListener,
        *,
        max_age_s: float = 23 * 3600.0,
        silence_s: float = 10.0,
        subscribe_batch: int = 200,
        subscribe_per_s: float = 4.0,
        response_timeout_s: float = 10.0,
        backoff_cap_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.clock = clock
        self.url = ws_url.rstrip("/") + "/market/stream?streams=" + MARK_PRICE_STREAM
        self.listener = listener
        self.max_age_s = max_age_s
        self.silence_s = silence_s
        self.subscribe_batch = subscribe_batch
        self.subscribe_interval_s = 1.0 / subscribe_per_s
        self.response_timeout_s = response_timeout_s
        self.backoff_cap_s = backoff_cap_s
        self.desired: set[str] = set()
        self.live: set[str] = set()
        self.up = False
        self.heartbeat_ms: int | None = None
        self.last_message = self.clock.monotonic()
        self.reconnects = 0
        self.recycled = 0
        self.rotations = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[str | None]] = {}
        self._socket: tuple[ClientConnection, asyncio.Task[None]] | None = None

    def set_streams(self, streams: set[str]) -> None:
        """Streams wanted besides the mark-price array; applied by SUBSCRIBE/UNSUBSCRIBE without reconnecting."""
        if len(streams) + 1 > MAX_STREAMS:
            raise ValueError(f"{self.name}: {len(streams) + 1} streams exceed Binance's {MAX_STREAMS} per connection")
        self.desired = set(streams)

    def resolve(self, request_id: object, error: str | None) -> None:
        """Called by the listener for a response frame."""
        fut = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if fut is not None and not fut.done():
            fut.set_result(error)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, reconnecting after every failure."""
        failures = 0
        while not stop.is_set():
            up_since: float | None = None
            try:
                ws, reader, live = await self._open()
                self._socket = (ws, reader)
                up_since = self.clock.monotonic()
                self.live, self.up = live, True
                self.listener.on_subscribed(self, sorted(live))
                await self._serve(stop)
            except (OSError, TimeoutError, websockets.WebSocketException, SubscribeError) as exc:
                log.warning("%s: connection failed: %s", self.name, str(exc) or type(exc).__name__)
            finally:
                if self.up:
                    self.up = False
                    self.live = set()
                    self.listener.on_down(self)
                if self._socket is not None:
                    await self._close(*self._socket)
                    self._socket = None
            if stop.is_set():
                break
            stable = up_since is not None and self.clock.monotonic() - up_since >= _STABLE_S
            failures = 1 if stable else failures + 1
            self.reconnects += 1
            delay = backoff_delay(failures, cap_s=self.backoff_cap_s)
            log.info("%s: reconnecting in %.2f s", self.name, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _open(self) -> tuple[ClientConnection, asyncio.Task[None], set[str]]:
        """A new socket subscribed to every desired stream; its reader already feeds the listener."""
        ws = await websockets.connect(
            self.url, open_timeout=10, ping_interval=None, max_size=2**24, max_queue=4096, compression=None
        )
        reader = asyncio.create_task(self._read(ws), name=f"{self.name}-reader")
        try:
            wanted = set(self.desired)
            await self._request(ws, "SUBSCRIBE", sorted(wanted))
        except BaseException:
            await self._close(ws, reader)
            raise
        self.last_message = self.clock.monotonic()
        return ws, reader, wanted | {MARK_PRICE_STREAM}

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            self.last_message = self.clock.monotonic()
            self.listener.on_frame(self, raw)

    async def _request(self, ws: ClientConnection, method: str, streams: list[str]) -> None:
        """Send `method` for `streams` in paced batches and wait for every answer.

        Unanswered requests are forgotten on the way out (timeout, closed socket), so `_pending` never grows.
        """
        futures = []
        ids = []
        try:
            for i in range(0, len(streams), self.subscribe_batch):
                if i:
                    await asyncio.sleep(self.subscribe_interval_s)
                request_id = next(self._ids)
                fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
                self._pending[request_id] = fut
                ids.append(request_id)
                futures.append(fut)
                params = ",".join(f'"{s}"' for s in streams[i : i + self.subscribe_batch])
                await ws.send(f'{{"method":"{method}","params":[{params}],"id":{request_id}}}')
            if not futures:
                return
            errors = await asyncio.wait_for(asyncio.gather(*futures), self.response_timeout_s)
        except TimeoutError:
            raise SubscribeError(f"{self.name}: no answer to {method} within {self.response_timeout_s} s") from None
        finally:
            for request_id in ids:
                self._pending.pop(request_id, None)
        refused = [e for e in errors if e is not None]
        if refused:
            raise SubscribeError(f"{self.name}: {method} refused: {refused[0]}")

    async def _serve(self, stop: asyncio.Event) -> None:
        """Watch the current socket until `stop`; raise when it fails, falls silent, or cannot be replaced."""
        opened = self.clock.monotonic()
        while not stop.is_set() and self._socket is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
            ws, reader = self._socket
            if reader.done():
                exc = reader.exception()
                raise exc if exc else websockets.ConnectionClosedOK(None, None)
            now = self.clock.monotonic()
            if now - self.last_message > self.silence_s:
                self.recycled += 1
                raise TimeoutError(f"no message for {now - self.last_message:.1f} s: recycling the connection")
            if now - opened > self.max_age_s:
                await self._rotate()
                opened = self.clock.monotonic()
                continue
            await self._sync(ws)

    async def _sync(self, ws: ClientConnection) -> None:
        wanted = self.desired | {MARK_PRICE_STREAM}
        added, removed = sorted(wanted - self.live), sorted(self.live - wanted)
        if removed:
            await self._request(ws, "UNSUBSCRIBE", removed)
            self.live -= set(removed)
        if added:
            await self._request(ws, "SUBSCRIBE", added)
            self.live |= set(added)
            self.listener.on_subscribed(self, added)

    async def _rotate(self) -> None:
        """Replace an ageing socket: the new one streams before the old one closes."""
        log.info("%s: replacing the connection before its lifetime ends", self.name)
        assert self._socket is not None
        old = self._socket
        ws, reader, live = await self._open()
        self._socket = (ws, reader)
        self.rotations += 1
        await self._close(*old)
        added = sorted(live - self.live)
        self.live = live
        if added:
            self.listener.on_subscribed(self, added)

    @staticmethod
    async def _close(ws: ClientConnection | None, reader: asyncio.Task[None] | None) -> None:
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
