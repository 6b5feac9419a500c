"""Binance's answers and user-stream events as rows of the account store (monitoring.store): pure, no I/O.

Only the fields the store keeps are read; numbers stay the exchange's strings until the store casts them to
Decimal, so nothing is rounded on the way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from monitoring.metrics import health

ZERO = Decimal(0)


def _d(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else ZERO


def snapshot_row(account: Mapping[str, Any], time_ms: int) -> dict[str, Any]:
    """A futures_account answer (v2 or v3) as one snapshot: equity = wallet + unrealized PnL."""
    wallet, upnl = _d(account["totalWalletBalance"]), _d(account["totalUnrealizedProfit"])
    maint, available = _d(account.get("totalMaintMargin")), _d(account.get("availableBalance"))
    return {
        "time_ms": time_ms,
        "wallet_balance": wallet,
        "unrealized_pnl": upnl,
        "equity": wallet + upnl,
        "available_balance": available,
        "initial_margin": _d(account.get("totalInitialMargin")),
        "maint_margin": maint,
        "margin_ratio": health(wallet, upnl, maint, available).margin_ratio,
    }


def position_rows(
    position_risk: Iterable[Mapping[str, Any]], marks: Mapping[str, Decimal], time_ms: int
) -> list[dict[str, Any]]:
    """positionRisk rows that hold something, then a zero row with its mark for every other symbol in `marks`
    (the targeted ones), so deviation can value a target that is not held yet."""
    rows = []
    for p in position_risk:
        if _d(p.get("positionAmt")) == 0:
            continue
        rows.append(
            {
                "time_ms": time_ms,
                "symbol": p["symbol"],
                "position_side": p.get("positionSide") or "BOTH",
                "position_amt": _d(p["positionAmt"]),
                "entry_price": _d(p.get("entryPrice")),
                "mark_price": _d(p.get("markPrice")),
                "notional": _d(p.get("notional")),
                "unrealized_pnl": _d(p.get("unRealizedProfit")),
                "maint_margin": _d(p.get("maintMargin")),
            }
        )
    held = {r["symbol"] for r in rows}
    for symbol in sorted(set(marks) - held):
        rows.append(
            {
                "time_ms": time_ms,
                "symbol": symbol,
                "position_side": "BOTH",
                "position_amt": ZERO,
                "entry_price": ZERO,
                "mark_price": marks[symbol],
                "notional": ZERO,
                "unrealized_pnl": ZERO,
                "maint_margin": ZERO,
            }
        )
    return rows


def income_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A /fapi/v1/income record."""
    return {
        "tran_id": int(record["tranId"]),
        "time_ms": int(record["time"]),
        "symbol": record.get("symbol") or "",
        "income_type": record["incomeType"],
        "income": record["income"],
        "asset": record.get("asset") or "",
        "info": record.get("info") or "",
        "trade_id": str(record.get("tradeId") or ""),
    }


def fill_row(trade: Mapping[str, Any]) -> dict[str, Any]:
    """A /fapi/v1/userTrades row."""
    return {
        "trade_id": int(trade["id"]),
        "time_ms": int(trade["time"]),
        "symbol": trade["symbol"],
        "order_id": int(trade["orderId"]),
        "side": trade["side"],
        "position_side": trade.get("positionSide") or "BOTH",
        "price": trade["price"],
        "qty": trade["qty"],
        "quote_qty": trade.get("quoteQty") or str(_d(trade["price"]) * _d(trade["qty"])),
        "commission": trade.get("commission") or "0",
        "commission_asset": trade.get("commissionAsset") or "",
        "realized_pnl": trade.get("realizedPnl") or "0",
        "maker": bool(trade.get("maker")),
    }


def fill_from_event(order: Mapping[str, Any]) -> dict[str, Any]:
    """The fill inside an ORDER_TRADE_UPDATE whose execution type is TRADE (`o` of the event)."""
    return {
        "trade_id": int(order["t"]),
        "time_ms": int(order["T"]),
        "symbol": order["s"],
        "order_id": int(order["i"]),
        "side": order["S"],
        "position_side": order.get("ps") or "BOTH",
        "price": order["L"],
        "qty": order["l"],
        "quote_qty": str(_d(order["L"]) * _d(order["l"])),
        "commission": order.get("n") or "0",
        "commission_asset": order.get("N") or "",
        "realized_pnl": order.get("rp") or "0",
        "maker": bool(order.get("m")),
    }


def order_from_event(order: Mapping[str, Any]) -> dict[str, Any]:
    """An ORDER_TRADE_UPDATE (`o` of the event) as a row of the order log."""
    return {
        "time_ms": int(order["T"]),
        "symbol": order["s"],
        "order_id": int(order["i"]),
        "client_order_id": order.get("c") or "",
        "side": order["S"],
        "order_type": order.get("o") or "",
        "exec_type": order.get("x") or "",
        "status": order.get("X") or "",
        "price": order.get("p") or "0",
        "avg_price": order.get("ap") or "0",
        "orig_qty": order.get("q") or "0",
        "filled_qty": order.get("z") or "0",
        "reduce_only": bool(order.get("R")),
    }
