"""How REST endpoints are declared, so that the server applies weights, order counts and signing uniformly.

Each stage of the simulator (market data, trading) exposes `endpoints(ctx) -> list[Endpoint]`; `simulator.app`
mounts them behind one middleware that checks rate limits, API keys and signatures, and turns `BinanceError`
into Binance's error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Security(Enum):
    NONE = "NONE"  # public market data
    API_KEY = "API_KEY"  # X-MBX-APIKEY only (listenKey endpoints)
    SIGNED = "SIGNED"  # API key + timestamp + HMAC-SHA256 signature


@dataclass(frozen=True)
class Request:
    """What a handler sees: merged parameters (query string wins over body), the account if authenticated."""

    method: str
    path: str
    params: Mapping[str, str]
    account_id: str | None
    server_time_ms: int


Handler = Callable[[Request], Awaitable[Any]]
Weight = int | Callable[[Mapping[str, str]], int]


@dataclass(frozen=True)
class Endpoint:
    method: str  # GET | POST | PUT | DELETE
    path: str  # e.g. /fapi/v1/order
    handler: Handler  # returns a JSON-serialisable body, or raises simulator.errors.BinanceError
    weight: Weight = 1
    security: Security = Security.NONE
    counts_as_order: bool = False  # counted in X-MBX-ORDER-COUNT-10S / -1M
    order_count: tuple[int, int] = (1, 1)  # what one request adds to the 10 s and 1 min order counts
    quota: str | None = None  # a per-IP request quota of its own (see RateLimits.quota), besides the weight

    def weight_for(self, params: Mapping[str, str]) -> int:
        return self.weight(params) if callable(self.weight) else self.weight
