"""The web monitor: an aiohttp app serving the page, its static files, the JSON API behind every panel and an event
stream (SSE) that names the panels whose stored files changed, so the page re-renders them within about a second.

Reads go through `monitoring.web.data` (blocking file reads, run in a worker thread). Authentication: with a token
configured every request must carry it (`Authorization: Bearer T`, a `token` cookie, or `?token=T`, which sets the
cookie); `lsq monitor` refuses to bind beyond loopback without one. Nothing served includes a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import LOOPBACK_HOSTS, Settings
from monitoring.web import data

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
POLL_SECONDS = 0.5  # how often stored files are checked for changes (the 2 s update promise has room to spare)
SYSTEM_EVERY_SECONDS = 5.0
KEEPALIVE_SECONDS = 15.0
TOKEN_COOKIE = "token"

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
TOKEN = web.AppKey("token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EventHub:
    """Polls the panels' fingerprints and fans changes out to every open event stream."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=100)
        self.queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.queues.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        for queue in list(self.queues):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page misses updates, never the app
                queue.put_nowait(event)

    async def run(self) -> None:
        previous = await asyncio.to_thread(data.fingerprints, self.settings)
        since_system = 0.0
        while True:
            await asyncio.sleep(POLL_SECONDS)
            since_system += POLL_SECONDS
            try:
                current = await asyncio.to_thread(data.fingerprints, self.settings)
            except OSError as exc:
                log.warning("cannot check the stored files: %s", exc)
                continue
            changed = sorted(k for k in current.keys() | previous.keys() if current.get(k) != previous.get(k))
            if since_system >= SYSTEM_EVERY_SECONDS:
                changed.append("system")
                since_system = 0.0
            if changed:
                self.publish({"panels": changed})
            previous = current

    async def end_streams(self, _app: web.Application) -> None:
        """On shutdown: every open event stream ends now, so stopping never waits on a page left open."""
        for queue in list(self.queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def start(self, _app: web.Application) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self, _app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


HUB = web.AppKey("hub", EventHub)


# --- auth and request hygiene -----------------------------------------------------------------------------------


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token (when one is set) on every request; state changes only from this page's own origin as JSON,
    so another site open in the same browser cannot press the kill switch (CSRF) or read the API (DNS rebinding)."""
    token = request.app[TOKEN]
    if token:
        presented = _presented_token(request) or ""
        if not hmac.compare_digest(presented.encode(), token.encode()):
            return web.json_response({"error": "missing or wrong token"}, status=401)
    elif (request.host.rsplit(":", 1)[0].strip("[]") or "") not in LOOPBACK_HOSTS:
        return web.json_response({"error": "loopback only: open it as 127.0.0.1 or localhost"}, status=403)
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and urlparse(origin).netloc != request.host:
            return web.json_response({"error": "cross-origin request refused"}, status=403)
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON (Content-Type: application/json)"}, status=415)
    if token and request.query.get("token") and request.path == "/":
        # the page's own fetches and event stream carry the cookie; the token leaves the address bar and history
        response: web.StreamResponse = web.HTTPSeeOther("/")
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response
    return await handler(request)


class AccessLogger(AbstractAccessLogger):
    """One line a request without the query string, so a `?token=` never reaches a log."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.3fs", request.remote, request.method, request.path, response.status, time)


# --- handlers ---------------------------------------------------------------------------------------------------


def _settings(request: web.Request) -> Settings:
    return request.app[SETTINGS]


def _now(request: web.Request) -> int:
    return request.app[CLOCK].now_ms()


def _account(request: web.Request) -> str:
    account_id = request.match_info["account"]
    if account_id not in data.accounts(_settings(request)):
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown account {account_id!r}"}), content_type="application/json"
        )
    return account_id


def _int_query(request: web.Request, name: str, default: int | None) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be an integer, got {text!r}"}), content_type="application/json"
        ) from None


async def _json(fn: Callable[..., Any], *args: Any) -> web.Response:
    return web.json_response(await asyncio.to_thread(fn, *args))


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def api_index(_request: web.Request) -> web.Response:
    return web.json_response({"endpoints": [f"{r[0]} {r[1]}" for r in ENDPOINTS]})


async def api_status(request: web.Request) -> web.Response:
    return await _json(data.process_status, _settings(request), _now(request))


async def api_system(request: web.Request) -> web.Response:
    return await _json(data.system, _settings(request))


async def api_alerts(request: web.Request) -> web.Response:
    return await _json(data.alerts, _settings(request), _now(request))


def _all_summaries(settings: Settings, now_ms: int) -> list[dict[str, Any]]:
    return [data.account_summary(settings, a, now_ms) for a in data.accounts(settings)]


async def api_accounts(request: web.Request) -> web.Response:
    return await _json(_all_summaries, _settings(request), _now(request))


async def api_account(request: web.Request) -> web.Response:
    return await _json(data.account_summary, _settings(request), _account(request), _now(request))


async def api_positions(request: web.Request) -> web.Response:
    return await _json(data.positions, _settings(request), _account(request))


async def api_orders(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 100) or 100
    return await _json(data.orders, _settings(request), _account(request), _now(request), limit)


async def api_fills(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 100) or 100
    return await _json(data.fills, _settings(request), _account(request), _now(request), limit)


async def api_executions(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 50) or 50
    return await _json(data.executions, _settings(request), _account(request), _now(request), limit)


async def api_equity(request: web.Request) -> web.Response:
    start = _int_query(request, "start", None)
    end = _int_query(request, "end", None)
    return await _json(data.equity, _settings(request), _account(request), start, end)


async def api_report(request: web.Request) -> web.Response:
    settings, account_id = _settings(request), _account(request)
    try:
        start, end = data.report_range(settings, request.query.get("day") or None, _now(request))
    except ValueError:
        return web.json_response({"error": "day must be YYYY-MM-DD"}, status=400)
    start = _int_query(request, "start", start) or start
    end = _int_query(request, "end", end) or end
    table = request.query.get("table", "by_symbol")
    if table not in data.REPORT_TABLES:
        return web.json_response({"error": f"table must be one of {list(data.REPORT_TABLES)}"}, status=400)
    try:
        report = await asyncio.to_thread(data.report, settings, account_id, start, end)
    except ValueError as exc:  # an empty range
        return web.json_response({"error": str(exc)}, status=400)
    if request.query.get("format") == "csv":
        name = f"{account_id}_report_{table}_{start}_{end}.csv"
        return web.Response(
            text=getattr(report, table).write_csv(),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return web.Response(text=report.to_json(), content_type="application/json")


async def api_halt(request: web.Request) -> web.Response:
    account_id = _account(request)
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    mode = body.get("mode") if isinstance(body, dict) else None
    if mode not in data.HALT_MODES:
        return web.json_response({"error": f"mode must be one of {list(data.HALT_MODES)}"}, status=400)
    state = await asyncio.to_thread(
        data.set_halt, _settings(request), account_id, mode, request.app[CLOCK], "web monitor"
    )
    log.warning("kill switch: %s set to %s from the web monitor (%s)", account_id, mode, request.remote)
    return web.json_response(state)


async def api_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `change` with {"panels": [...]} whenever a panel's stored files change."""
    hub = request.app[HUB]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    queue = hub.subscribe()
    try:
        await response.write(b"retry: 1000\nevent: hello\ndata: {}\n\n")
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                break
            await response.write(f"event: change\ndata: {json.dumps(event)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(queue)
    return response


ENDPOINTS: list[tuple[str, str, Handler]] = [
    ("GET", "/api", api_index),
    ("GET", "/api/status", api_status),
    ("GET", "/api/system", api_system),
    ("GET", "/api/alerts", api_alerts),
    ("GET", "/api/accounts", api_accounts),
    ("GET", "/api/accounts/{account}", api_account),
    ("GET", "/api/accounts/{account}/positions", api_positions),
    ("GET", "/api/accounts/{account}/orders", api_orders),
    ("GET", "/api/accounts/{account}/fills", api_fills),
    ("GET", "/api/accounts/{account}/executions", api_executions),
    ("GET", "/api/accounts/{account}/equity", api_equity),
    ("GET", "/api/accounts/{account}/report", api_report),
    ("POST", "/api/accounts/{account}/halt", api_halt),
    ("GET", "/api/events", api_events),
]


def build_app(settings: Settings, token: str | None = None, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[TOKEN] = token or ""
    hub = EventHub(settings)
    app[HUB] = hub
    app.on_startup.append(hub.start)
    app.on_shutdown.append(hub.end_streams)
    app.on_cleanup.append(hub.stop)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    for method, path, handler in ENDPOINTS:
        app.router.add_route(method, path, handler)
    return app
