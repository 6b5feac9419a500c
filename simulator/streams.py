"""Market WebSocket streams: aggTrade and markPrice, raw (/market/ws/<stream>) and combined (/market/stream).

Fan-out is built for throughput: ONE pump task per server advances time in small steps, asks the market once per
subscribed symbol for the trades in (last, now], serialises each event once into a finished WebSocket frame (server
frames are unmasked, so the same bytes serve every connection), and writes each connection's share of a step to its
transport in one call. A client whose send buffer overflows is disconnected, as Binance does, instead of stalling
the others. Connections also obey Binance's housekeeping: pings every 3 min, a drop after 10 min without a pong,
a 24 h lifetime, at most 10 incoming messages per second and 1024 streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from lsq.timelabels import DAY_MS
from simulator.clock import Clock
from simulator.faults import Faults
from simulator.market import MarketLike, TradeBlock

log = logging.getLogger(__name__)

MARK_PRICE_ALL = "!markPrice@arr"
PREFETCH_AHEAD_MS = 5 * 60_000
MARK_PRICE_ALL_1S = "!markPrice@arr@1s"
_SYMBOL_KINDS = ("aggTrade", "markPrice", "markPrice@1s")
# Binance counts every incoming PING, PONG and JSON message against the 10-per-second limit.
_COUNTED = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG)
MAX_REQUEST_ID = 2**64 - 1
_METHODS = "SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY"


@dataclass(frozen=True)
class StreamSettings:
    """Timings and limits of the WebSocket servers; tests shrink them to observe pings, drops and lifetimes."""

    step_ms: int = 25
    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    max_lifetime_s: float = 24 * 3600.0
    max_streams: int = 1024
    max_incoming_per_s: int = 10
    max_buffer_bytes: int = 8 * 1024 * 1024
    housekeeping_s: float = 1.0

    def __post_init__(self) -> None:
        if self.step_ms < 1 or self.ping_interval_s <= 0 or self.pong_timeout_s <= 0 or self.max_lifetime_s <= 0:
            raise ValueError(f"stream timings must be positive: {self}")


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A complete, unmasked server-to-client WebSocket frame (FIN set)."""
    n = len(payload)
    head = 0x80 | opcode
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return bytes((head, 126)) + n.to_bytes(2, "big") + payload
    return bytes((head, 127)) + n.to_bytes(8, "big") + payload


def json_frame(body: Any) -> bytes:
    return ws_frame(json.dumps(body, separators=(",", ":")).encode())


def parse_stream(name: object) -> str:
    """The canonical name of a market stream ('BTCUSDT@aggTrade' → 'btcusdt@aggTrade'); ValueError if unknown."""
    if not isinstance(name, str):
        raise ValueError(f"stream names must be strings, got {name!r}")
    if name in (MARK_PRICE_ALL, MARK_PRICE_ALL_1S):
        return name
    symbol, sep, kind = name.partition("@")
    if not sep or not symbol.isalnum() or kind not in _SYMBOL_KINDS:
        raise ValueError(
            f"unknown stream {name!r}; known: <symbol>@aggTrade, <symbol>@markPrice[@1s], !markPrice@arr[@1s]"
        )
    return f"{symbol.lower()}@{kind}"


def stream_symbol(stream: str) -> str | None:
    """BTCUSDT for 'btcusdt@aggTrade', None for the all-symbol streams."""
    return None if stream.startswith("!") else stream.partition("@")[0].upper()


class Connection:
    """One client socket. Writes go straight to the transport; frames were finished by the pump."""

    __slots__ = (
        "account_id",
        "closing",
        "combined",
        "incoming",
        "last_ping",
        "last_pong",
        "listen_key",
        "opened",
        "streams",
        "transport",
        "ws",
    )

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, combined: bool) -> None:
        self.ws = ws
        self.transport = transport
        self.combined = combined
        self.streams: set[str] = set()
        now = time.monotonic()
        self.opened = self.last_ping = self.last_pong = now
        self.incoming: deque[float] = deque()
        self.account_id: str | None = None
        self.listen_key: str | None = None
        self.closing = False

    @property
    def closed(self) -> bool:
        return self.ws.closed or self.transport.is_closing()

    def write(self, data: bytes, max_buffer: int) -> bool:
        """Send finished frames; a client that lets `max_buffer` bytes pile up is cut off. False if not sent."""
        if self.closed:
            return False
        if self.transport.get_write_buffer_size() > max_buffer:
            log.info("disconnecting a slow stream client (%d bytes unsent)", self.transport.get_write_buffer_size())
            self.transport.abort()
            return False
        self.transport.write(data)
        return True

    def too_chatty(self, limit_per_s: int) -> bool:
        now = time.monotonic()
        self.incoming.append(now)
        while self.incoming and now - self.incoming[0] > 1.0:
            self.incoming.popleft()
        return len(self.incoming) > limit_per_s


class WsHub:
    """What every stream server shares: the registry, the read loop, pings, pong timeouts, lifetimes and drops."""

    def __init__(self, clock: Clock, faults: Faults, settings: StreamSettings) -> None:
        self.clock = clock
        self.faults = faults
        self.settings = settings
        self.connections: set[Connection] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[bool]] = set()
        self._last_drop = time.monotonic()
        self.dropped = 0
        faults.on_drop(self.drop_all)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._housekeeping(), name=f"{type(self).__name__}-housekeeping"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.gather(
            *(c.ws.close(code=1001, message=b"server shutdown") for c in list(self.connections)),
            return_exceptions=True,
        )

    def drop_all(self) -> None:
        """Cut every connection without a close frame, as a network failure would."""
        for conn in list(self.connections):
            conn.transport.abort()
        self.dropped += 1

    def close_soon(self, conn: Connection, code: int, message: bytes) -> None:
        """A graceful close (close frame, then wait for the client's) without blocking the caller."""
        if conn.closing:
            return
        conn.closing = True
        task = asyncio.create_task(conn.ws.close(code=code, message=message))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def send(self, conn: Connection, body: Any) -> None:
        conn.write(json_frame(body), self.settings.max_buffer_bytes)

    async def _prepare(self, request: web.Request, combined: bool) -> Connection:
        ws = web.WebSocketResponse(timeout=2.0, autoping=False, compress=False, max_msg_size=65536)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        conn = Connection(ws, transport, combined)
        self.connections.add(conn)
        return conn

    async def _serve(self, conn: Connection, on_text: Callable[[Connection, str], None]) -> None:
        """Read until the client leaves; answer pings, record pongs, enforce the incoming message rate."""
        ws = conn.ws
        try:
            async for msg in ws:
                if msg.type in _COUNTED and conn.too_chatty(self.settings.max_incoming_per_s):
                    await ws.close(code=1008, message=b"Too many requests")
                    break
                if msg.type == WSMsgType.TEXT:
                    on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.send(conn, {"error": {"code": 3, "msg": "Invalid JSON: binary frames are not accepted"}})
                elif msg.type == WSMsgType.PING:
                    conn.write(ws_frame(msg.data, 0xA), self.settings.max_buffer_bytes)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong = time.monotonic()
        finally:
            self.connections.discard(conn)
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        """Release whatever the connection held (subscriptions)."""

    async def _housekeeping(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.housekeeping_s)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.closed or conn.closing:
                    continue
                if now - conn.opened >= s.max_lifetime_s:
                    self.close_soon(conn, 1000, b"connection lifetime reached")
                elif now - conn.last_pong >= s.pong_timeout_s:
                    log.info("dropping a stream client that did not pong for %.0f s", now - conn.last_pong)
                    conn.transport.abort()
                elif now - conn.last_ping >= s.ping_interval_s:
                    conn.last_ping = now
                    conn.write(ws_frame(b"", 0x9), s.max_buffer_bytes)
            every = self.faults.drop_every_s
            if every is not None and now - self._last_drop >= every:
                self._last_drop = now
                self.drop_all()
            elif every is None:
                self._last_drop = now
            self._tick_housekeeping()

    def _tick_housekeeping(self) -> None:
        """Hook for hub-specific periodic checks."""


class MarketStreamHub(WsHub):
    """aggTrade and markPrice streams for every connection, fed by one pump."""

    def __init__(
        self, market: MarketLike, clock: Clock, faults: Faults, settings: StreamSettings | None = None
    ) -> None:
        super().__init__(clock, faults, settings or StreamSettings())
        self.market = market
        self._symbols = frozenset(market_symbols(market))
        # (stream, combined) -> number of connections subscribed that way.
        self._refs: dict[tuple[str, bool], int] = {}
        self._agg_last_ms: dict[str, int] = {}
        # (due ms, frames): output waiting out an injected stream delay, in build order.
        self._pending: deque[tuple[int, dict[tuple[str, bool], bytes]]] = deque()
        self._mark_second = -1
        self._warned: dict[str, float] = {}
        self.frames_written = 0
        # The pump's own thread: REST work in any pool cannot queue in front of a step.
        self._pump_thread: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        await super().start()
        self._pump_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-stream-pump")
        self._tasks.append(asyncio.create_task(self._pump(), name="market-stream-pump"))
        self._tasks.append(asyncio.create_task(self._prefetch_days(), name="market-day-prefetch"))

    async def stop(self) -> None:
        await super().stop()
        if self._pump_thread is not None:
            self._pump_thread.shutdown(wait=False, cancel_futures=True)
            self._pump_thread = None

    async def _prefetch_days(self) -> None:
        """Generate tomorrow's trades a few minutes before UTC midnight, so the stream does not pause at midnight
        while every symbol's new day is generated."""
        while True:
            now = self.clock.now_ms()
            tomorrow = now - now % DAY_MS + DAY_MS
            await asyncio.sleep(max(0.0, (tomorrow - PREFETCH_AHEAD_MS - now) / 1000))
            try:
                await asyncio.to_thread(self.market.prefetch_day, tomorrow)
            except Exception:
                log.exception("prefetching the trades of the next UTC day failed")
            await asyncio.sleep(PREFETCH_AHEAD_MS / 1000)

    # -- connections -------------------------------------------------------------------------------------------------

    async def handle_raw(self, request: web.Request) -> web.StreamResponse:
        """/market/ws and /market/ws/<stream>[/<stream>...]: payloads unwrapped."""
        return await self._open(request, request.match_info.get("streams", ""), combined=False)

    async def handle_combined(self, request: web.Request) -> web.StreamResponse:
        """/market/stream?streams=a/b/c: each payload wrapped as {"stream": name, "data": payload}."""
        return await self._open(request, request.query.get("streams", ""), combined=True)

    async def handle_legacy(self, request: web.Request) -> web.StreamResponse:
        """/ws, /ws/<stream>, /stream: accepted and answered, but silent, as Binance's are since 2026-04-23."""
        conn = await self._prepare(request, combined=request.path.startswith("/stream"))
        silent: set[str] = set()

        def on_text(c: Connection, text: str) -> None:
            self._answer(c, text, silent.update, silent.difference_update, lambda: sorted(silent))

        await self._serve(conn, on_text)
        return conn.ws

    async def _open(self, request: web.Request, streams_path: str, combined: bool) -> web.StreamResponse:
        names = [n for n in streams_path.split("/") if n]
        try:
            streams = [parse_stream(n) for n in names]
        except ValueError as exc:
            body = json.dumps({"code": -1100, "msg": str(exc)})
            raise web.HTTPBadRequest(text=body, content_type="application/json") from None
        if len(set(streams)) > self.settings.max_streams:
            raise web.HTTPBadRequest(
                text=json.dumps({"code": -1100, "msg": f"at most {self.settings.max_streams} streams per connection"}),
                content_type="application/json",
            )
        conn = await self._prepare(request, combined)
        self._subscribe(conn, streams)
        await self._serve(conn, self._on_text)
        return conn.ws

    def _on_text(self, conn: Connection, text: str) -> None:
        self._answer(
            conn,
            text,
            lambda names: self._subscribe(conn, names),
            lambda names: self._unsubscribe(conn, names),
            lambda: sorted(conn.streams),
        )

    def _answer(
        self,
        conn: Connection,
        text: str,
        subscribe: Callable[[list[str]], None],
        unsubscribe: Callable[[list[str]], None],
        listing: Callable[[], list[str]],
    ) -> None:
        """One request from a client, answered in Binance's shape; bad input never closes the connection."""
        try:
            req = json.loads(text)
        except ValueError as exc:
            self.send(conn, {"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None})
            return
        if not isinstance(req, dict):
            self.send(conn, {"error": {"code": 2, "msg": "Invalid request: expected a JSON object"}, "id": None})
            return
        req_id = req.get("id")
        if not _valid_request_id(req_id):
            msg = "Invalid request: request ID must be an unsigned integer"
            self.send(conn, {"error": {"code": 2, "msg": msg}, "id": None})
            return
        method = req.get("method")
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            try:
                if not isinstance(params, list):
                    raise ValueError("params must be a list of stream names")
                streams = [parse_stream(p) for p in params]
            except ValueError as exc:
                self.send(conn, {"error": {"code": 2, "msg": f"Invalid request: {exc}"}, "id": req_id})
                return
            if method == "SUBSCRIBE":
                if len(set(listing()) | set(streams)) > self.settings.max_streams:
                    msg = f"Invalid request: at most {self.settings.max_streams} streams per connection"
                    self.send(conn, {"error": {"code": 2, "msg": msg}, "id": req_id})
                    return
                subscribe(streams)
            else:
                unsubscribe(streams)
            self.send(conn, {"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            self.send(conn, {"result": listing(), "id": req_id})
        elif method == "GET_PROPERTY" and params == ["combined"]:
            self.send(conn, {"result": conn.combined, "id": req_id})
        elif method == "SET_PROPERTY" and isinstance(params, list) and len(params) == 2 and params[0] == "combined":
            if not isinstance(params[1], bool):
                self.send(conn, {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": req_id})
                return
            self._set_combined(conn, params[1])
            self.send(conn, {"result": None, "id": req_id})
        else:
            msg = f"Invalid request: unknown variant {method!r}, expected one of {_METHODS}"
            self.send(conn, {"error": {"code": 2, "msg": msg}, "id": req_id})

    def _subscribe(self, conn: Connection, streams: Iterable[str]) -> None:
        now = self.clock.now_ms()
        for stream in streams:
            if stream in conn.streams:
                continue
            conn.streams.add(stream)
            key = (stream, conn.combined)
            self._refs[key] = self._refs.get(key, 0) + 1
            symbol = stream_symbol(stream)
            if stream.endswith("@aggTrade") and symbol in self._symbols and symbol not in self._agg_last_ms:
                # The stream (re)starts now: output of an earlier run still waiting out a delay would hand the new
                # subscriber trades from before a hole, so it is dropped.
                self._agg_last_ms[symbol] = now
                for _, waiting in self._pending:
                    waiting.pop((stream, False), None)
                    waiting.pop((stream, True), None)

    def _unsubscribe(self, conn: Connection, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream not in conn.streams:
                continue
            conn.streams.discard(stream)
            key = (stream, conn.combined)
            self._refs[key] -= 1
            if not self._refs[key]:
                del self._refs[key]
                symbol = stream_symbol(stream)
                if stream.endswith("@aggTrade") and (stream, not conn.combined) not in self._refs:
                    self._agg_last_ms.pop(symbol or "", None)

    def _set_combined(self, conn: Connection, combined: bool) -> None:
        streams = list(conn.streams)
        self._unsubscribe(conn, streams)
        conn.combined = combined
        self._subscribe(conn, streams)

    def _forget(self, conn: Connection) -> None:
        self._unsubscribe(conn, list(conn.streams))

    # -- the pump --------------------------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Each step: plan on the loop, build in the pump's own thread (a new day's trades can take a while to
        generate, REST must not wait for it, and the pump must not wait for REST), then fan out on the loop."""
        step = self.settings.step_ms / 1000
        while True:
            await asyncio.sleep(step)
            try:
                plan = self._plan(self.clock.now_ms())
                out, failed = await self._build_off_loop(plan) if plan.has_work else ({}, set())
                self._finish(plan, out, failed)
            except Exception:
                log.exception("market stream pump step failed")

    async def _build_off_loop(self, plan: _Plan) -> tuple[dict[tuple[str, bool], bytes], set[str]]:
        assert self._pump_thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._pump_thread, self._build, plan)

    def _plan(self, now_ms: int) -> _Plan:
        agg = [(symbol, last) for symbol, last in self._agg_last_ms.items() if now_ms > last]
        second = now_ms // 1000
        marks: list[str] = []
        if second != self._mark_second:
            every_3s = second // 3 != self._mark_second // 3
            self._mark_second = second
            marks = [s for s in {s for s, _ in self._refs} if _mark_due(s, every_3s)]
        variants = {s: self._variants(s) for s, _ in self._refs}
        return _Plan(now_ms, agg, marks, variants)

    def _build(self, plan: _Plan) -> tuple[dict[tuple[str, bool], bytes], set[str]]:
        """Pure work, safe off the loop: reads the plan's snapshot, the market and the fault settings only.

        Returns the frames and the symbols whose trades could not be read; those are retried next step, and one
        symbol's failure never holds up the others."""
        out: dict[tuple[str, bool], bytes] = {}
        failed: set[str] = set()
        for symbol, last in plan.agg:
            stream = f"{symbol.lower()}@aggTrade"
            try:
                # The market answers [start, end); the stream covers (last, now].
                block = self.market.trades(symbol, last + 1, plan.now_ms + 1)
            except Exception:
                self._warn(f"trades of {symbol}")
                failed.add(symbol)
                continue
            payloads = agg_trade_payloads(block, plan.now_ms, self.faults)
            if payloads:
                _frames(out, stream, payloads, plan.variants.get(stream, (False, False)))
        if plan.marks:
            self._build_mark_prices(out, plan)
        return out, failed

    def _warn(self, what: str) -> None:
        """Log a failing market read with its traceback, at most once a minute per subject."""
        now = time.monotonic()
        if now - self._warned.get(what, -math.inf) >= 60:
            self._warned[what] = now
            log.warning("market stream: reading %s failed", what, exc_info=True)

    def _finish(self, plan: _Plan, out: dict[tuple[str, bool], bytes], failed: set[str]) -> None:
        for symbol, _ in plan.agg:
            if symbol in self._agg_last_ms and symbol not in failed:
                self._agg_last_ms[symbol] = plan.now_ms
        self._pending.append((plan.now_ms + self.faults.stream_delay_ms, out))
        while self._pending and self._pending[0][0] <= plan.now_ms:
            self._dispatch(self._pending.popleft()[1])

    def _dispatch(self, out: dict[tuple[str, bool], bytes]) -> None:
        if not out:
            return
        limit = self.settings.max_buffer_bytes
        for conn in list(self.connections):
            combined = conn.combined
            chunks = [data for s in conn.streams if (data := out.get((s, combined)))]
            if chunks:
                conn.write(chunks[0] if len(chunks) == 1 else b"".join(chunks), limit)
                self.frames_written += len(chunks)

    def _variants(self, stream: str) -> tuple[bool, bool]:
        return (stream, False) in self._refs, (stream, True) in self._refs

    def _build_mark_prices(self, out: dict[tuple[str, bool], bytes], plan: _Plan) -> None:
        cache: dict[str, dict[str, Any] | None] = {}

        def update(symbol: str) -> dict[str, Any] | None:
            if symbol not in cache:
                try:
                    cache[symbol] = mark_price_update(self.market, symbol, plan.now_ms)
                except Exception:  # e.g. a replayed symbol before its first trade: no price yet
                    self._warn(f"the mark price of {symbol}")
                    cache[symbol] = None
            return cache[symbol]

        for stream in plan.marks:
            symbol = stream_symbol(stream)
            if symbol is None:
                body: Any = [u for s in sorted(self._symbols) if (u := update(s)) is not None]
            elif symbol in self._symbols:
                body = update(symbol)
            else:
                continue
            if not body:
                continue
            _frames(out, stream, [json.dumps(body, separators=(",", ":")).encode()], plan.variants[stream])

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "streams": sorted({s for s, _ in self._refs}),
            "frames_written": self.frames_written,
            "drops": self.dropped,
        }


@dataclass(frozen=True)
class _Plan:
    """A pump step's snapshot of the subscriptions, taken on the loop so the build can run elsewhere."""

    now_ms: int
    agg: list[tuple[str, int]]  # (SYMBOL, last_ms already streamed)
    marks: list[str]  # markPrice streams due this step
    variants: dict[str, tuple[bool, bool]]  # stream -> (raw wanted, combined wanted)

    @property
    def has_work(self) -> bool:
        return bool(self.agg or self.marks)


def _valid_request_id(req_id: object) -> bool:
    """Binance's futures streams take an unsigned 64-bit integer id (or none); strings, negatives, floats and booleans
    are refused, unlike the spot streams, which also take short strings."""
    if req_id is None:
        return True
    return isinstance(req_id, int) and not isinstance(req_id, bool) and 0 <= req_id <= MAX_REQUEST_ID


def _mark_due(stream: str, every_3s: bool) -> bool:
    if stream in (MARK_PRICE_ALL_1S,) or stream.endswith("@markPrice@1s"):
        return True
    return every_3s and (stream == MARK_PRICE_ALL or stream.endswith("@markPrice"))


def _frames(
    out: dict[tuple[str, bool], bytes], stream: str, payloads: list[bytes], variants: tuple[bool, bool]
) -> None:
    """Finished frames of a stream's payloads, raw and/or wrapped as {"stream": ..., "data": ...}."""
    raw, combined = variants
    if raw:
        out[(stream, False)] = b"".join([ws_frame(p) for p in payloads])
    if combined:
        head = b'{"stream":"' + stream.encode() + b'","data":'
        out[(stream, True)] = b"".join([ws_frame(head + p + b"}") for p in payloads])


# -- market adapters: the only places that know the market model's shapes ---------------------------------------------


def market_symbols(market: MarketLike) -> list[str]:
    return list(market.instruments)


def agg_trade_payloads(block: TradeBlock, event_ms: int, faults: Faults) -> list[bytes]:
    """The aggTrade payloads of a TradeBlock, in id order, with withheld ids removed and duplicates repeated."""
    if len(block) == 0:
        return []
    symbol = block.symbol
    keep = faults.withheld_mask(symbol, block.agg_id)
    if keep is not None:
        block = block[keep]
    dup = faults.duplicate_mask(len(block))
    if dup is not None:
        block = block[np.repeat(np.arange(len(block)), np.where(dup, 2, 1))]
    if len(block) == 0:
        return []
    head = f'{{"e":"aggTrade","E":{event_ms},"s":"{symbol}","a":'
    return [
        f'{head}{a},"p":"{p}","q":"{q}","f":{f},"l":{last},"T":{t},"m":{"true" if m else "false"}}}'.encode()
        for a, p, q, f, last, t, m in zip(
            block.agg_id.tolist(),
            block.prices(),
            block.quantities(),
            block.first_id.tolist(),
            block.last_id.tolist(),
            block.time_ms.tolist(),
            block.buyer_maker.tolist(),
            strict=True,
        )
    ]


def mark_price_update(market: MarketLike, symbol: str, now_ms: int) -> dict[str, Any]:
    """A markPriceUpdate event from the market's premium index (the same numbers REST /premiumIndex shows)."""
    p = market.premium_index(symbol, now_ms)
    return {
        "e": "markPriceUpdate",
        "E": now_ms,
        "s": symbol,
        "p": p["markPrice"],
        "i": p["indexPrice"],
        "P": p["estimatedSettlePrice"],
        "r": p["lastFundingRate"],
        "T": p["nextFundingTime"],
    }
