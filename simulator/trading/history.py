"""The account's history as Binance serves it: trades (/userTrades) and income records (/income)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from simulator.errors import BinanceError, mandatory_missing
from simulator.trading import margin as m
from simulator.trading.ledger import Ledger
from simulator.trading.params import INCOME_TYPES, limit_param, parse_int, time_range

Settle = Callable[[], object]


def user_trades(ledger: Ledger, account_id: str, params: Mapping[str, str], settle: Settle) -> list[dict]:
    """GET /fapi/v1/userTrades; `settle` brings the account up to date once the parameters are valid."""
    symbol = params.get("symbol") or ""
    if not symbol:
        raise mandatory_missing("symbol")
    ledger.rules(symbol)
    order_id = parse_int(params, "orderId")
    from_id = parse_int(params, "fromId")
    start, end = time_range(params)
    limit = limit_param(params, 500, 1000)
    settle()
    with ledger.lock:
        chosen = [
            t
            for t in ledger.trades.get(account_id, [])
            if t.symbol == symbol
            and (order_id is None or t.order_id == order_id)
            and (from_id is None or t.id >= from_id)
            and (start is None or t.time >= start)
            and (end is None or t.time <= end)
        ]
    chosen = chosen[:limit] if from_id is not None or start is not None else chosen[-limit:]
    return [
        {
            "buyer": t.side == "BUY",
            "commission": m.fmt(t.commission),
            "commissionAsset": "USDT",
            "id": t.id,
            "maker": t.maker,
            "orderId": t.order_id,
            "price": m.fmt(t.price),
            "qty": m.fmt(t.qty),
            "quoteQty": m.fmt(t.quote_qty),
            "realizedPnl": m.fmt(t.realized_pnl),
            "side": t.side,
            "positionSide": t.position_side,
            "symbol": t.symbol,
            "time": t.time,
        }
        for t in chosen
    ]


def income_history(ledger: Ledger, account_id: str, params: Mapping[str, str], now: int, settle: Settle) -> list[dict]:
    """GET /fapi/v1/income. Without startTime the latest `limit` rows (of the last 7 days when neither bound
    is given, as Binance); with startTime the earliest `limit` rows from it."""
    symbol = params.get("symbol") or None
    kind = params.get("incomeType") or None
    if kind is not None and kind not in INCOME_TYPES:
        raise BinanceError(
            -1130,
            f"Data sent for parameter 'incomeType' is not valid: {kind!r} is not one of {list(INCOME_TYPES)}.",
        )
    start, end = time_range(params)
    limit = limit_param(params, 100, 1000)
    if start is None and end is None:
        start = now - 7 * 24 * 3600 * 1000
        newest = True
    else:
        newest = start is None
    settle()
    with ledger.lock:
        chosen = [
            i
            for i in ledger.income.get(account_id, [])
            if (symbol is None or i.symbol == symbol)
            and (kind is None or i.income_type == kind)
            and (start is None or i.time >= start)
            and (end is None or i.time <= end)
        ]
    chosen = chosen[-limit:] if newest else chosen[:limit]
    return [
        {
            "symbol": i.symbol,
            "incomeType": i.income_type,
            "income": m.fmt(i.income),
            "asset": "USDT",
            "info": i.info or i.income_type,
            "time": i.time,
            "tranId": i.tran_id,
            "tradeId": i.trade_id,
        }
        for i in chosen
    ]
