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

REST_ERROR_STATUSES = (500, 503, 429)
MAX_STREAM_DELAY_MS = 60_000


def unknown_error(status: int) -> BinanceError:
    return BinanceError(-1000, "Unknown error, please check your request or try again later.", status)


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
        }

    def reset(self) -> None:
        self.drop_every_s = None
        self.stream_delay_ms = 0
        self.duplicate_share = 0.0
        self.withheld = {}
        self.rest_error_share = 0.0
        self.rest_error_statuses = REST_ERROR_STATUSES
        self.clock_skew_ms = 0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a JSON body of POST /admin/faults atomically: every key is validated before any takes effect.

        Keys: drop_now (bool), drop_every_s (number|null), stream_delay_ms, duplicate_share, rest_error_share,
        rest_error_statuses ([500, 503, 429]), clock_skew_ms, withhold ({symbol, from_id, to_id} or a list of them).
        """
        if not isinstance(changes, Mapping):
            raise ValueError("the body must be a JSON object")
        unknown = sorted(set(changes) - {*_SETTERS, "drop_now", "withhold"})
        if unknown:
            raise ValueError(
                f"unknown fault setting(s) {unknown}; known: {sorted({*_SETTERS, 'drop_now', 'withhold'})}"
            )
        staged = Faults(clock=Clock(self.clock.skew_ms), withheld={k: list(v) for k, v in self.withheld.items()})
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
_STATE_FIELDS = ("drop_every_s", "stream_delay_ms", "duplicate_share", "rest_error_share", "rest_error_statuses")


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
