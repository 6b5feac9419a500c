"""Every order request the server received, with what became of it: the view tests use to count duplicates.

Binance offers no such view; the simulator serves it under /admin/orders (loopback only). One entry per order: a
batch of five is five entries. `result` says what the exchange did, whatever the client saw: "placed" (an order
exists, even when a fault then hid the answer), "tested" (order/test passed), "rejected" (a Binance error, `code`),
"fault" (an injected fault refused it before placing, `code`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from simulator.trading.filters import integer_filters

MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class OrderRequest:
    seq: int
    time: int  # server ms when the request arrived
    account: str | None
    endpoint: str
    client_order_id: str | None
    symbol: str | None
    side: str | None
    type: str | None
    quantity: str | None
    result: str  # placed | tested | rejected | fault
    code: int | None  # the Binance error code answered, if any
    http_status: int | None  # None: the connection was dropped without an answer
    order_id: int | None
    fault: str | None  # the injected fault's kind, if one applied

    def view(self) -> dict[str, Any]:
        """The entry as served, in Binance's camelCase."""
        return {_CAMEL.get(k, k): v for k, v in asdict(self).items()}


_CAMEL = {"client_order_id": "clientOrderId", "http_status": "httpStatus", "order_id": "orderId"}
_FILTERS = {"account": "account", "clientOrderId": "client_order_id", "symbol": "symbol", "result": "result"}


class OrderRequestLog:
    """A bounded, thread-safe journal of order requests (the newest MAX_ENTRIES)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: deque[OrderRequest] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self._seq = 0

    def record(
        self,
        *,
        time: int,
        account: str | None,
        endpoint: str,
        order: Mapping[str, str],
        result: str,
        code: int | None,
        http_status: int | None,
        order_id: int | None = None,
        client_order_id: str | None = None,
        fault: str | None = None,
    ) -> None:
        with self._lock:
            self._seq += 1
            self._entries.append(
                OrderRequest(
                    seq=self._seq,
                    time=time,
                    account=account,
                    endpoint=endpoint,
                    client_order_id=client_order_id or order.get("newClientOrderId") or None,
                    symbol=order.get("symbol") or None,
                    side=order.get("side") or None,
                    type=order.get("type") or None,
                    quantity=order.get("quantity") or None,
                    result=result,
                    code=code,
                    http_status=http_status,
                    order_id=order_id,
                    fault=fault,
                )
            )

    def query(self, filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """Entries matching `account`, `clientOrderId`, `symbol`, `result`, with `seq` > `after` and `time` >= `since`.

        Raises ValueError naming a filter that is unknown or not an integer where one is needed."""
        numbers = integer_filters(filters, known=_FILTERS, integers={"after": "a sequence number", "since": "ms"})
        with self._lock:
            entries = list(self._entries)
        chosen = [
            e
            for e in entries
            if all(filters[k] == getattr(e, attr) for k, attr in _FILTERS.items() if k in filters)
            and e.seq > numbers.get("after", 0)
            and e.time >= numbers.get("since", 0)
        ]
        return [e.view() for e in chosen]
