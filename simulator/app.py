"""The simulator's server: one aiohttp application on one port serving Binance's REST API and WebSocket streams.

Every REST `Endpoint` (simulator/routing.py) is mounted behind ONE middleware that applies Binance's checks in
Binance's order: IP ban (418) → request weight (429 -1003) → API key (-2014/-2015) → for SIGNED endpoints timestamp,
recvWindow and the HMAC signature over the exact bytes received (-1102/-1131/-1021/-1022) → order-rate limits per
account (429 -1015) → injected faults → handler. Every response carries X-MBX-USED-WEIGHT-1M, order endpoints also
X-MBX-ORDER-COUNT-10S/-1M, and every failure has Binance's {"code", "msg"} shape.

Also served: market streams (/market/ws, /market/stream, silent legacy /ws and /stream), the user-data stream
(/private/ws), public-data files (/data/...), and, for loopback clients only, GET|POST /admin/faults,
POST /admin/faults/reset, GET /admin/stats, GET /admin/orders (every order request and what became of it),
GET /admin/equity (each account's equity as served by every account answer) and POST /admin/transfer (deposit or
withdraw USDT).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from lsq.config import Account
from simulator import memory
from simulator.auth import (
    KeyLookup,
    authenticate_key,
    check_timestamp,
    split_signature,
    static_key_lookup,
    verify_signature,
)
from simulator.clock import Clock
from simulator.errors import BinanceError
from simulator.faults import Faults, order_fault_error, rest_fault_error
from simulator.history_files import HistoryFiles, resolve_history_path
from simulator.market import MarketLike
from simulator.market_endpoints import MarketWork, market_endpoints
from simulator.ratelimit import OrderCounter, QuotaLimiter, RateLimits, WeightLimiter
from simulator.routing import Endpoint, Request, Security
from simulator.streams import MarketStreamHub, StreamSettings
from simulator.trading.endpoints import ORDER_PLACEMENT_PATHS, trading_endpoints
from simulator.trading.engine import Exchange
from simulator.trading.order_requests import OrderRequestLog
from simulator.trading.params import parse_batch
from simulator.user_stream import UserStreamHub

log = logging.getLogger(__name__)

MARKET_HUB = web.AppKey("market_hub", MarketStreamHub)
USER_HUB = web.AppKey("user_hub", UserStreamHub)
FAULTS = web.AppKey("faults", Faults)
ENGINE_TICK_S = 0.5
MEMORY_TRIM_S = 10.0
HISTORY_FILES_CACHED = 8  # BULK_CONCURRENCY files in flight, each fetched with its .CHECKSUM: ~15 MB a busy day
# Seconds a connection may stay without a complete request head (new, or idle between keep-alive requests).
IDLE_TIMEOUT_S = 20.0
_PASS_THROUGH = ("/admin/", "/data/", "/market/", "/private/", "/ws", "/stream")


def _json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(error: BinanceError, headers: dict[str, str] | None = None) -> web.Response:
    return _json_response(error.body(), error.http_status, headers)


def invalid_path(path: str, method: str, status: int) -> BinanceError:
    return BinanceError(-5000, f"Path {path}, Method {method} is invalid", status)


def _parse_pairs(raw: str, where: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(raw, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise BinanceError(-1100, f"Illegal characters found in the {where}.") from None


def merge_params(raw_query: str, raw_body: str) -> dict[str, str]:
    """Body parameters overlaid by query parameters (the query string wins); a name twice in one part is -1101."""
    merged: dict[str, str] = {}
    for raw, where in ((raw_body, "request body"), (raw_query, "query string")):
        pairs = _parse_pairs(raw, where)
        names = [k for k, _ in pairs]
        if len(names) != len(set(names)):
            raise BinanceError(-1101, "Duplicate values for a parameter detected.")
        merged.update(pairs)
    merged.pop("signature", None)
    return merged


@dataclass
class _Outcome:
    """What became of one request, for the order-request view."""

    now: int
    params: Mapping[str, str] = field(default_factory=dict)
    account_id: str | None = None
    body: Any = None  # the handler's answer, when it ran
    error: BinanceError | None = None  # the error answered, if any
    fault: str | None = None  # the injected fault that applied, if any
    hang_s: float | None = None  # set when the answer is withheld and the connection dropped

    def refuse(self, error: BinanceError, headers: dict[str, str]) -> web.Response:
        self.error = error
        return error_response(error, headers)


class RestGateway:
    """The REST half of the server: endpoint table, limits and the check pipeline."""

    def __init__(
        self, endpoints: Iterable[Endpoint], clock: Clock, faults: Faults, limits: RateLimits, key_lookup: KeyLookup
    ) -> None:
        self.table: dict[str, dict[str, Endpoint]] = {}
        for ep in endpoints:
            methods = self.table.setdefault(ep.path, {})
            if ep.method in methods:
                raise ValueError(f"endpoint {ep.method} {ep.path} is declared twice")
            methods[ep.method] = ep
        self.clock = clock
        self.faults = faults
        self.limits = limits
        self.weights = WeightLimiter(limits)
        self.quotas = QuotaLimiter(limits)
        self.orders = OrderCounter(limits)
        self.key_lookup = key_lookup
        self.order_log = OrderRequestLog()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        methods = self.table.get(request.path)
        if methods is not None:
            return await self.serve(request, methods)
        if request.path.startswith(_PASS_THROUGH):
            try:
                return await handler(request)
            except web.HTTPMethodNotAllowed:
                return error_response(invalid_path(request.path, request.method, 405))
            except web.HTTPNotFound:
                return error_response(invalid_path(request.path, request.method, 404))
        used = {"X-MBX-USED-WEIGHT-1M": str(self.weights.used(request.remote or "unknown", self.clock.now_ms()))}
        return error_response(invalid_path(request.path, request.method, 404), used)

    async def serve(self, request: web.Request, methods: dict[str, Endpoint]) -> web.StreamResponse:
        outcome = _Outcome(now=self.clock.now_ms())
        response = await self._serve(request, methods, outcome)
        if request.method == "POST" and request.path in ORDER_PLACEMENT_PATHS:
            self._journal(request.path, outcome, None if outcome.hang_s is not None else response.status)
        if outcome.hang_s is not None:  # timeout_after_place: the order exists, the client never hears of it
            await asyncio.sleep(outcome.hang_s)
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _serve(self, request: web.Request, methods: dict[str, Endpoint], outcome: _Outcome) -> web.Response:
        now = outcome.now
        ip = request.remote or "unknown"
        headers: dict[str, str] = {}
        endpoint = methods.get(request.method)
        if endpoint is None:
            headers["X-MBX-USED-WEIGHT-1M"] = str(self.weights.used(ip, now))
            return outcome.refuse(invalid_path(request.path, request.method, 405), headers)
        try:
            raw_query = request.rel_url.raw_query_string
            raw_body = (await request.read()).decode("utf-8") if request.can_read_body else ""
        except UnicodeDecodeError:
            return outcome.refuse(BinanceError(-1100, "Illegal characters found in the request body."), headers)
        params: dict[str, str] = {}
        try:
            params = merge_params(raw_query, raw_body)
            weight = endpoint.weight_for(params)
        except BinanceError as exc:
            params, weight, early = {}, 1, exc
        except Exception:  # a weight rule choking on a bad value: the handler's validation names the problem
            weight, early = 1, None
        else:
            early = None
        outcome.params = params
        admission = self.weights.admit(ip, weight, now)
        headers["X-MBX-USED-WEIGHT-1M"] = str(admission.used_weight)
        if admission.error is not None:
            headers["Retry-After"] = str(admission.retry_after_s)
            return outcome.refuse(admission.error, headers)
        if endpoint.quota is not None and (refused := self.quotas.admit(endpoint.quota, ip, now)) is not None:
            assert refused.error is not None
            headers["Retry-After"] = str(refused.retry_after_s)
            return outcome.refuse(refused.error, headers)
        try:
            if early is not None:
                raise early
            account_id = self._authenticate(request, endpoint, params, raw_query, raw_body, now)
            outcome.account_id = account_id
            if endpoint.counts_as_order and account_id is not None:
                orders = self.orders.admit(account_id, now, endpoint.order_count)
                headers["X-MBX-ORDER-COUNT-10S"] = str(orders.count_10s)
                headers["X-MBX-ORDER-COUNT-1M"] = str(orders.count_1m)
                if orders.error is not None:
                    raise orders.error
            placing = endpoint.counts_as_order and request.method == "POST"
            order_fault = self.faults.take_order_fault(account_id) if placing else None
            if order_fault is not None:
                outcome.fault = order_fault.kind
                before = order_fault_error(order_fault, ip, now)
                if before is not None:
                    if before.http_status in (429, 418):
                        headers["Retry-After"] = str(order_fault.retry_after_s)
                    raise before
            fault = self.faults.rest_fault()
            fault_after = fault == 503 and placing
            if fault == 429:
                headers["Retry-After"] = "1"  # Binance sends it with every 429
            if fault is not None:
                outcome.fault = f"rest_error_{fault}"
                if not fault_after:
                    raise rest_fault_error(fault)
            body = await endpoint.handler(Request(request.method, request.path, params, account_id, now))
            outcome.body = body
            if order_fault is not None and order_fault.kind == "timeout_after_place":
                outcome.hang_s = order_fault.hang_s
            if fault_after or (order_fault is not None and order_fault.kind == "unknown_after_place"):
                raise rest_fault_error(503)
        except BinanceError as exc:
            return outcome.refuse(exc, headers)
        except Exception:
            log.exception("handler of %s %s failed", request.method, request.path)
            error = BinanceError(-1000, "An unknown error occurred while processing the request.", 500)
            return outcome.refuse(error, headers)
        return _json_response(body, 200, headers)

    def _journal(self, path: str, outcome: _Outcome, http_status: int | None) -> None:
        """One entry per order of the request in the order-request view (a batch has several)."""
        params = outcome.params
        if path == "/fapi/v1/batchOrders":
            try:
                orders: list[Mapping[str, str]] = list(parse_batch(params))
            except BinanceError:
                orders = [params]
        else:
            orders = [params]
        answers = outcome.body if isinstance(outcome.body, list) else [outcome.body] * len(orders)
        for order, answer in zip(orders, answers, strict=False):
            if isinstance(answer, dict) and "orderId" in answer:
                result, code, order_id, client_id = "placed", None, answer["orderId"], answer.get("clientOrderId")
            elif isinstance(answer, dict) and "code" in answer:
                result, code, order_id, client_id = "rejected", answer["code"], None, None
            elif answer is not None:  # order/test answers {}
                result, code, order_id, client_id = "tested", None, None, None
            else:
                refused = outcome.error
                result = "fault" if outcome.fault is not None else "rejected"
                code, order_id, client_id = (refused.code if refused else None), None, None
            if outcome.error is not None and result == "placed":
                code = outcome.error.code  # placed, but the client was answered an error
            self.order_log.record(
                time=outcome.now,
                account=outcome.account_id,
                endpoint=path,
                order=order,
                result=result,
                code=code,
                http_status=http_status,
                order_id=order_id,
                client_order_id=client_id,
                fault=outcome.fault,
            )

    def _authenticate(
        self, request: web.Request, endpoint: Endpoint, params: dict[str, str], raw_query: str, raw_body: str, now: int
    ) -> str | None:
        if endpoint.security is Security.NONE:
            return None
        account_id, secret = authenticate_key(request.headers.get("X-MBX-APIKEY"), self.key_lookup)
        if endpoint.security is Security.SIGNED:
            check_timestamp(params, now)
            payload, signature = split_signature(raw_query, raw_body)
            verify_signature(secret, payload, signature)
        return account_id


def _is_loopback(remote: str | None) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _loopback_only(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _is_loopback(request.remote):
            return _json_response({"error": "the admin API is served on loopback only"}, 403)
        return await handler(request)

    return guarded


def _admin_routes(
    app: web.Application, faults: Faults, clock: Clock, order_log: OrderRequestLog, engine: Exchange | None
) -> None:
    async def get_faults(request: web.Request) -> web.Response:
        return _json_response(faults.state())

    async def post_faults(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            faults.update(changes)
        except (ValueError, TypeError) as exc:
            return _json_response({"error": f"bad fault settings: {exc}"}, 400)
        return _json_response(faults.state())

    async def reset_faults(request: web.Request) -> web.Response:
        faults.reset()
        return _json_response(faults.state())

    async def stats(request: web.Request) -> web.Response:
        return _json_response(
            {
                "server_time_ms": clock.now_ms(),
                "market_streams": request.app[MARKET_HUB].stats(),
                "user_streams": request.app[USER_HUB].stats(),
            }
        )

    app.router.add_get("/admin/faults", _loopback_only(get_faults))
    app.router.add_post("/admin/faults", _loopback_only(post_faults))
    app.router.add_post("/admin/faults/reset", _loopback_only(reset_faults))

    async def order_requests(request: web.Request) -> web.Response:
        try:
            entries = order_log.query(dict(request.query))
        except ValueError as exc:
            return _json_response({"error": f"bad filter: {exc}"}, 400)
        return _json_response({"count": len(entries), "requests": entries})

    async def transfer(request: web.Request) -> web.Response:
        """Body {account, type: DEPOSIT | WITHDRAW, amount}: books a TRANSFER as Binance does (Exchange.transfer)."""
        if engine is None:
            return _json_response({"error": "this simulator runs without accounts"}, 404)
        try:
            body = await request.json()
            if not isinstance(body, dict) or not {"account", "type", "amount"} <= set(body):
                raise ValueError("the body must be a JSON object {account, type: DEPOSIT | WITHDRAW, amount}")
            try:
                amount = Decimal(str(body["amount"]))
            except InvalidOperation:
                raise ValueError(f"amount must be a number, got {body['amount']!r}") from None
            done = await asyncio.to_thread(engine.transfer, str(body["account"]), body["type"], amount, clock.now_ms())
        except ValueError as exc:
            return _json_response({"error": f"bad transfer: {exc}"}, 400)
        return _json_response(done)

    app.router.add_get("/admin/stats", _loopback_only(stats))
    app.router.add_post("/admin/transfer", _loopback_only(transfer))
    app.router.add_get("/admin/orders", _loopback_only(order_requests))

    async def equity(request: web.Request) -> web.Response:
        if engine is None:
            return _json_response({"error": "this simulator runs without accounts"}, 404)
        try:
            entries = engine.equity_log.query(dict(request.query))
        except ValueError as exc:
            return _json_response({"error": f"bad filter: {exc}"}, 400)
        return _json_response({"count": len(entries), "samples": entries})

    app.router.add_get("/admin/equity", _loopback_only(equity))


def build_app(
    market: MarketLike,
    clock: Clock,
    faults: Faults,
    engine: Exchange | None,
    limits: RateLimits,
    *,
    accounts: Sequence[Account] = (),
    stream_settings: StreamSettings | None = None,
    user_hub: UserStreamHub | None = None,
    history_cache: Path | None = None,
) -> web.Application:
    """The whole exchange as one aiohttp Application.

    `engine` (the trading engine) adds the signed endpoints and resolves API keys and listen keys; without it the
    server is market-data only and authenticates `accounts`. Pass `user_hub` when the engine was built with its
    `publish`, so both share it. `history_cache` keeps every public-data file built in that directory (one
    market's: `history_files.market_cache_dir`).
    """
    settings = stream_settings or StreamSettings()
    work = MarketWork()
    endpoints = list(market_endpoints(market, clock, limits.exchange_info(), work))
    if engine is not None:
        endpoints += trading_endpoints(engine)
        key_lookup: KeyLookup = engine.secret_for_api_key
    else:
        key_lookup = static_key_lookup(accounts)
    gateway = RestGateway(endpoints, clock, faults, limits, key_lookup)
    market_hub = MarketStreamHub(market, clock, faults, settings)
    users = user_hub or UserStreamHub(clock, faults, settings)
    if engine is not None:
        users.lookup = engine.account_for_listen_key

    app = web.Application(middlewares=[gateway.middleware], client_max_size=1024 * 1024)
    app[MARKET_HUB] = market_hub
    app[USER_HUB] = users
    app[FAULTS] = faults

    history_files = HistoryFiles(HISTORY_FILES_CACHED, history_cache)

    async def history(request: web.Request) -> web.Response:
        path, now = request.match_info["path"], clock.now_ms()
        found = await work.run(lambda: resolve_history_path(market, path, now, history_files))
        if found is None:
            return error_response(invalid_path(request.path, request.method, 404))
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/data/{path:.*}", history)
    app.router.add_get("/market/ws", market_hub.handle_raw)
    app.router.add_get("/market/ws/{streams:.+}", market_hub.handle_raw)
    app.router.add_get("/market/stream", market_hub.handle_combined)
    for legacy in ("/ws", "/ws/{tail:.+}", "/stream"):
        app.router.add_get(legacy, market_hub.handle_legacy)
    app.router.add_get("/private/ws", users.handle)
    app.router.add_get("/private/ws/{key}", users.handle)
    _admin_routes(app, faults, clock, gateway.order_log, engine)

    ticker: list[asyncio.Task[None]] = []

    async def start_hubs(app: web.Application) -> None:
        await market_hub.start()
        await users.start()
        ticker.append(asyncio.create_task(_trim_memory(MEMORY_TRIM_S), name="memory-trim"))
        if engine is not None:
            ticker.append(asyncio.create_task(_tick_engine(engine, clock, ENGINE_TICK_S), name="engine-tick"))

    async def stop_hubs(app: web.Application) -> None:
        for task in ticker:
            task.cancel()
        await market_hub.stop()
        await users.stop()

    async def stop_work(app: web.Application) -> None:
        work.close()

    app.on_startup.append(start_hubs)
    app.on_shutdown.append(stop_hubs)
    app.on_cleanup.append(stop_work)
    return app


async def _trim_memory(every_s: float) -> None:
    """Hand memory freed after a history read (a day of trades is tens of MB of temporaries) back to the system."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(memory.trim)


async def _tick_engine(engine: Exchange, clock: Clock, every_s: float) -> None:
    """Let time pass for the accounts (resting orders, funding, listen-key expiry) off the event loop's thread."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(engine.on_tick, clock.now_ms())
        except Exception:
            log.exception("trading engine tick failed")


def listening_message(host: str, port: int) -> str:
    return f"simulator listening on http://{host}:{port} (REST) and ws://{host}:{port} (streams)"


async def serve(
    host: str,
    port: int,
    app_factory: Callable[[], web.Application],
    *,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> None:
    """Run the application until `stop` is set (or SIGINT/SIGTERM when no event is given), then shut down cleanly.

    A connection that has not sent a complete request head within `idle_timeout_s` of opening (or of its last
    response) is closed: half-open or silent clients must not pile up (aiohttp's own default is an hour)."""
    if not idle_timeout_s > 0:
        raise ValueError(f"idle timeout must be positive, got {idle_timeout_s}")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    runner = web.AppRunner(
        app_factory(), access_log=None, handle_signals=False, shutdown_timeout=2.0, keepalive_timeout=idle_timeout_s
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        if ready is not None:
            ready(bound)
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()


class BackgroundServer:
    """The server on its own event loop in a daemon thread, for tests, benchmarks and embedding."""

    def __init__(
        self,
        app_factory: Callable[[], web.Application],
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.idle_timeout_s = idle_timeout_s
        self._factory = app_factory
        self.app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lsq-simulator", daemon=True)

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(port: int) -> None:
                self.port = port
                self._ready.set()

            def factory() -> web.Application:
                self.app = self._factory()
                return self.app

            await serve(self.host, self.port, factory, ready=ready, stop=self._stop, idle_timeout_s=self.idle_timeout_s)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"simulator did not start within {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error!r}") from self._error
        return self

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn` on the server's loop (hub and fault state belong to it) and return its result."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
