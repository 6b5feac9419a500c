"""The user data stream: a listen key (created, kept alive every 30 minutes, renewed when it expires) and the
WebSocket `/private/ws?listenKey=K`, reconnected after any drop, yielding typed ORDER_TRADE_UPDATE and
ACCOUNT_UPDATE events.

The stream is a latency aid, never the source of truth: an event lost during a reconnect is recovered by the REST
reconciliation (positionRisk, order queries, userTrades) that executors run after any doubt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.exchange.rules import to_decimal

log = logging.getLogger(__name__)

KEEPALIVE_S = 30 * 60.0


@dataclass(frozen=True)
class OrderUpdate:
    event_time: int
    symbol: str
    client_order_id: str
    order_id: int
    side: str
    position_side: str
    order_type: str
    execution_type: str  # NEW, TRADE, CANCELED, EXPIRED, ...
    status: str
    orig_qty: Decimal
    last_qty: Decimal
    cum_qty: Decimal
    last_price: Decimal
    avg_price: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int
    maker: bool
    reduce_only: bool
    realized_pnl: Decimal


@dataclass(frozen=True)
class BalanceUpdate:
    asset: str
    wallet_balance: Decimal
    cross_wallet_balance: Decimal


@dataclass(frozen=True)
class PositionUpdate:
    symbol: str
    position_side: str
    amount: Decimal
    entry_price: Decimal
    unrealized_pnl: Decimal


@dataclass(frozen=True)
class AccountUpdate:
    event_time: int
    reason: str
    balances: tuple[BalanceUpdate, ...]
    positions: tuple[PositionUpdate, ...]


@dataclass(frozen=True)
class ListenKeyExpired:
    event_time: int


UserEvent = OrderUpdate | AccountUpdate | ListenKeyExpired


def _d(raw: Mapping[str, Any], key: str) -> Decimal:
    return to_decimal(raw.get(key, "0") or "0", key)


def parse_user_event(raw: Mapping[str, Any]) -> UserEvent | None:
    """A typed event, or None for kinds we do not use (MARGIN_CALL, TRADE_LITE, ...)."""
    kind = raw.get("e")
    if kind == "ORDER_TRADE_UPDATE":
        o = raw["o"]
        return OrderUpdate(
            event_time=int(raw["E"]),
            symbol=str(o["s"]),
            client_order_id=str(o.get("c", "")),
            order_id=int(o["i"]),
            side=str(o["S"]),
            position_side=str(o.get("ps", "BOTH")),
            order_type=str(o.get("o", "")),
            execution_type=str(o["x"]),
            status=str(o["X"]),
            orig_qty=_d(o, "q"),
            last_qty=_d(o, "l"),
            cum_qty=_d(o, "z"),
            last_price=_d(o, "L"),
            avg_price=_d(o, "ap"),
            commission=_d(o, "n"),
            commission_asset=str(o.get("N") or "USDT"),
            trade_id=int(o.get("t", 0) or 0),
            maker=bool(o.get("m", False)),
            reduce_only=bool(o.get("R", False)),
            realized_pnl=_d(o, "rp"),
        )
    if kind == "ACCOUNT_UPDATE":
        a = raw["a"]
        return AccountUpdate(
            event_time=int(raw["E"]),
            reason=str(a.get("m", "")),
            balances=tuple(BalanceUpdate(str(b["a"]), _d(b, "wb"), _d(b, "cw")) for b in a.get("B", [])),
            positions=tuple(
                PositionUpdate(str(p["s"]), str(p.get("ps", "BOTH")), _d(p, "pa"), _d(p, "ep"), _d(p, "up"))
                for p in a.get("P", [])
            ),
        )
    if kind == "listenKeyExpired":
        return ListenKeyExpired(int(raw.get("E", 0)))
    return None


class _KeyClient(Protocol):
    def futures_stream_get_listen_key(self) -> str: ...
    def futures_stream_keepalive(self, listenKey: str) -> Any: ...


class UserDataStream:
    """Typed user events of one account, for as long as the consumer iterates `events()`.

    `client` is the account's synchronous python-binance client (listen-key calls run in a thread); `ws_url` the
    configured WebSocket base. Reconnects wait `reconnect_s` (doubling, at most 30 s) and keepalives every 30
    minutes of `clock` time, so the clock must really wait (a FakeClock would keep the listen key alive in a loop).
    """

    def __init__(self, client: _KeyClient, ws_url: str, clock: Clock = SYSTEM_CLOCK, reconnect_s: float = 1.0) -> None:
        self._client = client
        self._ws_url = ws_url.rstrip("/")
        self._clock = clock
        self._reconnect_s = reconnect_s
        self.listen_key: str | None = None
        self.connections = 0

    async def _new_key(self) -> str:
        self.listen_key = await asyncio.to_thread(self._client.futures_stream_get_listen_key)
        return self.listen_key

    async def _keepalive(self) -> None:
        while True:
            await self._clock.asleep(KEEPALIVE_S)
            if self.listen_key is None:
                continue
            try:
                await asyncio.to_thread(self._client.futures_stream_keepalive, self.listen_key)
            except Exception as exc:  # an unknown key (-1125) is replaced on the next connect
                log.warning("listen key keepalive failed: %s", exc)
                self.listen_key = None

    async def events(self) -> AsyncIterator[UserEvent]:
        import websockets

        keepalive = asyncio.create_task(self._keepalive())
        delay = self._reconnect_s
        try:
            while True:
                key = self.listen_key or await self._new_key()
                try:
                    async with websockets.connect(f"{self._ws_url}/private/ws?listenKey={key}") as ws:
                        self.connections += 1
                        delay = self._reconnect_s
                        async for message in ws:
                            event = parse_user_event(json.loads(message))
                            if isinstance(event, ListenKeyExpired):
                                self.listen_key = None
                            if event is not None:
                                yield event
                            if self.listen_key is None:
                                break
                except (OSError, websockets.WebSocketException) as exc:
                    log.warning("user stream dropped (%s); reconnecting in %.1f s", exc, delay)
                    await self._clock.asleep(delay)
                    delay = min(30.0, delay * 2)
        finally:
            keepalive.cancel()
