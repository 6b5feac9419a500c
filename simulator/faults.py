"""Injected faults, so clients prove they survive what Binance does to them.

One mutable `Faults` object is shared by the REST middleware and the stream hubs; `lsq sim serve` flags set its
initial state and `POST /admin/faults` changes it while the server runs. Randomness is seeded, so a test that asks
for a share of failures gets a reproducible sequence. Drops cut market and user-data connections alike; delay,
duplicates and withheld ids apply to the market streams.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.clock import Clock
from simulator.errors import BinanceError, too_many_requests
from simulator.ratelimit import banned

REST_ERROR_STATUSES = (500, 503, 429)
MAX_STREAM_DELAY_MS = 60_000
MAX_HANG_S = 600.0
# What an order fault does to the next matching order request (POST /fapi/v1/order or /fapi/v1/batchOrders):
ORDER_FAULT_KINDS = {
    "timeout_after_place": "the order is placed, then the request hangs `hang_s` and the connection is dropped",
    "unknown_after_place": "the order is placed, then answered HTTP 503 -1000 'Unknown error'",
    "margin_insufficient": "refused with -2019 before placing",
    "rate_limited": "refused with HTTP 429 -1003 and Retry-After: `retry_after_s`, before placing",
    "banned": "refused with HTTP 418 -1003 and Retry-After: `retry_after_s`, before placing",
}


def unknown_error(status: int) -> BinanceError:
    return BinanceError(-1000, "Unknown error, please check your request or try again later.", status)


@dataclass
class OrderFault:
    """One queued order fault: applies to the next `count` order requests (of `account`, when given)."""

    kind: str
    count: int = 1
    account: str | None = None
    retry_after_s: int = 1
    hang_s: float = 30.0

    @classmethod
    def parse(cls, raw: Any) -> OrderFault:
        if not isinstance(raw, Mapping) or "kind" not in raw:
            raise ValueError("order_faults needs objects {kind, count?, account?, retry_after_s?, hang_s?}")
        unknown = sorted(set(raw) - {"kind", "count", "account", "retry_after_s", "hang_s"})
        if unknown:
            raise ValueError(f"unknown order fault field(s) {unknown}")
        if raw["kind"] not in ORDER_FAULT_KINDS:
            raise ValueError(f"order fault kind must be one of {sorted(ORDER_FAULT_KINDS)}, got {raw['kind']!r}")
        account = raw.get("account")
        if account is not None and not isinstance(account, str):
            raise ValueError(f"order fault account must be a string, got {account!r}")
        fault = cls(
            kind=raw["kind"],
            count=_convert("count", raw.get("count", 1), int),
            account=account,
            retry_after_s=_convert("retry_after_s", raw.get("retry_after_s", 1), int),
            hang_s=_convert("hang_s", raw.get("hang_s", 30.0), float),
        )
        if fault.count < 1:
            raise ValueError(f"order fault count must be at least 1, got {fault.count}")
        if fault.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {fault.retry_after_s}")
        if not 0 <= fault.hang_s <= MAX_HANG_S:
            raise ValueError(f"hang_s must be within 0..{MAX_HANG_S:g}, got {fault.hang_s}")
        return fault

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "account": self.account,
            "retry_after_s": self.retry_after_s,
            "hang_s": self.hang_s,
        }


@dataclass
class Faults:
    """Current fault settings. `clock_skew_ms` lives on the shared Clock, so every component sees it at once."""

    clock: Clock
    seed: int = 0
    drop_every_s: float | None = None
    stream_delay_ms: int = 0
    duplicate_share: float = 0.0
    withheld: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    rest_error_share: float = 0.0
    rest_error_statuses: tuple[int, ...] = REST_ERROR_STATUSES
    order_faults: list[OrderFault] = field(default_factory=list)
    _drop_listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _np_rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._np_rng = np.random.default_rng(self.seed)
        self._validate()

    @property
    def clock_skew_ms(self) -> int:
        return self.clock.skew_ms

    @clock_skew_ms.setter
    def clock_skew_ms(self, value: int) -> None:
        self.clock.skew_ms = int(value)

    def _validate(self) -> None:
        if self.drop_every_s is not None and self.drop_every_s <= 0:
            raise ValueError(f"drop_every_s must be positive or null, got {self.drop_every_s}")
        if not 0 <= self.stream_delay_ms <= MAX_STREAM_DELAY_MS:
            raise ValueError(f"stream_delay_ms must be within 0..{MAX_STREAM_DELAY_MS}, got {self.stream_delay_ms}")
        for name in ("duplicate_share", "rest_error_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        bad = [s for s in self.rest_error_statuses if s not in REST_ERROR_STATUSES]
        if bad or not self.rest_error_statuses:
            raise ValueError(
                f"rest_error_statuses must be a non-empty subset of {list(REST_ERROR_STATUSES)}, got {bad}"
            )
        for symbol, ranges in self.withheld.items():
            for first, last in ranges:
                if first > last:
                    raise ValueError(f"withheld range for {symbol} must have from_id <= to_id, got [{first}, {last}]")

    # -- streams ---------------------------------------------------------------------------------------------------

    def on_drop(self, listener: Callable[[], None]) -> None:
        """Register a hub's `drop_all`; `drop_now()` calls every listener."""
        self._drop_listeners.append(listener)

    def drop_now(self) -> None:
        for listener in self._drop_listeners:
            listener()

    def withhold(self, symbol: str, first_id: int, last_id: int) -> None:
        """Never stream aggTrade ids first_id..last_id (inclusive) of `symbol`; REST still serves them."""
        if first_id > last_id:
            raise ValueError(f"from_id must be <= to_id, got [{first_id}, {last_id}]")
        self.withheld.setdefault(symbol.upper(), []).append((int(first_id), int(last_id)))

    def withheld_mask(self, symbol: str, agg_ids: np.ndarray) -> np.ndarray | None:
        """True for ids to stream, or None when nothing of `symbol` is withheld (the common, free case)."""
        ranges = self.withheld.get(symbol)
        if not ranges:
            return None
        keep = np.ones(len(agg_ids), dtype=bool)
        for first, last in ranges:
            keep &= (agg_ids < first) | (agg_ids > last)
        return keep

    def duplicate_mask(self, n: int) -> np.ndarray | None:
        """True for messages to send twice, or None when duplication is off."""
        if self.duplicate_share <= 0 or n == 0:
            return None
        return self._np_rng.random(n) < self.duplicate_share

    # -- REST ------------------------------------------------------------------------------------------------------

    def rest_fault(self) -> int | None:
        """The HTTP status to fail this REST call with, or None to serve it."""
        if self.rest_error_share <= 0 or self._rng.random() >= self.rest_error_share:
            return None
        return self._rng.choice(self.rest_error_statuses)

    def take_order_fault(self, account_id: str | None) -> OrderFault | None:
        """The queued fault for this order request, if any, counted as used."""
        for fault in self.order_faults:
            if fault.account is None or fault.account == account_id:
                fault.count -= 1
                if fault.count <= 0:
                    self.order_faults.remove(fault)
                return fault
        return None

    # -- admin -----------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "drop_every_s": self.drop_every_s,
            "stream_delay_ms": self.stream_delay_ms,
            "duplicate_share": self.duplicate_share,
            "withheld": [
                {"symbol": s, "from_id": a, "to_id": b}
                for s, ranges in sorted(self.withheld.items())
                for a, b in ranges
            ],
            "rest_error_share": self.rest_error_share,
            "rest_error_statuses": list(self.rest_error_statuses),
            "clock_skew_ms": self.clock_skew_ms,
            "order_faults": [f.state() for f in self.order_faults],
        }

    def reset(self) -> None:
        self.drop_every_s = None
        self.stream_delay_ms = 0
        self.duplicate_share = 0.0
        self.withheld = {}
        self.rest_error_share = 0.0
        self.rest_error_statuses = REST_ERROR_STATUSES
        self.clock_skew_ms = 0
        self.order_faults = []

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a JSON body of POST /admin/faults atomically: every key is validated before any takes effect.

        Keys: drop_now (bool), drop_every_s (number|null), stream_delay_ms, duplicate_share, rest_error_share,
        rest_error_statuses ([500, 503, 429]), clock_skew_ms, withhold ({symbol, from_id, to_id} or a list of them),
        order_faults (a list of {kind, count, account, retry_after_s, hang_s}; replaces the queue; ORDER_FAULT_KINDS).
        """
        if not isinstance(changes, Mapping):
            raise ValueError("the body must be a JSON object")
        unknown = sorted(set(changes) - {*_SETTERS, *_SPECIAL_KEYS})
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted({*_SETTERS, *_SPECIAL_KEYS})}")
        staged = Faults(
            clock=Clock(self.clock.skew_ms, self.clock.base), withheld={k: list(v) for k, v in self.withheld.items()}
        )
        for name in _STATE_FIELDS:
            setattr(staged, name, getattr(self, name))
        for key, convert in _SETTERS.items():
            if key in changes:
                setattr(staged, key, _convert(key, changes[key], convert))
        withhold = changes.get("withhold")
        if withhold is not None:
            for item in withhold if isinstance(withhold, list) else [withhold]:
                if not isinstance(item, Mapping) or not {"symbol", "from_id", "to_id"} <= set(item):
                    raise ValueError("withhold needs objects {symbol, from_id, to_id}")
                staged.withhold(
                    str(item["symbol"]),
                    _convert("from_id", item["from_id"], int),
                    _convert("to_id", item["to_id"], int),
                )
        if "order_faults" in changes:
            queue = changes["order_faults"]
            if not isinstance(queue, list):
                raise ValueError("order_faults must be a list of {kind, count, ...} objects")
            staged.order_faults = [OrderFault.parse(item) for item in queue]
        staged._validate()
        for name in (*_STATE_FIELDS, "withheld"):
            setattr(self, name, getattr(staged, name))
        self.clock_skew_ms = staged.clock_skew_ms
        if changes.get("drop_now"):
            self.drop_now()


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _statuses(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return tuple(int(v) for v in value)


_SETTERS: dict[str, Callable[[Any], Any]] = {
    "drop_every_s": _optional_float,
    "stream_delay_ms": int,
    "duplicate_share": float,
    "rest_error_share": float,
    "rest_error_statuses": _statuses,
    "clock_skew_ms": int,
}
_STATE_FIELDS = (
    "drop_every_s",
    "stream_delay_ms",
    "duplicate_share",
    "rest_error_share",
    "rest_error_statuses",
    "order_faults",
)
_SPECIAL_KEYS = ("drop_now", "withhold", "order_faults")


def _convert(key: str, value: Any, convert: Callable[[Any], Any]) -> Any:
    if isinstance(value, bool) or (isinstance(value, (dict, str)) and convert is not _statuses):
        raise ValueError(f"{key} has the wrong type: {value!r}")
    try:
        converted = convert(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key} has the wrong type or is out of range: {value!r}") from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    return converted


def rest_fault_error(status: int) -> BinanceError:
    """The body Binance answers for an injected failure of this status."""
    return too_many_requests() if status == 429 else unknown_error(status)


def order_fault_error(fault: OrderFault, ip: str, now_ms: int) -> BinanceError | None:
    """The error an order fault answers before placing, or None for the faults that place first."""
    if fault.kind == "margin_insufficient":
        return BinanceError(-2019, "Margin is insufficient.")
    if fault.kind == "rate_limited":
        return too_many_requests()
    if fault.kind == "banned":
        return banned(ip, now_ms + fault.retry_after_s * 1000)
    return None
