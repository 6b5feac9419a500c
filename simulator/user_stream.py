"""The user-data WebSocket: /private/ws?listenKey=K and /private/ws/<K>.

The trading engine calls `UserStreamHub.publish(account_id, event)` for ORDER_TRADE_UPDATE and ACCOUNT_UPDATE; every
connection opened with one of that account's listen keys receives the event, serialised once. Listen keys belong to
the engine (`account_for_listen_key(key, now_ms)`); when a connection's key stops resolving it gets
`listenKeyExpired` and is closed, as on Binance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from simulator.clock import Clock
from simulator.faults import Faults
from simulator.streams import StreamSettings, WsHub, json_frame

# Resolves a listen key to its account at a server time, or None when unknown or expired.
ListenKeyLookup = Callable[[str, int], str | None]


def _no_keys(key: str, now_ms: int) -> str | None:
    return None


class UserStreamHub(WsHub):
    """Per-account fan-out of user-data events; thread-safe `publish` so an engine may call it from anywhere."""

    def __init__(
        self, clock: Clock, faults: Faults, settings: StreamSettings | None = None, lookup: ListenKeyLookup = _no_keys
    ) -> None:
        super().__init__(clock, faults, settings or StreamSettings())
        self.lookup = lookup
        self._loop: asyncio.AbstractEventLoop | None = None
        self.events_published = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await super().start()

    def publish(self, account_id: str, event: dict[str, Any]) -> None:
        """Send `event` to every connection of `account_id` (no-op when none is connected).

        Always through the loop's FIFO once it runs, from the loop thread too: events from the engine's tick thread
        and from request handlers then go out in the order the engine committed them.
        """
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._publish_now, account_id, event)
        else:
            self._publish_now(account_id, event)

    def _publish_now(self, account_id: str, event: dict[str, Any]) -> None:
        expired = event.get("listenKey") if event.get("e") == "listenKeyExpired" else None
        frame: bytes | None = None
        for conn in list(self.connections):
            if conn.account_id != account_id or (expired is not None and conn.listen_key != expired):
                continue
            frame = frame or json_frame(event)
            conn.write(frame, self.settings.max_buffer_bytes)
            if expired is not None:
                conn.listen_key = None
                self.close_soon(conn, 1000, b"listenKey expired")
        self.events_published += 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info.get("key") or request.query.get("listenKey", "")
        conn = await self._prepare(request, combined=False)
        account = self.lookup(key, self.clock.now_ms()) if key else None
        if account is None:
            self.send(conn, {"error": {"code": -1125, "msg": "This listenKey does not exist."}})
            await conn.ws.close(code=1008, message=b"invalid listenKey")
            self.connections.discard(conn)
            return conn.ws
        conn.account_id, conn.listen_key = account, key
        await self._serve(conn, lambda c, text: None)
        return conn.ws

    def _tick_housekeeping(self) -> None:
        now_ms = self.clock.now_ms()
        for conn in list(self.connections):
            if conn.listen_key is None or conn.closed:
                continue
            if self.lookup(conn.listen_key, now_ms) is None:
                self.send(conn, {"e": "listenKeyExpired", "E": now_ms, "listenKey": conn.listen_key})
                conn.listen_key = None
                self.close_soon(conn, 1000, b"listenKey expired")

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "events_published": self.events_published,
        }
