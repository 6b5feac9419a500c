"""User-data stream payloads, shaped exactly like Binance's ORDER_TRADE_UPDATE and ACCOUNT_UPDATE events."""

from __future__ import annotations

from decimal import Decimal

from simulator.trading.margin import ZERO, break_even_price, fmt
from simulator.trading.state import Order, Position, Trade


def order_trade_update(order: Order, execution: str, now_ms: int, trade: Trade | None = None) -> dict:
    """`execution` is the `x` field: NEW, TRADE, CANCELED or EXPIRED."""
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "o": {
            "s": order.symbol,
            "c": order.client_order_id,
            "S": order.side,
            "o": order.type,
            "f": order.time_in_force,
            "q": fmt(order.orig_qty),
            "p": fmt(order.price),
            "ap": fmt(order.avg_price),
            "sp": "0",
            "x": execution,
            "X": order.status,
            "i": order.order_id,
            "l": fmt(trade.qty if trade else ZERO),
            "z": fmt(order.executed_qty),
            "L": fmt(trade.price if trade else ZERO),
            "N": "USDT",
            "n": fmt(trade.commission if trade else ZERO),
            "T": trade.time if trade else order.update_time,
            "t": trade.id if trade else 0,
            "b": "0",
            "a": "0",
            "m": trade.maker if trade else False,
            "R": order.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": order.type,
            "ps": order.position_side,
            "cp": False,
            "rp": fmt(trade.realized_pnl if trade else ZERO),
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": order.price_match,
            "gtd": 0,
        },
    }


def account_update(
    reason: str,
    wallet: Decimal,
    cross_wallet: Decimal,
    balance_change: Decimal,
    positions: list[tuple[Position, Decimal, bool]],
    now_ms: int,
) -> dict:
    """`positions` holds (position, unrealized PnL, isolated) for every position the change touched."""
    return {
        "e": "ACCOUNT_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "a": {
            "m": reason,
            "B": [{"a": "USDT", "wb": fmt(wallet), "cw": fmt(cross_wallet), "bc": fmt(balance_change)}],
            "P": [
                {
                    "s": p.symbol,
                    "pa": fmt(p.amount),
                    "ep": fmt(p.entry_price),
                    "bep": fmt(break_even_price(p.amount, p.entry_price)),
                    "cr": fmt(p.realized),
                    "up": fmt(upnl),
                    "mt": "isolated" if isolated else "cross",
                    "iw": fmt(p.isolated_wallet),
                    "ps": p.side,
                }
                for p, upnl, isolated in positions
            ],
        },
    }
