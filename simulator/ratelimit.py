"""Binance's REST limits: request weight per IP per minute (429, then 418 bans that double) and orders per account.

Windows are fixed and aligned to the server clock, as Binance's are: `X-MBX-USED-WEIGHT-1M` drops to zero at the start
of every minute. Everything here is a pure state machine fed with `now_ms`, so it is tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from simulator.errors import BinanceError, too_many_requests

MINUTE_MS = 60_000
TEN_SECONDS_MS = 10_000
FUNDING_QUOTA = "funding"  # GET /fapi/v1/fundingRate (and fundingInfo) share 500 requests per 5 min per IP


@dataclass(frozen=True)
class RateLimits:
    """The limits the server enforces and publishes in exchangeInfo `rateLimits`."""

    request_weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    first_ban_ms: int = 2 * MINUTE_MS
    max_ban_ms: int = 3 * 24 * 60 * MINUTE_MS
    # 429s an IP may receive within one window before further requests get it banned (418).
    rejections_before_ban: int = 5
    funding_requests_per_5min: int = 500

    def __post_init__(self) -> None:
        names = ("request_weight_per_minute", "orders_per_10s", "orders_per_minute", "first_ban_ms")
        for name in (*names, "funding_requests_per_5min"):
            if getattr(self, name) < 1:
                raise ValueError(f"rate limit {name} must be at least 1, got {getattr(self, name)}")

    def scaled(self, multiplier: float) -> RateLimits:
        """Limits raised (or lowered) by `multiplier`, for bulk downloads against the simulator."""
        if multiplier <= 0:
            raise ValueError(f"rate limit multiplier must be positive, got {multiplier}")
        return replace(
            self,
            request_weight_per_minute=max(1, round(self.request_weight_per_minute * multiplier)),
            orders_per_10s=max(1, round(self.orders_per_10s * multiplier)),
            orders_per_minute=max(1, round(self.orders_per_minute * multiplier)),
            funding_requests_per_5min=max(1, round(self.funding_requests_per_5min * multiplier)),
        )

    def quota(self, name: str) -> tuple[int, int]:
        """(requests, window ms) of a named per-IP quota."""
        if name == FUNDING_QUOTA:
            return self.funding_requests_per_5min, 5 * MINUTE_MS
        raise KeyError(f"unknown request quota {name!r}")

    def exchange_info(self) -> list[dict[str, object]]:
        """The `rateLimits` array of GET /fapi/v1/exchangeInfo."""
        return [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": self.request_weight_per_minute,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.orders_per_minute},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.orders_per_10s},
        ]


@dataclass
class _IpState:
    window: int = -1
    used: int = 0
    rejections: int = 0
    bans: int = 0
    banned_until_ms: int = 0


@dataclass(frozen=True)
class Admission:
    """The verdict on one request: weight used in the current minute, and the error to answer if refused."""

    used_weight: int
    error: BinanceError | None = None
    retry_after_s: int = 0


def banned(ip: str, until_ms: int) -> BinanceError:
    return BinanceError(
        -1003,
        f"Way too many requests; IP({ip}) banned until {until_ms}. Please use the websocket for live updates to "
        "avoid bans.",
        418,
    )


@dataclass
class WeightLimiter:
    """REQUEST_WEIGHT per IP: over the limit → 429 -1003; still hammering → 418, banned 2 min, doubling per ban."""

    limits: RateLimits
    _ips: dict[str, _IpState] = field(default_factory=dict)

    def admit(self, ip: str, weight: int, now_ms: int) -> Admission:
        state = self._ips.setdefault(ip, _IpState())
        window = now_ms // MINUTE_MS
        if state.window != window:
            state.window, state.used, state.rejections = window, 0, 0
        if state.banned_until_ms > now_ms:
            return Admission(state.used, banned(ip, state.banned_until_ms), _ceil_s(state.banned_until_ms - now_ms))
        state.used += weight
        if state.used <= self.limits.request_weight_per_minute:
            return Admission(state.used)
        state.rejections += 1
        if state.rejections > self.limits.rejections_before_ban:
            ban_ms = min(self.limits.first_ban_ms * 2**state.bans, self.limits.max_ban_ms)
            state.bans += 1
            state.banned_until_ms = now_ms + ban_ms
            return Admission(state.used, banned(ip, state.banned_until_ms), _ceil_s(ban_ms))
        return Admission(state.used, too_many_requests(), _ceil_s((window + 1) * MINUTE_MS - now_ms))

    def used(self, ip: str, now_ms: int) -> int:
        state = self._ips.get(ip)
        return state.used if state is not None and state.window == now_ms // MINUTE_MS else 0


@dataclass
class QuotaLimiter:
    """Per-IP request counts in fixed windows for endpoints with a quota of their own (Binance: fundingRate and
    fundingInfo share 500 requests per 5 minutes per IP, outside the request weight); over it → 429 -1003."""

    limits: RateLimits
    _counts: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def admit(self, quota: str, ip: str, now_ms: int) -> Admission | None:
        """None when admitted, else the refusal (its used_weight field carries the quota's count)."""
        limit, window_ms = self.limits.quota(quota)
        window = now_ms // window_ms
        seen_window, count = self._counts.get((quota, ip), (window, 0))
        count = (count if seen_window == window else 0) + 1
        self._counts[(quota, ip)] = (window, count)
        if count <= limit:
            return None
        return Admission(count, too_many_requests(), _ceil_s((window + 1) * window_ms - now_ms))


@dataclass
class _OrderState:
    window_10s: int = -1
    count_10s: int = 0
    window_1m: int = -1
    count_1m: int = 0


@dataclass(frozen=True)
class OrderAdmission:
    count_10s: int
    count_1m: int
    error: BinanceError | None = None


def too_many_orders(limit: int, interval: str) -> BinanceError:
    return BinanceError(-1015, f"Too many new orders; current limit is {limit} orders per {interval}.", 429)


@dataclass
class OrderCounter:
    """ORDERS per account in 10 s and 1 min windows (X-MBX-ORDER-COUNT-10S / -1M); over either → 429 -1015."""

    limits: RateLimits
    _accounts: dict[str, _OrderState] = field(default_factory=dict)

    def admit(self, account_id: str, now_ms: int, count: tuple[int, int] = (1, 1)) -> OrderAdmission:
        """Count one order request: `count` adds to the 10 s and 1 min windows (a batch counts 5 and 1)."""
        state = self._accounts.setdefault(account_id, _OrderState())
        if state.window_10s != now_ms // TEN_SECONDS_MS:
            state.window_10s, state.count_10s = now_ms // TEN_SECONDS_MS, 0
        if state.window_1m != now_ms // MINUTE_MS:
            state.window_1m, state.count_1m = now_ms // MINUTE_MS, 0
        state.count_10s += count[0]
        state.count_1m += count[1]
        error = None
        if state.count_10s > self.limits.orders_per_10s:
            error = too_many_orders(self.limits.orders_per_10s, "10 SECOND")
        elif state.count_1m > self.limits.orders_per_minute:
            error = too_many_orders(self.limits.orders_per_minute, "1 MINUTE")
        return OrderAdmission(state.count_10s, state.count_1m, error)


def _ceil_s(ms: int) -> int:
    return max(1, -(-ms // 1000))
