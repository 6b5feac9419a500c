"""Reconciliation at the start of every run: the exchange is the truth, the journal is brought in line with it.

1. Children the journal left unresolved (PENDING after a crash, NEW, NOT_FOUND after an unknown outcome) are
   looked up by client id.
2. Open orders: ours (our client id prefix) are cancelled, since the new plan supersedes them; others (manual, other
   systems) are left alone and reported.
3. Fills the journal lacks (an order executed more than its journaled fills) are fetched from userTrades, per symbol.
4. Positions are read from positionRisk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from executors.journal import UNRESOLVED, Journal
from executors.planner import Key
from executors.router import OrderRouter, account_prefix
from lsq.exchange.views import OpenOrder, net_positions, parse_fills, parse_orders, parse_positions

log = logging.getLogger(__name__)
USER_TRADES_SPAN_MS = 7 * 24 * 3_600_000 - 60_000
# An order's fills carry the exchange's time, its journal row our clock's: look this far before its creation.
CLOCK_SLACK_MS = 60_000
ZERO = Decimal(0)


@dataclass
class Reconciliation:
    positions: dict[Key, Decimal]
    resolved: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    foreign: list[OpenOrder] = field(default_factory=list)
    new_fills: int = 0


def read_positions(client: Any) -> dict[Key, Decimal]:
    return net_positions(parse_positions(client.futures_position_information()))


def reconcile(client: Any, journal: Journal, router: OrderRouter, now_ms: int, *, dry_run: bool) -> Reconciliation:
    result = Reconciliation({})
    for row in journal.children(statuses=(*UNRESOLVED, "NOT_FOUND")):
        # NOT_FOUND (an unknown outcome the run could not resolve) is asked once more: an order still in flight
        # then has landed; if the exchange still does not know it, it never existed (ABSENT)
        order = router.query(row.symbol, row.client_id)
        if order is None:
            status = "ABSENT" if row.status == "NOT_FOUND" else "NOT_FOUND"
            journal.update_child(row.client_id, status, now_ms, error="unknown to the exchange at reconciliation")
        else:
            journal.update_child(row.client_id, order.status, now_ms, order=order)
        result.resolved.append(row.client_id)
    prefix = account_prefix(router.account_id)
    for order in parse_orders(client.futures_get_open_orders()):
        if not order.client_order_id.startswith(prefix):
            result.foreign.append(order)
        elif not dry_run:
            router.cancel(order.symbol, order.client_order_id)
            result.cancelled.append(order.client_order_id)
    result.new_fills = sync_fills(client, journal, now_ms)
    result.positions = read_positions(client)
    return result


def sync_fills(client: Any, journal: Journal, now_ms: int, symbols: set[str] | None = None) -> int:
    """Store the fills of our orders the journal lacks: per symbol whose orders executed more than their journaled
    fills, since the oldest such order. One request per symbol that needs it, not per symbol traded in the span:
    this runs before every rebalance's first order."""
    span_start = now_ms - USER_TRADES_SPAN_MS
    journaled = journal.filled_qty(span_start - CLOCK_SLACK_MS)
    since: dict[str, int] = {}
    for row in journal.children(since_ms=span_start):
        if row.order_id is None or row.executed_qty == 0 or (symbols is not None and row.symbol not in symbols):
            continue
        if journaled.get((row.symbol, row.order_id), ZERO) < row.executed_qty:
            since[row.symbol] = min(since.get(row.symbol, now_ms), row.created_ms - CLOCK_SLACK_MS)
    added = 0
    for symbol, start in sorted(since.items()):
        start = max(start, span_start)
        while True:
            fills = parse_fills(client.futures_account_trades(symbol=symbol, startTime=start, limit=1000))
            added += journal.add_fills(fills)
            if len(fills) < 1000:
                break
            start = fills[-1].time
    return added
