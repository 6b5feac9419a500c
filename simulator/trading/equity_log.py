"""Each account's equity as served: one entry per GET /fapi/v2|v3/account answer (server time, wallet, unrealized
PnL and their sum, the strings the client received). Binance keeps no such history; the simulator serves it under
/admin/equity (loopback only) so an end-to-end run can compare a client's equity curve with the exchange's own
figure at every sample (benchmarks/monitoring_check.py)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from simulator.trading.filters import integer_filters

MAX_ENTRIES = 200_000  # a day of one answer a second for two accounts


class EquityLog:
    """A bounded, thread-safe journal of served account equity (the newest MAX_ENTRIES)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._lock = threading.Lock()

    def record(self, account: str, time: int, wallet: str, upnl: str, equity: str) -> None:
        with self._lock:
            self._entries.append({"account": account, "time": time, "wallet": wallet, "upnl": upnl, "equity": equity})

    def query(self, filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """Entries of `account` (all when absent) with `since` <= time < `until`; ValueError naming a bad filter."""
        bounds = integer_filters(filters, known={"account"}, integers={"since": "ms", "until": "ms"})
        since, until = bounds.get("since"), bounds.get("until")
        with self._lock:
            entries = list(self._entries)
        return [
            e
            for e in entries
            if ("account" not in filters or e["account"] == filters["account"])
            and (since is None or e["time"] >= since)
            and (until is None or e["time"] < until)
        ]
