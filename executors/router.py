"""The order router: sends one child order so that it can never be doubled, whatever the network does.

- Every child carries a deterministic `newClientOrderId` (see `client_order_id`) and is journaled PENDING before
  the request leaves; after a timeout, a 5xx (503 "unknown"), -1006 or -1007 the order's fate is unknown, so the
  router asks for it by `origClientOrderId` and never resends.
- -1021 (clock outside recvWindow): the server clock offset is measured again and the request repeated once; the
  exchange refused it, so nothing was placed.
- 429 / 418: wait Retry-After (418 also stops the run when the ban outlasts `max_backoff_s`).
- Before every order, the used weight and order counts from the last response headers are compared with
  exchangeInfo's rateLimits; at 90 % of a limit the router waits for the interval to roll over.
- Other rejections (-2019 margin, -4164 notional, ...) are returned to the caller, who shrinks or skips and reports.
- `place_batch` sends up to 5 children in one request (POST /fapi/v1/batchOrders) with the same guarantees.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from executors.journal import ChildRow, Journal
from executors.planner import ChildOrder
from lsq.clock import Clock
from lsq.exchange import resync_clock
from lsq.exchange.views import OpenOrder, parse_order
from lsq.targets import plain

log = logging.getLogger(__name__)

UNKNOWN_CODES = (-1006, -1007)
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_HEADER_UNIT = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
_UNIT_S = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86_400}


def _b36(n: int, width: int = 0) -> str:
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return (out or "0").rjust(width, "0")


def account_prefix(account_id: str) -> str:
    """`lsq` + 4 base-36 characters of the account's CRC: our orders are recognisable per account."""
    return "lsq" + _b36(zlib.crc32(account_id.encode()) % 36**4, 4)


def client_order_id(account_id: str, window_ms: int, symbol: str, leg: str, seq: int, part: int = 0) -> str:
    """lsqXXXX-WWWW-LSSS-P-SYMBOL: account, window (5-minute index, base 36), leg and slice, part, symbol.

    At most 36 characters from Binance's alphabet `^[.A-Z:/a-z0-9_-]{1,36}$`; a symbol too long to fit is replaced
    by its CRC, so the id stays deterministic.
    """
    head = f"{account_prefix(account_id)}-{_b36(window_ms // 300_000)}-{leg}{_b36(seq, 3)}-{_b36(part)}-"
    room = 36 - len(head)
    name = symbol if len(symbol) <= room else _b36(zlib.crc32(symbol.encode()), 7)
    return head + name


@dataclass(frozen=True)
class SendResult:
    client_id: str
    status: str  # exchange status, or REJECTED / NOT_FOUND (unknown fate, not found after querying)
    order: OpenOrder | None = None
    code: int | None = None
    message: str | None = None

    @property
    def accepted(self) -> bool:
        return self.order is not None


class RouterStopped(RuntimeError):
    """The exchange banned us (418) for longer than we wait: stop sending for this run."""


@dataclass(frozen=True)
class RateLimit:
    header: str  # response header carrying the count used
    limit: int
    interval_s: int


def parse_rate_limits(raw: Sequence[Mapping[str, Any]]) -> list[RateLimit]:
    out = []
    for r in raw:
        kind, unit, num = r.get("rateLimitType"), r.get("interval"), int(r.get("intervalNum", 1))
        if unit not in _HEADER_UNIT:
            continue
        suffix = f"{num}{_HEADER_UNIT[unit]}"
        if kind == "REQUEST_WEIGHT":
            out.append(RateLimit(f"x-mbx-used-weight-{suffix}".lower(), int(r["limit"]), num * _UNIT_S[unit]))
        elif kind == "ORDERS":
            out.append(RateLimit(f"x-mbx-order-count-{suffix}".lower(), int(r["limit"]), num * _UNIT_S[unit]))
    return out


def throttle_delay(headers: Mapping[str, str], limits: Sequence[RateLimit], now_ms: int, share: float = 0.9) -> float:
    """Seconds to wait before the next order so that no limit passes `share` of its allowance."""
    lowered = {k.lower(): v for k, v in headers.items()}
    wait = 0.0
    for limit in limits:
        used = lowered.get(limit.header)
        if used is None or not used.isdigit() or int(used) < share * limit.limit:
            continue
        period_ms = limit.interval_s * 1000
        wait = max(wait, (period_ms - now_ms % period_ms) / 1000 + 0.05)
    return wait


def _retry_after(exc: Any, default: float) -> float:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return float(headers.get("Retry-After", default))
    except (TypeError, ValueError):
        return default


class OrderRouter:
    def __init__(
        self,
        account_id: str,
        client: Any,
        journal: Journal,
        clock: Clock,
        run_id: str,
        window_ms: int,
        rate_limits: Sequence[RateLimit] = (),
        *,
        dual_side: bool = False,
        max_backoff_s: float = 300.0,
        resolve_attempts: int = 6,
    ) -> None:
        self.account_id = account_id
        self.client = client
        self.journal = journal
        self.clock = clock
        self.run_id = run_id
        self.window_ms = window_ms
        self.rate_limits = list(rate_limits)
        self.dual_side = dual_side
        self.max_backoff_s = max_backoff_s
        self.resolve_attempts = resolve_attempts
        self.order_requests = 0
        self.first_ack_ms: int | None = None
        self._headers: Mapping[str, str] = {}

    def _observe(self) -> None:
        response = getattr(self.client, "response", None)
        if response is not None:
            self._headers = dict(response.headers)

    def _params(self, child: ChildOrder, client_id: str) -> dict[str, str]:
        params = {
            "symbol": child.symbol,
            "side": child.side,
            "type": "MARKET" if child.market else "LIMIT",
            "quantity": plain(child.quantity),
            "newClientOrderId": client_id,
            "newOrderRespType": "RESULT",
        }
        if self.dual_side:
            params["positionSide"] = child.position_side
        elif child.reduce_only:
            params["reduceOnly"] = "true"
        if not child.market:
            if child.price_match is not None:
                params["priceMatch"] = child.price_match
            else:
                assert child.price is not None
                params["price"] = plain(child.price)
            params["timeInForce"] = "GTX"  # passive: rests at the touch or is refused, never takes
        return params

    def client_id(self, child: ChildOrder, seq: int) -> str:
        return client_order_id(self.account_id, self.window_ms, child.symbol, child.leg, seq, child.part)

    def _journal_pending(self, child: ChildOrder, seq: int, client_id: str) -> None:
        now = self.clock.now_ms()
        self.journal.add_child(
            ChildRow(
                client_id, self.run_id, self.window_ms, seq, child.symbol, child.position_side, child.leg, child.side,
                "MARKET" if child.market else "LIMIT", child.quantity, child.price, child.reduce_only, "PENDING",
                None, child.quantity * 0, child.quantity * 0, None, now, now,
            )
        )  # fmt: skip

    def _wait_for_allowance(self) -> None:
        wait = throttle_delay(self._headers, self.rate_limits, self.clock.now_ms())
        if wait > 0:
            log.info("order rate near its limit: waiting %.1f s", wait)
            self.clock.sleep(wait)

    def _back_off(self, exc: Any, client_ids: Sequence[str]) -> None:
        """Wait out a 429/418 (the request was refused, nothing placed); a ban longer than we wait stops the run."""
        status = int(exc.status_code)
        delay = _retry_after(exc, 1.0 if status == 429 else 120.0)
        if status == 418 and delay > self.max_backoff_s:
            for client_id in client_ids:
                self.journal.update_child(client_id, "REJECTED", self.clock.now_ms(), error=f"418 ban {delay}s")
            raise RouterStopped(f"IP banned for {delay:.0f} s (418)") from None
        log.warning("HTTP %s: backing off %.1f s", status, delay)
        self.clock.sleep(delay)

    def place(self, child: ChildOrder, seq: int) -> SendResult:
        """Send one child once; the result says what the exchange holds under its client id."""
        from binance.exceptions import BinanceAPIException, BinanceRequestException
        from requests import RequestException

        client_id = self.client_id(child, seq)
        if self.journal.child(client_id) is not None:  # never twice: resolve what the first attempt did
            return self._resolve(child.symbol, client_id)
        self._journal_pending(child, seq, client_id)
        params = self._params(child, client_id)
        resynced = False
        while True:
            self._wait_for_allowance()
            self.order_requests += 1
            try:
                answer = self.client.futures_create_order(**params)
            except BinanceAPIException as exc:
                self._observe()
                status = int(exc.status_code)
                if status in (429, 418):
                    self._back_off(exc, [client_id])
                    continue
                if exc.code == -1021 and not resynced:
                    resync_clock(self.client)
                    resynced = True
                    continue
                if status >= 500 or exc.code in UNKNOWN_CODES:
                    return self._resolve(child.symbol, client_id)
                return self._rejected(client_id, int(exc.code or 0), str(exc.message))
            except (RequestException, BinanceRequestException) as exc:
                log.warning("order %s: %s; querying its fate", client_id, type(exc).__name__)
                return self._resolve(child.symbol, client_id)
            self._observe()
            return self._accepted(client_id, answer)

    def place_batch(self, children: Sequence[ChildOrder], seq: int) -> list[SendResult]:
        """Up to 5 children in one POST /fapi/v1/batchOrders, with the guarantees of `place`: each is journaled
        first, an unknown outcome (timeout, 5xx, -1006/-1007) is resolved by querying each client id."""
        from binance.exceptions import BinanceAPIException, BinanceRequestException
        from requests import RequestException

        if len(children) > 5:
            raise ValueError("a batch holds at most 5 orders")
        results: dict[int, SendResult] = {}
        pending: list[tuple[int, ChildOrder, str]] = []
        for i, child in enumerate(children):
            client_id = self.client_id(child, seq)
            if self.journal.child(client_id) is not None:
                results[i] = self._resolve(child.symbol, client_id)
            else:
                self._journal_pending(child, seq, client_id)
                pending.append((i, child, client_id))
        resynced = False
        while pending:
            self._wait_for_allowance()
            self.order_requests += len(pending)
            batch = [self._params(child, client_id) for _, child, client_id in pending]
            try:
                answer = self.client.futures_place_batch_order(batchOrders=batch)
            except BinanceAPIException as exc:
                self._observe()
                status = int(exc.status_code)
                if status in (429, 418):
                    self._back_off(exc, [c for _, _, c in pending])
                    continue
                if exc.code == -1021 and not resynced:
                    resync_clock(self.client)
                    resynced = True
                    continue
                for i, child, client_id in pending:
                    if status >= 500 or exc.code in UNKNOWN_CODES:
                        results[i] = self._resolve(child.symbol, client_id)
                    else:
                        results[i] = self._rejected(client_id, int(exc.code or 0), str(exc.message))
                break
            except (RequestException, BinanceRequestException) as exc:
                log.warning("batch of %d: %s; querying each order", len(pending), type(exc).__name__)
                for i, child, client_id in pending:
                    results[i] = self._resolve(child.symbol, client_id)
                break
            self._observe()
            for (i, child, client_id), item in zip(pending, answer, strict=True):
                if "orderId" in item:
                    results[i] = self._accepted(client_id, item)
                elif int(item.get("code", 0)) in UNKNOWN_CODES:
                    results[i] = self._resolve(child.symbol, client_id)
                else:
                    results[i] = self._rejected(client_id, int(item.get("code", 0)), str(item.get("msg", "")))
            break
        return [results[i] for i in range(len(children))]

    def _accepted(self, client_id: str, answer: Mapping[str, Any]) -> SendResult:
        order = parse_order(answer)
        self._acked()
        self.journal.update_child(client_id, order.status, self.clock.now_ms(), order=order)
        return SendResult(client_id, order.status, order)

    def _rejected(self, client_id: str, code: int, message: str) -> SendResult:
        self.journal.update_child(client_id, "REJECTED", self.clock.now_ms(), error=f"{code}: {message}")
        return SendResult(client_id, "REJECTED", code=code, message=message)

    def _acked(self) -> None:
        if self.first_ack_ms is None:
            self.first_ack_ms = self.clock.now_ms()

    def query(self, symbol: str, client_id: str) -> OpenOrder | None:
        """The order under `client_id`, or None when the exchange does not know it (-2013)."""
        from binance.exceptions import BinanceAPIException

        try:
            answer = self.client.futures_get_order(symbol=symbol, origClientOrderId=client_id)
        except BinanceAPIException as exc:
            if exc.code == -2013:
                return None
            raise
        finally:
            self._observe()
        return parse_order(answer)

    def _resolve(self, symbol: str, client_id: str) -> SendResult:
        """Ask, with growing pauses, until the exchange says what happened to `client_id`; never resend."""
        from binance.exceptions import BinanceAPIException, BinanceRequestException
        from requests import RequestException

        delay = 0.5
        for _ in range(self.resolve_attempts):
            try:
                order = self.query(symbol, client_id)
            except (BinanceAPIException, RequestException, BinanceRequestException) as exc:
                log.warning("query of %s failed: %s", client_id, exc)
                order = None
                self.clock.sleep(_retry_after(exc, delay))
                delay = min(delay * 2, 8.0)
                continue
            if order is not None:
                self._acked()
                self.journal.update_child(client_id, order.status, self.clock.now_ms(), order=order)
                return SendResult(client_id, order.status, order)
            self.clock.sleep(delay)
            delay = min(delay * 2, 8.0)
        self.journal.update_child(client_id, "NOT_FOUND", self.clock.now_ms(), error="unknown after the request")
        return SendResult(client_id, "NOT_FOUND", message="not found after an unknown outcome")

    def cancel(self, symbol: str, client_id: str) -> OpenOrder | None:
        """Cancel our order; returns its final state (None if the exchange no longer knows it)."""
        from binance.exceptions import BinanceAPIException

        try:
            answer = self.client.futures_cancel_order(symbol=symbol, origClientOrderId=client_id)
            order: OpenOrder | None = parse_order(answer)
        except BinanceAPIException as exc:
            if exc.code != -2011 and exc.code != -2013:
                raise
            order = self.query(symbol, client_id)
        finally:
            self._observe()
        if order is not None and self.journal.child(client_id) is not None:
            self.journal.update_child(client_id, order.status, self.clock.now_ms(), order=order)
        return order
