"""Clients for the exchange. The same python-binance code serves mock (the simulator), testnet and live:
only the base URLs differ, taken from the configuration's `binance.<mode>` section.

`account_client` keeps one signed client per (mode, endpoints, account) for the life of the process, so the
server-clock offset is measured once and every stage reuses the same HTTP session; `resync_clock` re-measures it
after a -1021 answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lsq.clock import Clock
from lsq.config import Account, Endpoints, Mode, Settings

if TYPE_CHECKING:  # python-binance takes 0.4 s to import (dateparser): only where a client is made
    from binance import AsyncClient, BinanceSocketManager, Client


def _credentials(account: Account | None) -> tuple[str | None, str | None]:
    if account is None or not account.has_credentials:
        return None, None
    assert account.api_key is not None and account.api_secret is not None
    return account.api_key.get_secret_value(), account.api_secret.get_secret_value()


def _point(client: Client | AsyncClient, endpoints: Endpoints) -> None:
    base = endpoints.rest_url.rstrip("/")
    client.FUTURES_URL = f"{base}/fapi"
    client.FUTURES_TESTNET_URL = f"{base}/fapi"
    client.FUTURES_DATA_URL = f"{base}/futures/data"


def resync_clock(client: Client) -> int:
    """Measure the server-clock offset again (midpoint of the round trip) and sign with it from now on."""
    sent = time.time() * 1000
    server_ms = client.futures_time()["serverTime"]
    client.timestamp_offset = int(server_ms - (sent + time.time() * 1000) / 2)
    return int(client.timestamp_offset)


def rest_client(settings: Settings, account: Account | None = None, mode: Mode | None = None) -> Client:
    """A synchronous python-binance Client pointed at the configured exchange (no ping to spot on creation).

    A client with credentials signs with the exchange's clock (python-binance's `timestamp_offset`), so a local
    clock that drifts from the server's does not get every signed request refused with -1021.
    """
    key, secret = _credentials(account)
    from binance import Client

    client = Client(key, secret, ping=False)
    _point(client, settings.endpoints(mode))
    if key:
        resync_clock(client)
    return client


_CACHE: dict[tuple[str, str, str], Client] = {}
# Unread stream messages a python-binance socket holds before it gives up; a burst must not end the stream.
STREAM_QUEUE_MESSAGES = 10_000
_CACHE_LOCK = threading.Lock()


def find_account(settings: Settings, account_id: str, mode: Mode | None = None) -> Account:
    """The configured account of the mode, or a ValueError naming the accounts that exist."""
    accounts = settings.execution.accounts_for(mode)
    for account in accounts:
        if account.account_id == account_id:
            return account
    known = ", ".join(a.account_id for a in accounts) or "none"
    raise ValueError(f"no account {account_id!r} in execution.{mode or settings.execution.mode} (configured: {known})")


def account_client(settings: Settings, account_id: str, mode: Mode | None = None) -> Client:
    """The process-wide signed client of one account (created, and its clock offset measured, on first use)."""
    mode = mode or settings.execution.mode
    account = find_account(settings, account_id, mode)
    if not account.has_credentials:
        raise ValueError(f"account {account_id!r} has no credentials in execution.{mode}")
    key = (mode, settings.endpoints(mode).rest_url, account_id)
    with _CACHE_LOCK:
        client = _CACHE.get(key)
        if client is None:
            client = _CACHE[key] = rest_client(settings, account, mode)
        return client


async def async_rest_client(
    settings: Settings, account: Account | None = None, mode: Mode | None = None
) -> AsyncClient:
    """An AsyncClient pointed at the configured exchange, signing with the exchange's clock.

    Built without `create()`, which pings spot endpoints that a futures-only exchange does not serve.
    """
    key, secret = _credentials(account)
    from binance import AsyncClient

    client = AsyncClient(key, secret)
    _point(client, settings.endpoints(mode))
    if key:
        sent = time.time() * 1000
        try:
            server_ms = (await client.futures_time())["serverTime"]
        except BaseException:
            await client.close_connection()
            raise
        client.timestamp_offset = int(server_ms - (sent + time.time() * 1000) / 2)
    return client


def socket_manager(client: AsyncClient, settings: Settings, mode: Mode | None = None) -> BinanceSocketManager:
    """A BinanceSocketManager whose futures streams go to the configured WebSocket base.

    Its sockets queue up to `STREAM_QUEUE_MESSAGES` unread messages: python-binance's default of 100 ends the read
    loop for good (ReadLoopClosed) after a one-second burst of BTCUSDT trades or a short stall of the reader.
    """
    from binance import BinanceSocketManager

    manager = BinanceSocketManager(client, max_queue_size=STREAM_QUEUE_MESSAGES)
    base = settings.endpoints(mode).ws_url.rstrip("/") + "/"
    manager.FSTREAM_URL = base
    manager.FSTREAM_TESTNET_URL = base
    return manager


class RetryingClient:
    """A python-binance client whose calls are retried on answers that say "try again": network errors, 5xx,
    429/418 (after Retry-After) and -1021 (after re-measuring the clock offset).

    Only for calls that are safe to repeat: reads, cancels (a repeated cancel answers -2011, which callers resolve)
    and settings. Order placement is never retried here: `futures_create_order` is the raw method, for the order
    router, which resolves doubt by querying instead.
    """

    NOT_RETRIED = frozenset({"futures_create_order", "futures_place_batch_order"})

    def __init__(self, client: Client, clock: Clock, attempts: int = 6, max_wait_s: float = 30.0) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_clock", clock)
        object.__setattr__(self, "_attempts", attempts)
        object.__setattr__(self, "_max_wait_s", max_wait_s)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._client, name, value)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in self.NOT_RETRIED or not name.startswith("futures_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._retry(attr, *args, **kwargs)

        return call

    def _retry(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from binance.exceptions import BinanceAPIException, BinanceRequestException
        from requests import RequestException

        delay = 0.5
        for attempt in range(self._attempts):
            last = attempt == self._attempts - 1
            try:
                return fn(*args, **kwargs)
            except BinanceAPIException as exc:
                status = int(exc.status_code)
                if last or not (status >= 500 or status in (429, 418) or exc.code == -1021):
                    raise
                if exc.code == -1021:
                    resync_clock(self._client)
                    continue
                headers = getattr(exc.response, "headers", None) or {}
                wait = float(headers.get("Retry-After", delay)) if status in (429, 418) else delay
                if wait > self._max_wait_s:
                    raise
                self._clock.sleep(wait)
            except (RequestException, BinanceRequestException):
                if last:
                    raise
                self._clock.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")
