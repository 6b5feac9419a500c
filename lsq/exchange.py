"""Clients for the exchange. The same python-binance code serves mock (the simulator), testnet and live:
only the base URLs differ, taken from the configuration's `binance.<mode>` section.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

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
        sent = time.time() * 1000
        server_ms = client.futures_time()["serverTime"]
        client.timestamp_offset = int(server_ms - (sent + time.time() * 1000) / 2)
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
    """A BinanceSocketManager whose futures streams go to the configured WebSocket base."""
    from binance import BinanceSocketManager

    manager = BinanceSocketManager(client)
    base = settings.endpoints(mode).ws_url.rstrip("/") + "/"
    manager.FSTREAM_URL = base
    manager.FSTREAM_TESTNET_URL = base
    return manager
